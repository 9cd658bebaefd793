#!/bin/sh
# The database roles (docs/operations.md, "Database roles") of one database
# container. The postgres images run /docker-entrypoint-initdb.d/ once, when
# the volume is new, as POSTGRES_USER and before `migrate`: this makes the
# group roles that migrate grants their rights to (ROLE_GROUPS), and the login
# roles f2_pipeline (the pipeline worker, member of PIPELINE_GROUPS) and
# f2_repairer (replay and redrive, member of REPAIR_GROUPS), with the
# passwords of the secrets pipeline_db_password and repair_db_password.
# Safe to run again; for a volume made before it existed, run it once in each:
#   docker compose exec params-db sh /docker-entrypoint-initdb.d/roles.sh
#   docker compose exec timescaledb sh /docker-entrypoint-initdb.d/roles.sh
# The passwords go through stdin, never on a command line.
set -eu

{
    printf '%s\n' "\\set pipeline_pw '$(cat /run/secrets/pipeline_db_password)'"
    printf '%s\n' "\\set repair_pw '$(cat /run/secrets/repair_db_password)'"
    cat <<EOF
SELECT format('CREATE ROLE %I NOLOGIN', r) FROM unnest(string_to_array('$ROLE_GROUPS', ' ')) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['f2_pipeline', 'f2_repairer']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
SELECT format('ALTER ROLE f2_pipeline LOGIN PASSWORD %L', :'pipeline_pw') \gexec
SELECT format('ALTER ROLE f2_repairer LOGIN PASSWORD %L', :'repair_pw') \gexec
GRANT $PIPELINE_GROUPS TO f2_pipeline;
GRANT $REPAIR_GROUPS TO f2_repairer;
EOF
} | psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" >/dev/null

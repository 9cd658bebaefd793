#!/bin/sh
# Creates the secret files of the container stack, once.
#
#   deploy/compose/init-secrets.sh [DIR]     (default: <repo>/var/compose-secrets)
#
# Each missing secret gets 64 random hex characters; existing ones are kept.
# Nothing secret is printed, only file names.
#
# Permissions: folder 0700, files 0600, owned by you. The containers read
# them as root at start (postgres and mosquitto entrypoints, and the f2stream
# image's f2-entrypoint, which hands a private copy to its non-root user).
#
# Then: docker compose up --build   (docker-compose.yml reads this folder;
# F2STREAM_SECRETS_DIR points it elsewhere). The kafka_*_password files are
# the SCRAM logins of the secure variant (docker-compose.secure.yml); the
# plain file does not use them.
set -eu
umask 077

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${1:-"$repo/var/compose-secrets"}

# Keep in step with the top-level `secrets:` of docker-compose.yml and
# docker-compose.secure.yml (tests/deploy/test_compose*.py check both).
NAMES="mqtt_ingest_password mqtt_simulator_password mqtt_dashboard_password params_db_password timeseries_db_password"
NAMES="$NAMES pipeline_db_password repair_db_password grafana_admin_password"
NAMES="$NAMES kafka_admin_password kafka_ingest_password kafka_pipeline_password kafka_tools_password"

mkdir -p "$dir"
chmod 0700 "$dir"

for name in $NAMES; do
    file="$dir/$name"
    if [ -s "$file" ]; then
        echo "kept      $file"
        continue
    fi
    tmp=$(mktemp "$dir/.$name.XXXXXX")
    # hex only: safe in a Mosquitto password file (no ':') and in a DSN.
    head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' > "$tmp"
    chmod 0600 "$tmp"
    mv "$tmp" "$file"
    echo "generated $file"
done

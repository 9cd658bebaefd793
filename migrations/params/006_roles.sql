-- Database roles (docs/operations.md, "Database roles"): group roles without
-- login, each holding the grants of one job; each process logs in as its own
-- role, a member of the groups its jobs need. The owner (who runs migrate)
-- keeps everything else, DDL included.
--   f2_params_reader  reads parameters, templates, versions, the registry and
--                     the silence timeouts: the pipeline's parameter sync and
--                     liveness, replay and redrive
--   f2_params_sync    moves the pipeline's sync cursor (parameter_sync_state)
-- Roles belong to the whole server: each is created only if missing, which
-- takes CREATEROLE (as a managed service's owner role has); without it, an
-- administrator creates them first and this file only grants.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['f2_params_reader', 'f2_params_sync'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another migrate (the other database on the same server) made it meanwhile
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create it: give % CREATEROLE, or have an '
                                'administrator run CREATE ROLE % NOLOGIN; then run migrate again',
                                r, current_user, current_user, r;
        END;
    END LOOP;
END
$$;

GRANT SELECT ON device_parameters, parameter_templates, device_templates, parameter_versions, parameter_sync_state,
    device_registry, device_silence_timeouts, template_silence_timeouts, liveness_config_version
    TO f2_params_reader;
-- The cursor's upsert reads the row it replaces (greatest(...)).
GRANT SELECT, INSERT, UPDATE ON parameter_sync_state TO f2_params_sync;

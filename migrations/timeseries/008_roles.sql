-- Database roles (docs/operations.md, "Database roles"): group roles without
-- login, each holding the grants of one job; each process logs in as its own
-- role, a member of the groups its jobs need. The owner (who runs migrate)
-- keeps everything else: DDL, TRUNCATE, and the aggregate's refresh.
--   f2_sink    the pipeline's sink: inserts measurements (ON CONFLICT DO
--              NOTHING needs no more) and reads them; a large batch goes
--              through a session's temporary table (TEMPORARY)
--   f2_status  the pipeline's liveness writer: device_status (its upsert
--              updates the current row) and device_status_changes
--   f2_reader  reads: the pipeline's web views and /health, verify,
--              dashboards (the hourly aggregate: 009, with TimescaleDB)
--   f2_repair  replay and redrive: correct rows in place (a row the new
--              parameters no longer make is deleted)
-- With TimescaleDB, grants on the hypertable apply to its chunks, and chunks
-- are created as the hypertable's owner: the sink needs no more.
-- Roles belong to the whole server: each is created only if missing, which
-- takes CREATEROLE (as a managed service's owner role has); without it, an
-- administrator creates them first and this file only grants.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['f2_sink', 'f2_status', 'f2_reader', 'f2_repair'] LOOP
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
    -- PUBLIC has TEMPORARY by default; granted too, in case an administrator revoked it.
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO f2_sink', current_database());
END
$$;

GRANT SELECT, INSERT ON iot_measurements TO f2_sink;
GRANT SELECT, INSERT, UPDATE ON device_status TO f2_status;
GRANT SELECT, INSERT ON device_status_changes TO f2_status;
GRANT SELECT ON iot_measurements, device_status, device_status_changes TO f2_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON iot_measurements TO f2_repair;

-- Liveness (docs/architecture.md, "Device liveness"): silence timeouts per
-- device and per parameter template, overriding F2_LIVENESS_TIMEOUT_S, and a
-- version the pipeline workers follow to reload the registry and timeouts
-- live (LISTEN f2stream_liveness, and a poll of the version).
CREATE TABLE IF NOT EXISTS device_silence_timeouts (
    device_id  text PRIMARY KEY CHECK (device_id ~ '^f2-[0-9a-f]{12}$'),
    timeout_s  double precision NOT NULL CHECK (timeout_s > 0 AND timeout_s <= 31 * 86400),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS template_silence_timeouts (
    template   text PRIMARY KEY CHECK (template ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    timeout_s  double precision NOT NULL CHECK (timeout_s > 0 AND timeout_s <= 31 * 86400),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE IF NOT EXISTS liveness_config_version_seq;
CREATE TABLE IF NOT EXISTS liveness_config_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO liveness_config_version (version) VALUES (nextval('liveness_config_version_seq'))
ON CONFLICT (one) DO NOTHING;

CREATE OR REPLACE FUNCTION f2stream_liveness_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE liveness_config_version SET version = nextval('liveness_config_version_seq');
    PERFORM pg_notify('f2stream_liveness', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['device_registry', 'device_templates', 'device_silence_timeouts',
                             'template_silence_timeouts'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_liveness', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION f2stream_liveness_changed()', t || '_liveness', t);
    END LOOP;
END
$$;

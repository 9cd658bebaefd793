-- Alarms (docs/alarms.md): the rules the pipeline evaluates, per fleet,
-- parameter template or device, and the operators' acknowledgements; a
-- version the pipeline workers follow to reload both live (LISTEN
-- f2stream_alarms, and a poll of the version), as for liveness (005).
-- A rule's `definition` is the rule file's item (f2stream.alarm_rules,
-- rule_as_mapping); scope, target, name, kind and severity are its columns
-- too, for the key and for queries. Template membership (device_templates)
-- changes which rules apply to a device, so it bumps the version as well.
CREATE TABLE IF NOT EXISTS alarm_rules (
    scope      text NOT NULL CHECK (scope IN ('fleet', 'template', 'device')),
    target     text NOT NULL DEFAULT '' CHECK ((scope = 'fleet') = (target = '')),
    name       text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    kind       text NOT NULL CHECK (kind IN ('threshold', 'state', 'door_held_open', 'door_forced_open')),
    severity   text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    definition jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, target, name),
    CHECK (scope <> 'device' OR target ~ '^f2-[0-9a-f]{12}$'),
    CHECK (scope <> 'template' OR target ~ '^[a-z0-9][a-z0-9_.-]{0,63}$')
);

-- An acknowledgement is recorded here once per alarm; the worker that owns
-- the device emits the alarm's `acknowledged` transition from it.
CREATE TABLE IF NOT EXISTS alarm_acks (
    seq       bigserial PRIMARY KEY,
    alarm_id  text NOT NULL UNIQUE,
    device_id text NOT NULL CHECK (device_id ~ '^f2-[0-9a-f]{12}$'),
    acked_by  text NOT NULL,
    note      text,
    acked_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE IF NOT EXISTS alarm_config_version_seq;
CREATE TABLE IF NOT EXISTS alarm_config_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO alarm_config_version (version) VALUES (nextval('alarm_config_version_seq'))
ON CONFLICT (one) DO NOTHING;

CREATE OR REPLACE FUNCTION f2stream_alarms_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE alarm_config_version SET version = nextval('alarm_config_version_seq');
    PERFORM pg_notify('f2stream_alarms', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['alarm_rules', 'alarm_acks', 'device_templates'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_alarms', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION f2stream_alarms_changed()', t || '_alarms', t);
    END LOOP;
END
$$;

-- The pipeline's alarm loop reads rules, acknowledgements and the version (f2_params_reader, 006).
GRANT SELECT ON alarm_rules, alarm_acks, alarm_config_version TO f2_params_reader;

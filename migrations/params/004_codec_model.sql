-- The codec model a real controller needs (docs/encodings.md):
-- several data points per component, register layouts in RS-485 frames,
-- per-parameter boolean words, templates shared by many devices, and a
-- version per device that the pipeline's parameter table follows.

-- New columns come after the seed's seven, so its INSERT still works as written.
ALTER TABLE device_parameters
    ADD COLUMN IF NOT EXISTS data_point  text CHECK (data_point ~ '^[A-Za-z0-9_.-]{1,64}$'),
    ADD COLUMN IF NOT EXISTS field       text CHECK (field ~ '^[^\x01-\x1f]{1,64}$'),
    ADD COLUMN IF NOT EXISTS byte_offset integer CHECK (byte_offset BETWEEN 0 AND 250),
    ADD COLUMN IF NOT EXISTS data_type   text CHECK (data_type IN ('int16', 'uint16', 'int32', 'uint32', 'float32')),
    ADD COLUMN IF NOT EXISTS byte_order  text CHECK (byte_order IN ('big', 'little')),
    ADD COLUMN IF NOT EXISTS word_order  text CHECK (word_order IN ('big', 'little')),
    ADD COLUMN IF NOT EXISTS decimals    smallint CHECK (decimals BETWEEN 0 AND 9),
    ADD COLUMN IF NOT EXISTS true_words  text[],
    ADD COLUMN IF NOT EXISTS false_words text[];

ALTER TABLE device_parameters DROP CONSTRAINT IF EXISTS device_parameters_encoding_check;
ALTER TABLE device_parameters ADD CONSTRAINT device_parameters_encoding_check
    CHECK (encoding IN ('boolean', 'boolean_map', 'hex_to_float', 'raw_string', 'number'));

-- One row per data point of a component (NULL data point: the main field's).
DROP INDEX IF EXISTS device_parameters_component_key;
CREATE UNIQUE INDEX IF NOT EXISTS device_parameters_point_key ON device_parameters
    (device_id, mode, component_type, coalesce(component_number, ''), coalesce(data_point, ''));

-- Templates: a device type's parameter set, defined once.
CREATE TABLE IF NOT EXISTS parameter_templates (
    template         text NOT NULL CHECK (template ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    mode             text NOT NULL CHECK (mode IN ('access-control-mode', 'alarm-mode', 'sensor-mode')),
    component_type   text NOT NULL CHECK (component_type IN (
                         'strike', 'door-sensors', 'reader', 'exit-buttons', 'siren', 'motion-sensor', 'sensor')),
    component_number text CHECK (component_number ~ '^[1-9][0-9]?$'),
    encoding         text NOT NULL CHECK (encoding IN ('boolean', 'boolean_map', 'hex_to_float', 'raw_string', 'number')),
    unit             text,
    scale_factor     double precision NOT NULL DEFAULT 1.0,
    data_point       text CHECK (data_point ~ '^[A-Za-z0-9_.-]{1,64}$'),
    field            text CHECK (field ~ '^[^\x01-\x1f]{1,64}$'),
    byte_offset      integer CHECK (byte_offset BETWEEN 0 AND 250),
    data_type        text CHECK (data_type IN ('int16', 'uint16', 'int32', 'uint32', 'float32')),
    byte_order       text CHECK (byte_order IN ('big', 'little')),
    word_order       text CHECK (word_order IN ('big', 'little')),
    decimals         smallint CHECK (decimals BETWEEN 0 AND 9),
    true_words       text[],
    false_words      text[],
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS parameter_templates_point_key ON parameter_templates
    (template, mode, component_type, coalesce(component_number, ''), coalesce(data_point, ''));

-- A device follows at most one template; its own rows override the template's.
CREATE TABLE IF NOT EXISTS device_templates (
    device_id   text PRIMARY KEY CHECK (device_id ~ '^f2-[0-9a-f]{12}$'),
    template    text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS device_templates_template_idx ON device_templates (template);

-- A device's parameter version rises with every change that touches it; the
-- pipeline publishes devices whose version passed its cursor (no full scans).
CREATE SEQUENCE IF NOT EXISTS parameter_version_seq;
CREATE TABLE IF NOT EXISTS parameter_versions (
    device_id text PRIMARY KEY,
    version   bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS parameter_versions_version_idx ON parameter_versions (version);

CREATE TABLE IF NOT EXISTS parameter_sync_state (
    name         text PRIMARY KEY,
    last_version bigint NOT NULL,
    synced_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO parameter_versions (device_id, version)
SELECT DISTINCT device_id, nextval('parameter_version_seq') FROM device_parameters
ON CONFLICT (device_id) DO NOTHING;

CREATE OR REPLACE FUNCTION f2stream_bump_device(device text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO parameter_versions (device_id, version) VALUES (device, nextval('parameter_version_seq'))
    ON CONFLICT (device_id) DO UPDATE SET version = EXCLUDED.version;
$$;

CREATE OR REPLACE FUNCTION f2stream_device_row_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM f2stream_bump_device(OLD.device_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM f2stream_bump_device(NEW.device_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION f2stream_template_row_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE parameter_versions SET version = nextval('parameter_version_seq')
    WHERE device_id IN (
        SELECT device_id FROM device_templates
        WHERE template IN (CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.template END,
                           CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.template END));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION f2stream_all_devices_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE parameter_versions SET version = nextval('parameter_version_seq');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS device_parameters_version ON device_parameters;
CREATE TRIGGER device_parameters_version AFTER INSERT OR UPDATE OR DELETE ON device_parameters
    FOR EACH ROW EXECUTE FUNCTION f2stream_device_row_changed();
DROP TRIGGER IF EXISTS device_parameters_truncate ON device_parameters;
CREATE TRIGGER device_parameters_truncate AFTER TRUNCATE ON device_parameters
    FOR EACH STATEMENT EXECUTE FUNCTION f2stream_all_devices_changed();
DROP TRIGGER IF EXISTS device_templates_version ON device_templates;
CREATE TRIGGER device_templates_version AFTER INSERT OR UPDATE OR DELETE ON device_templates
    FOR EACH ROW EXECUTE FUNCTION f2stream_device_row_changed();
DROP TRIGGER IF EXISTS parameter_templates_version ON parameter_templates;
CREATE TRIGGER parameter_templates_version AFTER INSERT OR UPDATE OR DELETE ON parameter_templates
    FOR EACH ROW EXECUTE FUNCTION f2stream_template_row_changed();

-- One notification per statement wakes the pipeline (see 002).
DROP TRIGGER IF EXISTS device_templates_notify ON device_templates;
CREATE TRIGGER device_templates_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON device_templates
    FOR EACH STATEMENT EXECUTE FUNCTION f2stream_notify_parameters();
DROP TRIGGER IF EXISTS parameter_templates_notify ON parameter_templates;
CREATE TRIGGER parameter_templates_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON parameter_templates
    FOR EACH STATEMENT EXECUTE FUNCTION f2stream_notify_parameters();

-- Device parameters: how each device's components are decoded.
-- The first seven columns are the seed's, in the seed's order, so that its
-- `INSERT INTO device_parameters VALUES (...)` works as written.
CREATE TABLE IF NOT EXISTS device_parameters (
    device_id        text NOT NULL CHECK (device_id ~ '^f2-[0-9a-f]{12}$'),
    mode             text NOT NULL CHECK (mode IN ('access-control-mode', 'alarm-mode', 'sensor-mode')),
    component_type   text NOT NULL CHECK (component_type IN (
                         'strike', 'door-sensors', 'reader', 'exit-buttons', 'siren', 'motion-sensor', 'sensor')),
    component_number text CHECK (component_number ~ '^[1-9][0-9]?$'),
    encoding         text NOT NULL CHECK (encoding IN ('boolean', 'boolean_map', 'hex_to_float', 'raw_string')),
    unit             text,
    scale_factor     double precision NOT NULL DEFAULT 1.0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per component; a NULL component number is the row for all numbers.
CREATE UNIQUE INDEX IF NOT EXISTS device_parameters_component_key
    ON device_parameters (device_id, mode, component_type, coalesce(component_number, ''));

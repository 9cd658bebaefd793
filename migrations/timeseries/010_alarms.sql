-- Alarms in the time-series database (docs/alarms.md): one row per alarm, its
-- current state, and the history of its transitions (one row each). Written
-- from the `alarm_events` topic by the pipeline's alarm loop; a re-delivered
-- transition lands once (the history's primary key), and the alarm's row is
-- made again from its transitions, so that no order of delivery moves it back.
-- The alarm id `<device>:<rule>:<raw partition>:<raw offset>` names the raw
-- record that began the condition.
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id               text PRIMARY KEY,
    device_id              text NOT NULL,
    rule                   text NOT NULL,
    kind                   text NOT NULL,
    severity               text NOT NULL,
    state                  text NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared')),
    data_point             text NOT NULL,
    raised_at              timestamptz NOT NULL,
    acknowledged_at        timestamptz,
    acknowledged_by        text,
    cleared_at             timestamptz,
    value                  double precision,
    text_value             text,
    raised_raw_partition   int,
    raised_raw_offset      bigint,
    cleared_raw_partition  int,
    cleared_raw_offset     bigint,
    reason                 text NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alarms_active ON alarms (raised_at) WHERE state IN ('raised', 'acknowledged');
CREATE INDEX IF NOT EXISTS alarms_device ON alarms (device_id, raised_at DESC);

-- `raised_at` on every transition: a `cleared` delivered before its `raised`
-- still makes a whole alarm row.
CREATE TABLE IF NOT EXISTS alarm_transitions (
    alarm_id         text NOT NULL,
    transition       text NOT NULL CHECK (transition IN ('raised', 'acknowledged', 'cleared')),
    at               timestamptz NOT NULL,
    raised_at        timestamptz NOT NULL,
    device_id        text NOT NULL,
    rule             text NOT NULL,
    kind             text NOT NULL,
    severity         text NOT NULL,
    data_point       text NOT NULL,
    value            double precision,
    text_value       text,
    raw_partition    int NOT NULL,
    raw_offset       bigint NOT NULL,
    reason           text NOT NULL,
    acknowledged_by  text,
    written_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alarm_id, transition)
);
CREATE INDEX IF NOT EXISTS alarm_transitions_at ON alarm_transitions (at);

-- The roles of 008: the pipeline's writer of device_status writes these too (the alarm loop's upsert
-- updates the alarm's row); the readers read them.
GRANT SELECT, INSERT, UPDATE ON alarms TO f2_status;
GRANT SELECT, INSERT ON alarm_transitions TO f2_status;
GRANT SELECT ON alarms, alarm_transitions TO f2_reader;

-- One row per decoded value. The primary key holds the device's time, so a
-- re-delivered message lands once (and TimescaleDB accepts it as a hypertable key).
CREATE TABLE IF NOT EXISTS iot_measurements (
    time         timestamptz      NOT NULL,
    device_id    text             NOT NULL,
    mode         text             NOT NULL,
    connector    smallint         NOT NULL,
    component    text             NOT NULL,
    data_point   text             NOT NULL,
    value        double precision,
    text_value   text,
    unit         text,
    source_topic text             NOT NULL,
    received_at  timestamptz      NOT NULL,
    written_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, mode, connector, component, data_point, time)
);

CREATE INDEX IF NOT EXISTS iot_measurements_time_idx ON iot_measurements (time DESC);

-- f2stream: requires timescaledb
-- Hypertable with daily chunks, compression after 7 days, retention of a year.
-- Compression segments by device and orders by the rest of the primary key,
-- as TimescaleDB requires of a table with a unique index.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('iot_measurements', 'time',
    chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);

ALTER TABLE iot_measurements SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'mode, connector, component, data_point, time DESC'
);

SELECT add_compression_policy('iot_measurements', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('iot_measurements', INTERVAL '365 days', if_not_exists => TRUE);

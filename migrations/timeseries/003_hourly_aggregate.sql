-- f2stream: requires timescaledb
-- f2stream: no-transaction
-- Hourly continuous aggregate per data point; continuous aggregates cannot be
-- created inside a transaction block, hence no-transaction.
CREATE MATERIALIZED VIEW IF NOT EXISTS iot_measurements_hourly
WITH (timescaledb.continuous) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
       device_id, mode, component, data_point,
       count(*)   AS samples,
       avg(value) AS avg_value,
       min(value) AS min_value,
       max(value) AS max_value
FROM iot_measurements
GROUP BY bucket, device_id, mode, component, data_point
WITH NO DATA;

SELECT add_continuous_aggregate_policy('iot_measurements_hourly',
    start_offset => INTERVAL '3 hours', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

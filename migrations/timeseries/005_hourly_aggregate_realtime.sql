-- f2stream: requires timescaledb
-- f2stream: no-transaction
-- The hourly aggregate as users read it. 003 left it materialized-only with a
-- policy over [now - 3 h, now - 1 h]: it showed neither the current hour nor
-- anything older than 3 hours. Now:
-- * real-time: the hours not materialized yet are computed from the raw rows
--   at query time, so the current hour shows;
-- * the policy re-materializes late rows up to 7 days back, where compression
--   starts (older corrections: a manual refresh, see docs/timescaledb.md);
-- * one refresh over the history already in the table.
-- refresh_continuous_aggregate cannot run in a transaction block, hence
-- no-transaction; each statement can run again, so a run stopped half-way
-- resumes on the next migrate.
ALTER MATERIALIZED VIEW iot_measurements_hourly SET (timescaledb.materialized_only = false);

SELECT remove_continuous_aggregate_policy('iot_measurements_hourly', if_exists => TRUE);

-- Before the new policy: the scheduler starts a new policy job at once, and a
-- refresh that meets a running one fails (LockNotAvailable; migrate retries).
CALL refresh_continuous_aggregate('iot_measurements_hourly', NULL, now() - INTERVAL '1 hour');

SELECT add_continuous_aggregate_policy('iot_measurements_hourly',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

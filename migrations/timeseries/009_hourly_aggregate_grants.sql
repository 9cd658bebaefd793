-- f2stream: requires timescaledb
-- The hourly aggregate (003) to its readers (008). TimescaleDB passes a grant
-- on a continuous aggregate on to its materialized hypertable. Refreshing it
-- by hand needs its owner: replay and redrive leave that to its policy
-- (docs/operations.md, "Database roles").
GRANT SELECT ON iot_measurements_hourly TO f2_reader;

-- Provenance: the raw_iot_data record each row was decoded from, so that any
-- value can be traced to the bytes its device sent (`tail raw_iot_data`), and
-- replay can tell the rows of one message. NULL for rows written before.
-- Adding a nullable column without a default is metadata only, on a
-- TimescaleDB hypertable with compressed chunks too.
ALTER TABLE iot_measurements ADD COLUMN IF NOT EXISTS raw_partition integer;
ALTER TABLE iot_measurements ADD COLUMN IF NOT EXISTS raw_offset bigint;

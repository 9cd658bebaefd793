-- Which parameter version decoded each row (NULL for rows written before).
ALTER TABLE iot_measurements ADD COLUMN IF NOT EXISTS param_version bigint;

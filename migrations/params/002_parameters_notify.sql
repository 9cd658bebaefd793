-- Tell the pipeline workers when parameters change: they LISTEN on
-- f2stream_parameters and reload from memory-cheap full reads, so no
-- message ever waits on a per-message lookup.
CREATE OR REPLACE FUNCTION f2stream_notify_parameters() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('f2stream_parameters', TG_OP);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS device_parameters_notify ON device_parameters;
CREATE TRIGGER device_parameters_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON device_parameters
    FOR EACH STATEMENT EXECUTE FUNCTION f2stream_notify_parameters();

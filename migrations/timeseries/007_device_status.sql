-- Liveness in the time-series database, for Grafana: the current state of
-- every device (one row each) and the history of its changes (one row per
-- change). Written from the `device_status` topic by the pipeline's status
-- loop; a re-delivered change lands once (the history's primary key) and
-- never moves the current row back (only a newer change replaces it).
CREATE TABLE IF NOT EXISTS device_status (
    device_id    text PRIMARY KEY,
    state        text NOT NULL CHECK (state IN ('online', 'silent', 'never_seen', 'revoked')),
    since        timestamptz NOT NULL,
    last_seen    timestamptz,
    reason       text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS device_status_state ON device_status (state, device_id);

CREATE TABLE IF NOT EXISTS device_status_changes (
    device_id     text NOT NULL,
    at            timestamptz NOT NULL,
    to_state      text NOT NULL,
    from_state    text,
    last_seen     timestamptz,
    reason        text NOT NULL,
    messages      bigint NOT NULL DEFAULT 0,
    dead_letters  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, at, to_state)
);
CREATE INDEX IF NOT EXISTS device_status_changes_at ON device_status_changes (at);

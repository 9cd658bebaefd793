-- Device registry: one row per device and its current certificate.
-- Written by `faust -A f2stream register-device` / `revoke-device`, listed by
-- `faust -A f2stream devices`. Keys never leave F2_PKI_DIR: only the
-- certificate's serial and fingerprint are recorded here.
CREATE TABLE IF NOT EXISTS device_registry (
    device_id          text PRIMARY KEY CHECK (device_id ~ '^f2-[0-9a-f]{12}$'),
    serial_number      text NOT NULL,
    cert_serial        text NOT NULL UNIQUE CHECK (cert_serial ~ '^[0-9a-f]+$'),
    cert_sha256        text NOT NULL CHECK (cert_sha256 ~ '^[0-9a-f]{64}$'),
    issued_at          timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    revoked_at         timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS device_registry_expires_at ON device_registry (expires_at) WHERE status = 'active';

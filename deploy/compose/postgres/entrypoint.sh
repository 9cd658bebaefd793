#!/bin/sh
# PostgreSQL entrypoint of the SECURE container stack (docker-compose.secure.yml,
# services params-db and timescaledb). Runs as root (the image's default),
# copies the server's certificate and key from the pki volume (owner-only
# files of the f2stream user) and pg_hba.conf to a folder of the server's
# user, key 0600 as PostgreSQL requires, then hands over to the image's own
# docker-entrypoint.sh with the command (`postgres -c ssl=on ...`).
#
#   TLS_CERT_NAME   the certificate's name in the pki volume: services/NAME.crt, NAME.key
set -eu
umask 077

PKI=${PKI_DIR:-/f2stream/pki}
HBA=${HBA_SOURCE:-/f2stream/postgres/pg_hba.conf}
TLS=${TLS_DIR:-/var/lib/postgresql/f2stream-tls}
PG_USER=${PG_USER:-postgres}
NAME=${TLS_CERT_NAME:-}

die() {
    echo "postgres entrypoint: $*" >&2
    exit 1
}

[ -n "$NAME" ] || die "TLS_CERT_NAME is not set (docker-compose.secure.yml sets it)"
for file in "$PKI/services/$NAME.crt" "$PKI/services/$NAME.key" "$HBA"; do
    [ -s "$file" ] || die "missing $file (the pki service issues the certificates: see docker-compose.secure.yml)"
done

mkdir -p "$TLS"
cp "$PKI/services/$NAME.crt" "$TLS/server.crt"
cp "$PKI/services/$NAME.key" "$TLS/server.key"
cp "$HBA" "$TLS/pg_hba.conf"
chown -R "$PG_USER" "$TLS"
chmod 0700 "$TLS"
chmod 0600 "$TLS/server.crt" "$TLS/server.key" "$TLS/pg_hba.conf"

exec docker-entrypoint.sh "$@"

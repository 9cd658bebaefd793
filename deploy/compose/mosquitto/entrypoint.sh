#!/bin/sh
# Mosquitto container entrypoint (docker-compose.yml, service mosquitto).
# Runs as root (the broker drops to user mosquitto itself), builds
# /mosquitto/auth/passwd from the Docker secrets with mosquitto_passwd, then
# execs the broker. Passwords never appear on a command line or in the log.
set -eu
umask 077

SECRETS=${SECRETS_DIR:-/run/secrets}
AUTH=/mosquitto/auth

mkdir -p "$AUTH" /mosquitto/data
chown mosquitto:mosquitto /mosquitto/data

tmp="$AUTH/passwd.new"
: > "$tmp"
# user name            secret file
for pair in \
    "f2-ingest:mqtt_ingest_password" \
    "f2-simulator:mqtt_simulator_password" \
    "f2-dashboard:mqtt_dashboard_password"
do
    user=${pair%%:*}
    file="$SECRETS/${pair#*:}"
    if [ ! -s "$file" ]; then
        echo "mosquitto entrypoint: missing secret $file (run deploy/compose/init-secrets.sh)" >&2
        exit 1
    fi
    # printf is a shell builtin: the password stays off every argv.
    printf '%s:%s\n' "$user" "$(cat "$file")" >> "$tmp"
done
# -U hashes a plain "user:password" file in place.
mosquitto_passwd -U "$tmp"
cp /mosquitto/config/acl "$AUTH/acl.new"
chown mosquitto:mosquitto "$tmp" "$AUTH/acl.new"
chmod 0600 "$tmp" "$AUTH/acl.new"
mv "$tmp" "$AUTH/passwd"
mv "$AUTH/acl.new" "$AUTH/acl"
chown mosquitto:mosquitto "$AUTH"
chmod 0700 "$AUTH"

# Device TLS material from the pki volume (its files are owner-only for the
# f2stream user): a copy the broker's user can read. crl.pem is re-copied and
# the broker (PID 1 after exec) sent SIGHUP whenever it changes.
PKI=/mosquitto/pki
TLS=/mosquitto/tls
if [ -s "$PKI/ca.crt" ]; then
    mkdir -p "$TLS"
    for file in ca.crt server.crt server.key crl.pem; do
        cp "$PKI/$file" "$TLS/$file"
    done
    chown -R mosquitto:mosquitto "$TLS"
    chmod 0700 "$TLS"
    chmod 0600 "$TLS"/*
    (
        while sleep 2; do
            if ! cmp -s "$PKI/crl.pem" "$TLS/crl.pem"; then
                cp "$PKI/crl.pem" "$TLS/crl.pem.new" && chown mosquitto:mosquitto "$TLS/crl.pem.new" &&
                    chmod 0600 "$TLS/crl.pem.new" && mv "$TLS/crl.pem.new" "$TLS/crl.pem" && kill -HUP 1
            fi
        done
    ) &
fi

exec "$@"

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
    "f2-simulator:mqtt_simulator_password"
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

exec "$@"

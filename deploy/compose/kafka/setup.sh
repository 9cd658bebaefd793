#!/bin/sh
# One-shot setup of the secure container stack's Kafka broker
# (docker-compose.secure.yml, service kafka-setup: the apache/kafka image,
# run as root so that it can read the Docker secrets and the pki volume,
# both owner-only). It writes, into the kafka-secure-conf volume, owned by
# the broker's user (appuser), 0600 in a 0700 folder:
#
#   server.properties   deploy/compose/kafka/server.properties, paths filled
#                       in, the replication settings appended
#   broker.pem          the PEM keystore: the broker's key and certificate
#                       (pki volume, services/f2-kafka-broker.*)
#   ca.crt              the project's CA, the truststore
#   client.properties   mTLS as the broker's own certificate (the healthcheck)
#
# and formats the storage once, creating the SCRAM users with their
# passwords from the Docker secrets: kafka-storage.sh reads them from an
# owner-only file (@file), never from its command line, and the file is
# removed at once. Passwords are never printed. A storage formatted before
# keeps its users: change a password with kafka-configs.sh
# (docs/operations.md, "Rotating a credential").
set -eu
umask 077

KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
SECRETS=${SECRETS_DIR:-/run/secrets}
PKI=${PKI_DIR:-/f2stream/pki}
TEMPLATE=${TEMPLATE:-/f2stream/kafka/server.properties}
CONF=${CONF_DIR:-/etc/kafka/f2}
DATA=${DATA_DIR:-/var/lib/kafka/data}
RUN_AS=${RUN_AS:-appuser}
REPLICATION=${REPLICATION_FACTOR:-1}
MIN_ISR=${MIN_INSYNC_REPLICAS:-1}
BROKER_CN=f2-kafka-broker

# SCRAM user name and the secret holding its password. Keep in step with the
# principals of f2stream/kafka_acls.py, super.users in server.properties and
# the services' F2_KAFKA_USERNAME (tests/deploy/test_compose_secure.py).
USERS="f2-kafka-admin:kafka_admin_password f2-ingest:kafka_ingest_password
f2-pipeline:kafka_pipeline_password f2-tools:kafka_tools_password"

die() {
    echo "kafka-setup: $*" >&2
    exit 1
}

[ -n "${CLUSTER_ID:-}" ] || die "CLUSTER_ID is not set (docker-compose.secure.yml sets it)"
for number in "$REPLICATION" "$MIN_ISR"; do
    case $number in
    '' | *[!0-9]* | 0) die "REPLICATION_FACTOR and MIN_INSYNC_REPLICAS must be counts of at least 1, not '$number'" ;;
    esac
done
for file in "$TEMPLATE" "$PKI/ca.crt" "$PKI/services/$BROKER_CN.crt" "$PKI/services/$BROKER_CN.key"; do
    [ -s "$file" ] || die "missing $file (the pki service issues the certificates: see docker-compose.secure.yml)"
done
for pair in $USERS; do
    [ -s "$SECRETS/${pair#*:}" ] || die "missing secret $SECRETS/${pair#*:} (run deploy/compose/init-secrets.sh)"
done

mkdir -p "$CONF"
chmod 0700 "$CONF"

# Each file is written beside its final name, then renamed: a broker that
# starts meanwhile never reads half a file.
cat "$PKI/services/$BROKER_CN.key" "$PKI/services/$BROKER_CN.crt" >"$CONF/.broker.pem.new"
cp "$PKI/ca.crt" "$CONF/.ca.crt.new"
{
    sed -e "s|@CONF_DIR@|$CONF|g" -e "s|@DATA_DIR@|$DATA|g" "$TEMPLATE"
    cat <<EOF

# --- appended by kafka-setup from its environment (F2_KAFKA_REPLICATION_FACTOR,
# F2_KAFKA_MIN_INSYNC_REPLICAS of docker-compose.secure.yml)
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$REPLICATION
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
share.coordinator.state.topic.replication.factor=$REPLICATION
share.coordinator.state.topic.min.isr=$MIN_ISR
EOF
} >"$CONF/.server.properties.new"
cat >"$CONF/.client.properties.new" <<EOF
# mTLS to the BROKER listener (kafka:9094) as f2-kafka-broker: the healthcheck.
security.protocol=SSL
ssl.keystore.type=PEM
ssl.keystore.location=$CONF/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CONF/ca.crt
EOF
for name in broker.pem ca.crt server.properties client.properties; do
    chown "$RUN_AS" "$CONF/.$name.new"
    chmod 0600 "$CONF/.$name.new"
    mv "$CONF/.$name.new" "$CONF/$name"
done
chown "$RUN_AS" "$CONF"

if [ -f "$DATA/meta.properties" ]; then
    echo "kafka-setup: $DATA is formatted already; its SCRAM users were created then"
else
    args=$(mktemp)
    trap 'rm -f "$args"' EXIT
    for pair in $USERS; do
        # printf is a shell builtin: the password stays off every argv.
        printf '%s\nSCRAM-SHA-512=[name=%s,password=%s]\n' --add-scram "${pair%%:*}" "$(cat "$SECRETS/${pair#*:}")" >>"$args"
    done
    echo "kafka-setup: formatting $DATA (cluster id $CLUSTER_ID) with the SCRAM users"
    "$KAFKA_HOME/bin/kafka-storage.sh" format -t "$CLUSTER_ID" -c "$CONF/server.properties" "@$args"
    rm -f "$args"
fi
# Formatted as root: the broker runs as its own user.
chown -R "$RUN_AS" "$DATA"
echo "kafka-setup: $CONF ready for the broker (user $RUN_AS)"

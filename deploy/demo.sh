#!/usr/bin/env bash
# make demo: from a fresh clone to rows arriving in the database.
#
# Starts the local stack, applies the migrations, runs both workers and the
# simulator (demo devices registered with --register-params), and shows rows
# arriving until Ctrl-C (or DEMO_SECONDS, when set). On stop it checks every
# message the broker acknowledged against the database and prints a summary.
# The stack stays up afterwards: `make down` stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
FAUST="$VENV/bin/faust"
DEVICES=${DEMO_DEVICES:-5}
RATE=${DEMO_RATE:-20}
SECONDS_TO_RUN=${DEMO_SECONDS:-0}

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }

deploy/stack.sh up
set -a
# The settings file is written by stack.sh up.
# shellcheck source=/dev/null
. "$(deploy/stack.sh env)"
set +a
LOG=$F2_LOG_DIR
mkdir -p "$LOG" "$F2_VAR_DIR/run"

say "migrating both databases"
"$FAUST" -A f2stream migrate

pids=()
start() { # name, then the command
    local name=$1; shift
    "$@" >>"$LOG/$name.log" 2>&1 &
    pids+=($!)
    echo $! >"$F2_VAR_DIR/run/$name.pid"
    say "$name started (pid $!, log $LOG/$name.log)"
}
# Called through the trap.
# shellcheck disable=SC2317
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -f "$F2_VAR_DIR"/run/{pipeline,ingest,simulator}.pid
}
trap stop_all EXIT

PIPELINE_PORT=${F2_PIPELINE_WEB_PORT:-6066}
INGEST_PORT=${F2_INGEST_WEB_PORT:-6067}
# deploy/prometheus/run.sh scrapes these ports; the pipeline worker probes the ingest worker there.
export F2_PIPELINE_WEB_PORT=$PIPELINE_PORT F2_INGEST_WEB_PORT=$INGEST_PORT
export F2_INGEST_URL=${F2_INGEST_URL:-http://127.0.0.1:$INGEST_PORT}
# On the secure stack (F2_STACK_SECURE=1) each worker logs in to Kafka as its own
# principal (stack.env names them); elsewhere this adds nothing.
principal() { # INGEST or PIPELINE
    local user=F2_KAFKA_${1}_USERNAME file=F2_KAFKA_${1}_PASSWORD_FILE
    if [[ -n ${!user:-} ]]; then printf '%s\n' "F2_KAFKA_USERNAME=${!user}" "F2_KAFKA_PASSWORD_FILE=${!file}"; fi
}
# The pipeline worker logs in to both databases as its own role (stack.env names it; docs/operations.md,
# "Database roles"), never as their owner.
db_login() { # PIPELINE
    local user=F2_DB_${1}_USER file=F2_DB_${1}_PASSWORD_FILE
    if [[ -n ${!user:-} ]]; then
        printf '%s\n' "F2_PARAMS_USER=${!user}" "F2_PARAMS_PASSWORD_FILE=${!file}" \
            "F2_TIMESERIES_USER=${!user}" "F2_TIMESERIES_PASSWORD_FILE=${!file}"
    fi
}
mapfile -t pipeline_login < <(principal PIPELINE; db_login PIPELINE)
mapfile -t ingest_login < <(principal INGEST)
start pipeline env "${pipeline_login[@]}" "$FAUST" -A f2stream worker -l info --web-port "$PIPELINE_PORT"
start ingest env "${ingest_login[@]}" "$FAUST" -A f2stream.ingest worker -l info --web-port "$INGEST_PORT"
for port in "$PIPELINE_PORT" "$INGEST_PORT"; do
    for _ in $(seq 120); do
        curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >/dev/null || {
        say "worker on :$port is not healthy; see $LOG"; exit 1; }
done
say "both workers healthy: http://127.0.0.1:$PIPELINE_PORT/health, http://127.0.0.1:$INGEST_PORT/health, /metrics on both"
say "MQTT over WebSockets (dashboards): ws://127.0.0.1:$F2_MQTT_WS_PORT/mqtt, subprotocol mqtt; read-only account $F2_MQTT_DASHBOARD_USERNAME, password in $F2_MQTT_DASHBOARD_PASSWORD_FILE (it may subscribe to cmnd/#, stat/#, tele/# and publishes nothing)"
if deploy/prometheus/run.sh up; then
    say "Prometheus: $(deploy/prometheus/run.sh url) (graphs: /graph, alerts: /alerts; make down stops it with the stack)"
else
    say "Prometheus did not start (see $LOG/prometheus.log); the demo goes on without it"
fi

manifest="$F2_VAR_DIR/demo-manifest.jsonl"
: >"$manifest"
start simulator "$FAUST" -A f2stream simulate --devices "$DEVICES" --rate "$RATE" --register-params \
    --manifest "$manifest"
sim_pid=${pids[-1]}

psql_ts() {
    PGPASSWORD=$(head -n 1 "$F2_TIMESERIES_PASSWORD_FILE") "$F2_STACK_PG_BIN/psql" "$F2_TIMESERIES_DSN" \
        -X -q -v ON_ERROR_STOP=1 "$@"
}
stopping=0
trap 'stopping=1' INT TERM
say "rows arriving in iot_measurements (Ctrl-C to stop):"
started=$(date +%s)
while ((stopping == 0)); do
    sleep 3 || true
    ((stopping)) && break
    psql_ts -At -c "SELECT 'rows: ' || count(*) || ', devices: ' || count(DISTINCT device_id)
                           || ', newest: ' || coalesce(max(written_at)::text, '-') FROM iot_measurements" || true
    psql_ts -c "SELECT time, device_id, component, data_point, value, text_value, unit
                FROM iot_measurements ORDER BY written_at DESC, time DESC LIMIT 5" || true
    if ((SECONDS_TO_RUN > 0 && $(date +%s) - started >= SECONDS_TO_RUN)); then break; fi
done
trap - INT TERM

say "stopping the simulator, then checking every acknowledged message against the database"
kill "$sim_pid" 2>/dev/null || true
wait "$sim_pid" 2>/dev/null || true
"$FAUST" -A f2stream verify --manifest "$manifest" --timeout-s 30 || status=$?
psql_ts -At -c "SELECT 'rows in iot_measurements: ' || count(*) FROM iot_measurements"
if [[ ${F2_STACK_SECURE:-0} == 1 ]]; then # Debian's kcat cannot log in with SCRAM to Kafka 4 (kcat#462)
    say "dead letters: faust -A f2stream tail iot_dead_letter --from-beginning (kcat cannot log in here)"
else
    say "dead letters so far: $(kcat -b "$(sed 's|kafka://||g; s|;|,|g' <<<"$F2_KAFKA_BROKER")" -C -t iot_dead_letter -e -q -f 'x\n' 2>/dev/null | wc -l)"
fi
say "stopping the workers; the stack and Prometheus stay up (make down stops them, make clean removes var/)"
exit "${status:-0}"

#!/usr/bin/env bash
# What Mosquitto's persistence settings cost, and what a broker crash loses.
#
#   deploy/mosquitto/measure-persistence.sh [messages] [backlog] [only]
#
# (`only`: an extended regular expression; only settings whose name matches.)
#
# For each setting below, a private broker on a free loopback port (its own
# temporary directory, removed afterwards):
#   1. a persistent QoS 1 session (like the ingest worker's) subscribes, and
#      `backlog` messages are queued for a second, offline persistent session,
#      so the persistence file is as large as during an ingest outage; the
#      broker then idles for SAVE_WINDOW_S seconds (default 20), and its CPU
#      time over its saves in that window is the cost of one save at that size;
#   2. `mosquitto_pub -l --nodelay -q 1` sends `messages` lines, and the time
#      until the subscriber has them all gives the throughput; the broker's
#      CPU time and the number of saves come from /proc and its log;
#   3. the subscriber leaves, `messages` more are published for it while it
#      is away (each one PUBACKed to the publisher), the broker is killed
#      with SIGKILL and restarted, and the subscriber counts what survived.
# Keep the figures small: other processes share the machine.
set -euo pipefail

MESSAGES=${1:-20000}
BACKLOG=${2:-0}
ONLY=${3:-}
SAVE_WINDOW_S=${SAVE_WINDOW_S:-20}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
PYTHON=${F2_PYTHON:-$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python}
WORK=$(mktemp -d /tmp/f2-mqtt-persist.XXXXXX)
trap 'kill -9 $(cat "$WORK"/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# name|settings (';' separates lines)
SETTINGS=(
    "autosave_interval 60 (shipped)|autosave_interval 60"
    "autosave_interval 1|autosave_interval 1"
    "autosave_interval 30|autosave_interval 30"
    "on_changes, every 1000|autosave_on_changes true;autosave_interval 1000"
    "on_changes, every 100|autosave_on_changes true;autosave_interval 100"
    "on_changes, every 10|autosave_on_changes true;autosave_interval 10"
)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_broker() {
    "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$WORK/log" 2>&1 &
    echo $! >"$WORK/pid"
    disown # no "Killed" line from the shell when the crash comes
    for _ in $(seq 100); do
        timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "mosquitto did not start:" >&2
    tail "$WORK/log" >&2
    exit 1
}

stop_broker() { # signal
    local pid
    pid=$(cat "$WORK/pid")
    kill "-$1" "$pid"
    while [[ -d /proc/$pid ]]; do sleep 0.05; done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$WORK/pid")/stat"; }

# mosquitto_pub -l (2.0.11) disconnects at the end of its input and drops
# what it has not sent yet (100,000 lines in, about 35,000 out, exit status
# 0), and reads no PUBACK while it waits for input. Where every message must
# be PUBACKed before the next step, paho (from the venv) publishes instead.
PUB_ALL_PY='
import sys
import paho.mqtt.client as mqtt
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.max_inflight_messages_set(1000)
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_start()
lines = [line.rstrip("\n") for line in sys.stdin]
# In chunks: paho refuses a message whose id (16 bits) is still outstanding.
for start in range(0, len(lines), 50000):
    sent = [client.publish(sys.argv[2], line, qos=1) for line in lines[start:start + 50000]]
    for info in sent:
        info.wait_for_publish(60)
        assert info.is_published(), "no PUBACK"
client.disconnect()
client.loop_stop()
'
pub_all() { # count prefix topic: returns once the broker has PUBACKed every message
    lines "$1" "$2" | "$PYTHON" -c "$PUB_ALL_PY" "$PORT" "$3"
}

lines() { # count prefix
    seq "$1" | awk -v p="$2" '{printf "{\"timestamp\":\"2024-01-01 00:00:00.%06d\",\"seq\":\"%s-%d\",\"state\":\"locked\",\"voltage\":12.1,\"current\":1.5}\n", $1 % 1000000, p, $1}'
}

printf '%-32s %10s %10s %8s %12s %10s %14s %10s\n' setting "msg/s" "cpu_ms/1k" saves "db_bytes" "lost/$MESSAGES" \
    "idle_saves/${SAVE_WINDOW_S}s" "ms/save"
for entry in "${SETTINGS[@]}"; do
    name=${entry%%|*}
    [[ -z $ONLY || $name =~ $ONLY ]] || continue
    rm -rf "$WORK/data" "$WORK/log"
    mkdir -p "$WORK/data"
    PORT=$(free_port)
    {
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\n' "$PORT" "$(id -un)"
        printf 'persistence true\npersistence_location %s/data/\n' "$WORK"
        printf 'max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 1000\nset_tcp_nodelay true\n'
        printf 'log_dest stderr\nlog_type error\nlog_type warning\nlog_type information\n'
        tr ';' '\n' <<<"${entry#*|}"
    } >"$WORK/mosquitto.conf"
    start_broker
    sub=(mosquitto_sub -p "$PORT" -q 1 --nodelay -c -i bench-sub -t 'bench/#')
    # Register both persistent sessions, then leave the backlog one offline.
    mosquitto_sub -p "$PORT" -q 1 -c -i bench-backlog -t 'backlog/#' -W 1 >/dev/null 2>&1 || true
    if ((BACKLOG > 0)); then
        pub_all "$BACKLOG" b backlog/x
    fi
    # The save cost alone: nothing else happens while the broker idles.
    idle_saves0=$(grep -c 'Saving in-memory database' "$WORK/log" || true)
    idle_cpu0=$(cpu_ticks)
    sleep "$SAVE_WINDOW_S"
    idle_cpu=$(($(cpu_ticks) - idle_cpu0))
    idle_saves=$(($(grep -c 'Saving in-memory database' "$WORK/log" || true) - idle_saves0))
    "${sub[@]}" -C "$MESSAGES" >/dev/null &
    sub_pid=$!
    sleep 0.5
    saves0=$(grep -c 'Saving in-memory database' "$WORK/log" || true)
    cpu0=$(cpu_ticks)
    t0=$(date +%s.%N)
    rm -f "$WORK/done"
    {
        lines "$MESSAGES" m
        until [[ -e $WORK/done ]]; do sleep 0.05; done
    } | mosquitto_pub -p "$PORT" -q 1 --nodelay -l -t bench/t &
    pub_pid=$!
    wait "$sub_pid"
    t1=$(date +%s.%N)
    touch "$WORK/done"
    wait "$pub_pid"
    cpu1=$(cpu_ticks)
    saves=$(($(grep -c 'Saving in-memory database' "$WORK/log" || true) - saves0))
    db_bytes=$(stat -c %s "$WORK/data/mosquitto.db" 2>/dev/null || echo 0)
    # Crash: queue messages for the absent subscriber, then SIGKILL the broker.
    pub_all "$MESSAGES" c bench/t
    stop_broker KILL
    start_broker
    got=$("${sub[@]}" -W 3 2>/dev/null | grep -c '"c-' || true)
    stop_broker TERM
    awk -v n="$name" -v m="$MESSAGES" -v t0="$t0" -v t1="$t1" -v c="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" \
        -v s="$saves" -v b="$db_bytes" -v g="$got" -v is="$idle_saves" -v ic="$idle_cpu" \
        'BEGIN { printf "%-32s %10.0f %10.1f %8d %12d %10d %14d %10s\n", n, m / (t1 - t0), c * 1000 / hz / (m / 1000), s, b,
                 m - g, is, is ? sprintf("%.0f", ic * 1000 / hz / is) : "-" }'
done

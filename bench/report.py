"""The benchmark's outputs: a Markdown table and a PNG plot from results.json.

Every message rate is shown twice: absolute, and as its share of the C-tool
ceiling of the same run (bench/ceiling.py), when the run measured one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def _p(values: list[float] | None) -> str:
    return " / ".join(f"{v * 1000:.0f}" for v in values) if values else "-"


def one_line(run: dict[str, Any]) -> str:
    """A run in one line, for the console."""
    v = run.get("verify", {})
    return (
        f"bench: {run['path']} offered {run['offered']}: {run.get('msg_per_s')} msg/s, {run.get('rows_per_s')} rows/s, "
        f"receipt-to-commit p50/p95/p99 {_p(run.get('receipt_to_commit_s'))} ms, lag at end {run.get('lag_end')}, "
        f"verify {'ok' if v.get('ok') else v}"
    )


def share(rate: float | None, ceiling: float | None) -> str:
    """`rate` as a share of the C-tool ceiling (`27.3%`); `-` when either is unknown."""
    if rate is None or not ceiling:
        return "-"
    return f"{rate / ceiling:.1%}"


def _ceiling_rate(results: dict[str, Any]) -> float | None:
    rate: float | None = (results.get("ceiling") or {}).get("msg_per_s")
    return rate


def _ratio(run: dict[str, Any], bare: dict[Any, dict[str, Any]]) -> str:
    ceiling = bare.get(run["offered"])
    if not ceiling or not ceiling.get("msg_per_s") or not run.get("msg_per_s"):
        return "-"
    return f"{run['msg_per_s'] / ceiling['msg_per_s']:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    m = results.get("machine", {})
    lines = [
        f"# f2stream benchmark, {results.get('started', '')}",
        "",
        f"Machine: {m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gb')} GB, Python {m.get('python')}, "
        f"kernel {m.get('kernel')}, ulimit -n {m.get('ulimit_n')}; {m.get('co_located')}.",
    ]
    if results.get("options", {}).get("secure"):
        lines.append(
            "Stack: **secure** (F2_STACK_SECURE=1): Kafka over SASL_SSL (SCRAM-SHA-512) with ACLs, each worker as its "
            "own principal; the ingest's MQTT session over TLS with a client certificate; PostgreSQL over TLS "
            "(verify-full); the C tools' relay over TLS too (mosquitto_sub with the ingest's certificate, kcat on the "
            "brokers' mTLS listener)."
        )
    others = results.get("other_processes_at_start") or []
    lines.append(
        "Other test runs or workers at start: " + ("; ".join(others) if others else "none (no contention)") + "."
    )
    top = _ceiling_rate(results)
    lines += _ceiling(results.get("ceiling"))
    lines += [
        "",
        "## End to end and the bare path",
        "",
        "| path | offered msg/s | acked msg/s | share of C ceiling | landed msg/s | share of C ceiling | ratio to bare "
        "| rows/s | receipt→commit p50/p95/p99 ms | device→commit p50/p95/p99 ms | CPU s/1000 msg (all) | lag at end "
        "| verify |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = results.get("runs", [])
    bare = {r["offered"]: r for r in runs if r["path"] == "bare"}
    for r in runs:
        if r["path"] == "generator":
            continue
        v = r.get("verify", {})
        verdict = "ok" if v.get("ok") else f"{v.get('missing')} missing, {v.get('wrong_count')} wrong"
        if r["path"] == "bare":
            verdict = f"{v.get('rows_found')} of {v.get('messages')} rows"
        lines.append(
            f"| {r['path']}{' (sessions ' + str(r['sessions']) + ')' if r.get('sessions') else ''} "
            f"| {r['offered']} | {r.get('publish_rate')} | {share(r.get('publish_rate'), top)} "
            f"| {r.get('msg_per_s')} | {share(r.get('msg_per_s'), top)} "
            f"| {_ratio(r, bare) if r['path'] == 'pipeline' else ''} | {r.get('rows_per_s')} "
            f"| {_p(r.get('receipt_to_commit_s'))} | {_p(r.get('device_to_commit_s'))} "
            f"| {r.get('cpu_per_1000_total')} | {r.get('lag_end')} | {verdict} |"
        )
    lines += ["", "## CPU seconds per 1,000 messages, by process", ""]
    c = results.get("ceiling")
    cpu_rows = ([{"path": "C-tool ceiling", "offered": "max", **c}] if c else []) + runs
    names = sorted({k for r in cpu_rows for k in r.get("cpu_per_1000", {})})
    lines.append("| path | offered | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for r in cpu_rows:
        cpu = r.get("cpu_per_1000", {})
        lines.append(f"| {r['path']} | {r['offered']} | " + " | ".join(str(cpu.get(n, "")) for n in names) + " |")
    lines += ["", "## Workers' memory", ""]
    lines.append(f"- RSS when idle with every device's parameters loaded, MB: {results.get('rss_idle_mb')}")
    lines.append(f"- peak RSS (VmHWM) over all pipeline runs, MB: {results.get('rss_hwm_mb')}")
    for r in runs:
        if r.get("rss_peak_mb"):
            lines.append(f"- {r['path']} {r['offered']}: peak RSS sampled during the run, MB: {r['rss_peak_mb']}")
    lines += _against_c(results)
    lines += _stages(results.get("stages", {}), top)
    lines += _backlog(results.get("backlog"), top)
    generator = [r for r in runs if r["path"] == "generator"]
    if generator:
        g = generator[0]
        lines += [
            "",
            f"Load generator ceiling (saturating, nobody subscribed): {g['msg_per_s']} msg/s acknowledged by "
            f"Mosquitto ({share(g['msg_per_s'], top)} of the C ceiling, which also goes through to Kafka); "
            f"CPU s/1000 msg {g['cpu_per_1000']}.",
        ]
    for worker, summary in (results.get("profile_summaries") or {}).items():
        lines += ["", f"## The {worker} worker at saturation (py-spy)", "", "| where | share of samples |", "|---|---|"]
        for name, part in summary:
            lines.append(f"| {name} | {part:.1%} |")
    return "\n".join(lines) + "\n"


def _ceiling(c: dict[str, Any] | None) -> list[str]:
    lines = ["", "## C-tool ceiling", ""]
    if not c:
        return [*lines, "Not measured in this run (phase `ceiling`): no shares of it below."]
    cpu = c.get("cpu_s", {})
    return [
        *lines,
        f"The ingest worker's job done by Debian's C tools on this run's broker, with the load generator's "
        f"payloads: {c['clients']} × `mosquitto_pub -q 1 --nodelay -l` → Mosquitto → `mosquitto_sub -q 1 --nodelay` | "
        "`kcat -P -X acks=all` → Kafka topic bench_ceiling. Time from the first publish until Kafka's end offsets "
        "hold every message. Every rate below is also given as its share of this.",
        "",
        "| messages | mosquitto_pub clients | seconds | msg/s | CPU s mosquitto_pub / mosquitto_sub / kcat "
        "| CPU s/1000 msg (tools, Mosquitto, Kafka) |",
        "|---|---|---|---|---|---|",
        f"| {c['messages']} | {c['clients']} | {c['seconds']} | {c['msg_per_s']} "
        f"| {cpu.get('mosquitto_pub')} / {cpu.get('mosquitto_sub')} / {cpu.get('kcat')} "
        f"| {c.get('cpu_per_1000_total')} |",
    ]


def _times(value: float | None, base: float | None) -> str:
    return f"{value / base:.1f}x" if value is not None and base else "-"


def _against_c(results: dict[str, Any]) -> list[str]:
    """Each process's CPU per message in the saturated pipeline run as a multiple of the C tools' in the ceiling.

    The relay is what does the ingest worker's job in the ceiling run
    (mosquitto_sub | kcat); the C chain adds the broker and Kafka it loads.
    """
    c = (results.get("ceiling") or {}).get("cpu_per_1000") or {}
    saturated = [r for r in results.get("runs", []) if r["path"] == "pipeline" and r["offered"] == "max"]
    if not c or not saturated:
        return []
    run = saturated[0].get("cpu_per_1000", {})
    relay = c.get("mosquitto_sub", 0) + c.get("kcat", 0)
    chain = relay + c.get("mosquitto", 0) + c.get("kafka", 0)
    ours = sum(v for k, v in run.items() if k != "loadgen")
    rows = [
        ("ingest worker", run.get("ingest"), "the C relay", relay, "5x"),
        ("pipeline worker (decode + sink)", run.get("pipeline"), "the C relay", relay, "5x"),
        ("Kafka", run.get("kafka"), "Kafka in the C run", c.get("kafka"), "3x"),
        ("all processes but the generator", ours, "the C chain (relay, Mosquitto, Kafka)", chain, "6x"),
    ]
    lines = [
        "",
        "## CPU per message against the C tools (saturated pipeline run vs the C-tool ceiling)",
        "",
        "| process | µs CPU per message | against | its µs | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, value, against, base, target in rows:
        shown = "-" if value is None else f"{1000 * value:.1f}"
        lines.append(
            f"| {name} | {shown} | {against} | {1000 * (base or 0):.1f} | {_times(value, base)} | ≤ {target} |"
        )
    return lines


def _stages(stages: dict[str, Any], top: float | None) -> list[str]:
    if not stages:
        return []
    lines = [
        "",
        "## Stages alone",
        "",
        "| stage | records | rows | seconds | records/s | share of C ceiling | rows/s | CPU s/1000 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ingest = stages.get("ingest")
    if ingest:
        lines.append(
            f"| ingest (MQTT→raw_iot_data) | {ingest['messages']} | - | {ingest['seconds']} "
            f"| {ingest['msg_per_s']} | {share(ingest['msg_per_s'], top)} | - | {ingest['cpu_per_1000']} |"
        )
    for name in ("decode", "sink"):
        s = stages.get(name)
        if s:
            lines.append(
                f"| {name} | {s['records']} | {s['rows']} | {s['seconds']} | {s['records_per_s']} "
                f"| {share(s['records_per_s'], top)} | {s['rows_per_s']} | {s['cpu_s_per_1000']} (its process) |"
            )
    return lines


def _backlog(backlog: dict[str, Any] | None, top: float | None) -> list[str]:
    if not backlog:
        return []
    b = backlog
    return [
        "",
        f"Backlog: {b['queued']:,} messages queued for the ingest worker's session while it was down; started "
        f"alone, it moved {b['drained']:,} into raw_iot_data in {b['seconds']} s: {b['msg_per_s']:,} msg/s, "
        f"{share(b['msg_per_s'], top)} of the C ceiling (from the first record; CPU s/1000 msg {b['cpu_per_1000']}).",
    ]


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and latency against offered rate, pipeline and bare path."""
    import matplotlib  # noqa: PLC0415  # only `make bench` plots: a heavy import the rest never needs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  # after use("Agg"), or it looks for a display

    runs = [r for r in results.get("runs", []) if r["path"] in ("pipeline", "bare") and not r.get("sessions")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for path_name, color in (("pipeline", "tab:blue"), ("bare", "tab:gray")):
        paced = [r for r in runs if r["path"] == path_name and r["offered"] != "max" and r.get("msg_per_s")]
        paced = [r for r in paced if r.get("duration_s", 0) < 100] + [r for r in paced if r.get("duration_s", 0) >= 100]
        maxed = [r for r in runs if r["path"] == path_name and r["offered"] == "max" and r.get("msg_per_s")]
        xs = [float(r["offered"]) for r in paced]
        left.plot(xs, [r["msg_per_s"] for r in paced], "o-", color=color, label=f"{path_name}: landed msg/s")
        for r in maxed:
            left.axhline(
                r["msg_per_s"], color=color, linestyle="--", label=f"{path_name} saturated: {r['msg_per_s']:.0f}"
            )
        lat = [(float(r["offered"]), r["receipt_to_commit_s"]) for r in paced if r.get("receipt_to_commit_s")]
        if lat:
            right.plot([x for x, _ in lat], [v[2] * 1000 for _, v in lat], "o-", color=color, label=f"{path_name} p99")
            right.plot([x for x, _ in lat], [v[0] * 1000 for _, v in lat], "x:", color=color, label=f"{path_name} p50")
    top = max([float(r["offered"]) for r in runs if r["offered"] != "max"] or [1])
    left.plot([0, top], [0, top], color="lightgray", linewidth=0.8, label="offered")
    ceiling = _ceiling_rate(results)
    if ceiling:
        left.axhline(ceiling, color="tab:red", linestyle="-.", label=f"C-tool ceiling: {ceiling:.0f}")
        percent = left.secondary_yaxis("right", functions=(lambda y: 100 * y / ceiling, lambda p: p * ceiling / 100))
        percent.set_ylabel("% of the C-tool ceiling (MQTT → Kafka)")
    left.set_xlabel("offered MQTT msg/s")
    left.set_ylabel("messages/s landed in the database")
    left.grid(alpha=0.3)
    right.set_xlabel("offered MQTT msg/s")
    right.set_ylabel("receipt → commit latency, ms")
    right.set_yscale("log")
    right.grid(alpha=0.3)
    for axes in (left, right):
        if axes.get_legend_handles_labels()[0]:  # a run without pipeline or bare runs has no lines
            axes.legend(fontsize=8)
    m = results.get("machine", {})
    fig.suptitle(f"f2stream on {m.get('cores')} cores, everything co-located ({results.get('started', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile_summary(raw: Path) -> list[tuple[str, float]]:
    """py-spy raw (collapsed) stacks to shares by where the innermost frame of a known area is.

    Each sample is charged to the innermost frame whose file belongs to one
    of the areas below (so asyncio's event loop counts only when nothing
    more specific is on top).
    """
    areas = (
        (
            "f2stream: decode",
            ("f2stream/codec/", "f2stream/mqtt_topics.py", "agents/decode.py"),
        ),
        ("f2stream: records/sink", ("f2stream/records.py", "agents/sink.py", "f2stream/storage/timeseries.py")),
        ("f2stream: metrics", ("f2stream/metrics.py",)),
        ("f2stream: other", ("f2stream/", "agents/", "tables/")),
        ("prometheus_client", ("prometheus_client/",)),
        ("aiokafka: producer", ("aiokafka/producer/",)),
        ("aiokafka: consumer/fetcher", ("aiokafka/consumer/",)),
        ("aiokafka: records/protocol", ("aiokafka/record/", "aiokafka/protocol/", "aiokafka/util")),
        ("aiokafka: client/conn", ("aiokafka/",)),
        ("asyncpg", ("asyncpg/",)),
        ("aiomqtt/paho", ("aiomqtt/", "paho/")),
        ("orjson/json", ("orjson", "json/")),
        ("faust/mode", ("faust/", "mode/")),
        ("asyncio", ("asyncio/", "uvloop/")),
        ("python stdlib", ("/lib/python3",)),
    )
    totals: dict[str, int] = {}
    all_samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        all_samples += count
        frames = stack.split(";")
        charged = "other"
        for frame in reversed(frames):
            hit = next((name for name, keys in areas if any(k in frame for k in keys)), None)
            if hit is not None:
                charged = hit
                break
        totals[charged] = totals.get(charged, 0) + count
    return sorted(((k, v / all_samples) for k, v in totals.items()), key=lambda kv: -kv[1]) if all_samples else []


def write(results: dict[str, Any], out: Path) -> None:
    """results.md and results.png beside results.json."""
    profiles = {worker: Path(raw) for worker, raw in (results.get("profiles") or {}).items() if Path(raw).exists()}
    if profiles:
        results["profile_summaries"] = {worker: profile_summary(raw) for worker, raw in profiles.items()}
        (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (out / "results.md").write_text(markdown(results))
    try:
        plot(results, out / "results.png")
    except ImportError:
        sys.stderr.write("bench: matplotlib is missing (pip install -e '.[dev]'): no plot\n")


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    data = orjson.loads((folder / "results.json").read_bytes())
    write(data, folder)
    print((folder / "results.md").read_text())

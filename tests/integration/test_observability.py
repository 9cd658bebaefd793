"""Observability on a private stack: metrics after known traffic, every PromQL expression of the
dashboard and the alert rules against a real Prometheus that scraped the workers and the host's
Node Exporter, and `/health` flipping as each dependency is stopped and recovering when it is back.

The module starts its own stack (the health tests stop services), both
workers and a local Prometheus with its Node Exporter (deploy/prometheus/run.sh,
1 s scrapes, every port free).
Tests run in file order: traffic, PromQL, then the destructive ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from harness import ROOT, Stack, Worker, Workers, publish, wait_parameters
from obs_harness import ControlledStack, as_always_answering, health, promql, scrape, wait_for

from bench.stack import free_ports
from f2stream.simulator import device_ids, register_demo_parameters

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "f2stream.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# Grafana's interval variables, as the test's 1 s scrapes need them.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__interval": "5s", "$__range": "5m"}


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule.get("alert") or rule["record"], rule["expr"]) for g in groups for rule in g["rules"]]


def with_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


# --------------------------------------------------------------------------- static checks


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {name for name, _ in rule_expressions()}
    assert names >= {"F2WorkerDown", "F2ConsumerLagGrowing", "F2DeadLettersRising", "F2NoRowsWritten",
                     "F2DevicesSilent", "F2AlarmCriticalActive"}  # fmt: skip


def test_dashboard_expressions_pass_promtool(tmp_path: Path) -> None:
    # promtool parses PromQL offline only inside a rules file: one recording rule per query.
    records = [
        {"record": f"f2:dashboard_{i}", "expr": with_variables(e)} for i, e in enumerate(dashboard_expressions())
    ]
    rules = {"groups": [{"name": "dashboard", "rules": records}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_a_host_row_from_the_node_exporter() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    (start,) = [i for i in rows if panels[i]["title"].startswith("Host")]
    end = min([i for i in rows if i > start], default=len(panels))
    host = panels[start + 1 : end]
    assert {p["title"].split()[1] for p in host} == {"CPU", "memory", "disk", "network"}
    for panel in host:  # the expressions themselves are checked against Prometheus below
        for target in panel["targets"]:
            assert 'job="node"' in target["expr"], target["expr"]


def test_dashboard_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]


# --------------------------------------------------------------------------- fixtures


class Observed:
    """The private stack, its workers and its Prometheus."""

    def __init__(self, control: ControlledStack, stack: Stack, workers: Workers, prometheus_port: int) -> None:
        self.control, self.stack, self.workers, self.prometheus_port = control, stack, workers, prometheus_port


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    var_dir = Path(tempfile.mkdtemp(prefix="f2stream-obs-"))
    var_dir.chmod(0o755)  # the postgres user must reach its data dir below
    control = ControlledStack(var_dir)
    workers: Workers | None = None
    try:
        stack = control.up()
        migrate = stack.faust("migrate")
        assert migrate.returncode == 0, migrate.stderr
        pipeline_port, ingest_port, prometheus_port, node_exporter_port = free_ports(4)
        workers = Workers(
            pipeline=Worker(stack, "f2stream", pipeline_port, "pipeline"),
            ingest=Worker(stack, "f2stream.ingest", ingest_port, "ingest"),
        )
        workers.pipeline.start()
        workers.ingest.start()
        workers.pipeline.wait_healthy()
        workers.ingest.wait_healthy()
        started = control.prometheus(
            "up",
            F2_PROMETHEUS_PORT=str(prometheus_port),
            F2_PIPELINE_WEB_PORT=str(pipeline_port),
            F2_INGEST_WEB_PORT=str(ingest_port),
            F2_NODE_EXPORTER_PORT=str(node_exporter_port),
            F2_PROMETHEUS_SCRAPE_INTERVAL="1s",
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield Observed(control, stack, workers, prometheus_port)
    finally:
        control.prometheus("down")
        if workers is not None:
            workers.ingest.stop()
            workers.pipeline.stop()
        control.down()
        shutil.rmtree(var_dir, ignore_errors=True)


# --------------------------------------------------------------------------- metrics


def stamp(offset_s: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=offset_s)).strftime("%Y-%m-%d %H:%M:%S.%f")


GOOD, BAD_JSON, UNKNOWN = 6, 2, 1


async def test_counters_hold_the_known_numbers_after_known_traffic(observed: Observed) -> None:
    stack, workers = observed.stack, observed.workers
    device, other = device_ids(2, 9000)
    await register_demo_parameters(stack.settings, [device])
    await wait_parameters(stack, workers.pipeline, device)
    strike = f"stat/{device}/access-control-mode/1/strike-1"
    messages = [
        (strike, orjson.dumps({"timestamp": stamp(i + 1), "state": "locked", "voltage": 12.0, "current": 1.5}))
        for i in range(GOOD)
    ]
    messages += [(f"stat/{device}/access-control-mode/1/door-sensors", b"{not json")] * BAD_JSON
    messages += [(f"tele/{other}/access-control-mode/2/reader-1", orjson.dumps({"timestamp": stamp(0)}))] * UNKNOWN
    await publish(stack, messages)

    rows = GOOD * 3  # state, voltage, current
    pipeline = wait_for(
        lambda: (
            (m := scrape(workers.pipeline.web_port)).get("f2_rows_written_total", 0) >= rows
            and m.get('f2_dead_letters_total{reason="bad_json"}', 0) >= BAD_JSON
            and m.get('f2_dead_letters_total{reason="unknown_device"}', 0) >= UNKNOWN
            and m
        ),
        30,
        "the rows and dead letters in the pipeline's metrics",
    )
    ingest = scrape(workers.ingest.web_port)
    assert ingest['f2_mqtt_messages_received_total{type="stat"}'] == GOOD + BAD_JSON
    assert ingest['f2_mqtt_messages_received_total{type="tele"}'] == UNKNOWN
    assert ingest["f2_raw_messages_produced_total"] == GOOD + BAD_JSON + UNKNOWN
    assert ingest["f2_mqtt_connected"] == 1
    assert ingest["f2_mqtt_reconnects_total"] == 0
    assert ingest["f2_devices_seen"] == 2
    assert pipeline["f2_messages_decoded_total"] == GOOD
    assert pipeline["f2_measurements_decoded_total"] == rows
    assert pipeline['f2_dead_letters_total{reason="bad_json"}'] == BAD_JSON
    assert pipeline['f2_dead_letters_total{reason="unknown_device"}'] == UNKNOWN
    assert pipeline["f2_rows_written_total"] == rows
    assert pipeline["f2_rows_duplicate_total"] == 0
    assert pipeline["f2_sink_batch_rows_sum"] == rows
    assert pipeline['f2_measurements_committed_total{component_type="strike"}'] == rows
    assert pipeline['f2_measurement_value_mean{component_type="strike",data_point="voltage"}'] == 12.0
    assert pipeline["f2_devices_seen"] == 1
    assert pipeline["f2_parameters"] > 0
    assert pipeline["f2_parameters_last_sync_timestamp_seconds"] > 0
    latency = pipeline["f2_device_to_commit_latency_seconds_count"]
    assert 1 <= latency <= rows
    # device times were 1..6 s old, receipt about now: both bounded, device time the older
    assert pipeline["f2_device_to_commit_latency_seconds_sum"] / latency < 30
    assert pipeline["f2_receipt_to_commit_latency_seconds_sum"] <= pipeline["f2_device_to_commit_latency_seconds_sum"]
    lag = {k: v for k, v in pipeline.items() if k.startswith("f2_consumer_lag_messages{")}
    assert len(lag) == 2 * stack.settings.topic_partitions  # raw and decoded, every partition
    assert sum(lag.values()) == 0
    assert not any("device_id" in k or device in k for k in [*pipeline, *ingest])


# --------------------------------------------------------------------------- PromQL against a real Prometheus


def test_every_dashboard_and_rule_expression_returns_data(observed: Observed) -> None:
    port = observed.prometheus_port
    # rates need two scrapes after the traffic; the lag gauge needs one of the pipeline
    wait_for(lambda: promql(port, "count(up == 1) == 3")["data"]["result"], 30, "both workers and the node exporter up")
    wait_for(
        lambda: promql(port, "max(f2_rows_written_total) > 0 and min(count_over_time(up[15s])) >= 3")["data"]["result"],
        30,
        "three scrapes of both workers, the rows among them",
    )
    targets = promql(port, "up")["data"]["result"]
    assert {t["metric"]["job"]: t["value"][1] for t in targets} == {
        "f2stream-pipeline": "1",
        "f2stream-ingest": "1",
        "node": "1",
    }
    empty = []
    for name, expr in [("dashboard", with_variables(e)) for e in dashboard_expressions()] + [
        (name, as_always_answering(e)) for name, e in rule_expressions()
    ]:
        answer = promql(port, expr)
        assert answer["status"] == "success", f"{name}: {expr}: {answer}"
        if not answer["data"]["result"]:
            empty.append(f"{name}: {expr}")
    assert not empty, "expressions without data:\n" + "\n".join(empty)
    assert promql(port, "ALERTS")["data"]["result"] == []  # nothing fires on a healthy pipeline


def test_replay_counters_reach_prometheus_through_the_node_exporter(observed: Observed) -> None:
    """replay leaves its totals for the textfile collector; the node job carries them to Prometheus."""
    port = observed.prometheus_port
    run = observed.stack.faust("replay", "--since", "1h")
    assert run.returncode == 0, run.stderr[-2000:]
    answer = wait_for(
        lambda: promql(port, 'f2_replay_messages_total{job="node", outcome="unchanged"} > 0')["data"]["result"],
        30,
        "the replay's counters scraped from the node exporter",
    )
    assert float(answer[0]["value"][1]) == GOOD  # the good messages of the traffic above, each compared once
    assert promql(port, 'f2_replay_last_run_timestamp_seconds{job="node"}')["data"]["result"]


# --------------------------------------------------------------------------- health


def entry(answer: tuple[int, dict[str, Any]], name: str) -> tuple[int, str, str]:
    status, body = answer
    return status, body["status"], body["checks"][name]["status"]


def wait_health(worker: Worker, check: str, expected: tuple[int, str, str], timeout_s: float, what: str) -> None:
    """Wait for `check`'s entry of the worker's /health; a timeout names the checks not ok and ends with its log."""
    last: list[dict[str, Any]] = [{}]

    def reached() -> bool:
        answer = health(worker.web_port)
        last[0] = answer[1]
        return entry(answer, check) == expected

    try:
        wait_for(reached, timeout_s, what)
    except AssertionError as exc:
        not_ok = {name: c for name, c in last[0].get("checks", {}).items() if c["status"] != "ok"}
        raise AssertionError(f"{exc}; checks not ok at the end: {json.dumps(not_ok)}\n{worker.log_tail()}") from None


@pytest.mark.parametrize(
    ("service", "worker", "check", "expected"),
    [
        ("pg-params", "pipeline", "parameters", (200, "degraded", "degraded")),
        ("pg-timeseries", "pipeline", "timeseries", (503, "failing", "failing")),
        ("mosquitto", "ingest", "mqtt", (503, "failing", "failing")),
        ("kafka", "pipeline", "kafka", (503, "failing", "failing")),
    ],
)
def test_health_flips_when_a_dependency_stops_and_recovers(
    observed: Observed, service: str, worker: str, check: str, expected: tuple[int, str, str]
) -> None:
    watched: Worker = getattr(observed.workers, worker)
    port = watched.web_port
    wait_health(watched, check, (200, "ok", "ok"), 90, f"{worker} healthy before stopping {service}")
    observed.control.stop(service)
    try:
        wait_health(watched, check, expected, 30, f"{check} of {worker} to show {expected}")
        if service == "kafka":  # the ingest worker needs Kafka too
            wait_health(observed.workers.ingest, "kafka", expected, 30, "ingest's kafka entry to fail")
        body = json.dumps(health(port)[1])
        assert "password" not in body.lower() and "postgresql://" not in body
    finally:
        observed.control.up()
    wait_health(watched, check, (200, "ok", "ok"), 90, f"{worker} to recover after {service}")
    # /livez stays cheap and answers throughout
    assert health(port)[0] == 200

"""`/health/{service}` on the pipeline worker: every service of the running system; a stopped one fails alone."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

from harness import ROOT, Stack, Workers, wait_until

SERVICES = {
    "kafka", "mosquitto", "mosquitto-tls", "mosquitto-websockets", "postgres-params", "postgres-timeseries",
    "pipeline", "ingest",
}  # fmt: skip


def get(workers: Workers, path: str) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{workers.pipeline.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def table(workers: Workers) -> subprocess.CompletedProcess[str]:
    """What `make health` prints (deploy/health-table.py against this worker)."""
    url = f"http://127.0.0.1:{workers.pipeline.web_port}/health"
    command = [sys.executable, str(ROOT / "deploy" / "health-table.py"), url]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def statuses(workers: Workers) -> dict[str, str]:
    _, body = get(workers, "/health")
    services = body["services"]
    assert isinstance(services, dict)
    return {name: entry["status"] for name, entry in services.items()}


async def test_every_service_has_a_page_and_a_stopped_one_fails_alone(stack: Stack, workers: Workers) -> None:
    up = await wait_until(
        lambda: (s := statuses(workers)) and all(v == "ok" for v in s.values()) and s, 60,
        "every service ok", seen=lambda: statuses(workers),
    )  # fmt: skip
    assert set(up) == SERVICES
    for service in SERVICES:
        code, body = get(workers, f"/health/{service}")
        assert (code, body["service"], body["status"]) == (200, service, "ok"), body
    printed = table(workers)
    assert printed.returncode == 0, printed.stdout + printed.stderr
    lines = {line.split()[0]: line.split()[1] for line in printed.stdout.splitlines()[1:]}
    assert {name: lines[name] for name in SERVICES} == dict.fromkeys(SERVICES, "ok"), printed.stdout
    code, body = get(workers, "/health/nonesuch")
    assert code == 404 and "postgres-params" in str(body["error"]), body

    stack.pg_ctl("params", "stop")
    try:
        down = await wait_until(
            lambda: (s := statuses(workers))["postgres-params"] == "failing" and s, 30,
            "postgres-params failing", seen=lambda: statuses(workers),
        )  # fmt: skip
        assert {name for name, status in down.items() if status == "failing"} == {"postgres-params"}, down
        code, body = get(workers, "/health/postgres-params")
        assert code == 503 and body["status"] == "failing", body
        printed = table(workers)
        assert printed.returncode == 1 and "postgres-params" in printed.stdout, printed.stdout
    finally:
        stack.pg_ctl("params", "start")
    await wait_until(lambda: statuses(workers)["postgres-params"] == "ok", 60, "postgres-params ok again")

    workers.ingest.stop()
    try:
        down = await wait_until(
            lambda: (s := statuses(workers))["ingest"] == "failing" and s, 30, "ingest failing",
            seen=lambda: statuses(workers),
        )  # fmt: skip
        assert {name for name, status in down.items() if status == "failing"} == {"ingest"}, down
    finally:
        workers.ingest.start()
        workers.ingest.wait_healthy()

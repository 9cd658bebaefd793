"""The ingest's MQTT session over TLS (issue 25), on the secure stack: verified broker, certificate login.

The secure stack's ingest worker connects to Mosquitto's certificate
listener with the project's CA and its own certificate (CN f2-ingest);
test_kafka_security's end-to-end test runs every message through that
session. Here: that it is that session, and that a broker it cannot verify
is refused, said, and nothing is read.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from harness import Stack, Worker, Workers, principal

from bench.stack import free_ports
from f2stream.pki import init_pki


def mosquitto_log(stack: Stack) -> str:
    return (stack.var_dir / "log" / "mosquitto.log").read_text(errors="replace")


def test_the_ingest_session_is_on_the_tls_listener_logged_in_by_its_certificate(
    secure_stack: Stack, secure_workers: Workers
) -> None:
    stack, ingest = secure_stack, secure_workers.ingest
    port = stack.settings.mqtt_tls_port
    status, body = ingest.health()
    assert status == 200, body
    mqtt = json.loads(body)["checks"]["mqtt"]
    certificate = Path(stack.env["F2_PKI_DIR"]) / "services" / "f2-ingest.crt"
    assert mqtt == {"status": "ok", "detail": f"session up at 127.0.0.1:{port} (TLS, client certificate {certificate})"}
    # Mosquitto's own account: the session came in on the certificate listener, its user name the certificate's CN.
    log = mosquitto_log(stack)
    connections = re.findall(r"New connection from [\d.]+:(\d+) on port (\d+)\.\n.*New client connected from [\d.]+:\1 "
                             r"as f2stream-ingest \(.*u'([^']+)'\)", log)  # fmt: skip
    assert connections, log[-3000:]
    assert {(on, user) for _, on, user in connections} == {(str(port), "f2-ingest")}
    # The pipeline's mosquitto check logs in as the ingest does, over TLS too.
    status, body = secure_workers.pipeline.get("/health/mosquitto")
    assert status == 200, body
    assert f"127.0.0.1:{port} (TLS, client certificate {certificate}) accepted" in body


def test_a_broker_certificate_from_another_ca_is_refused_and_said(secure_stack: Stack, tmp_path: Path) -> None:
    stack = secure_stack
    init_pki(tmp_path / "other")  # a CA of the same name that did not issue Mosquitto's certificate
    client_id = "f2stream-ingest-other-ca"  # never the real ingest worker's session
    worker = Worker(
        stack, "f2stream.ingest", free_ports(1)[0], "ingest-other-ca", **principal(stack, "INGEST"),
        F2_MQTT_CA_FILE=str(tmp_path / "other" / "ca.crt"), F2_MQTT_CLIENT_ID=client_id,
    )  # fmt: skip
    worker.start()
    try:
        deadline, detail = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "certificate verify failed" not in detail:
            time.sleep(0.5)
            try:
                status, body = worker.health()
            except OSError:
                continue  # its web server is not up yet
            detail = json.loads(body).get("checks", {}).get("mqtt", {}).get("detail", "")
        assert status == 503, body
        assert "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in detail, detail
        lines = [line for line in worker.log_tail(200).splitlines() if "MQTT session to" in line]
        assert lines, worker.log_tail()
        assert f"MQTT session to 127.0.0.1:{stack.settings.mqtt_tls_port} (TLS, client certificate " in lines[0]
        assert "certificate verify failed" in lines[0]
        assert "Traceback" not in worker.log_tail(200)
    finally:
        worker.stop(timeout_s=30)
    # The broker never let it in: no session of that client id, so nothing was read or acknowledged for it.
    assert f"as {client_id} " not in mosquitto_log(stack)

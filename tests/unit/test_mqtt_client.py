"""The ingest's MQTT connection as settings make it: the password port, or TLS with the broker verified."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from f2stream.mqtt_client import ingest_connection
from f2stream.pki import init_pki
from f2stream.settings import Settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_pki(root)
    return root


def test_without_tls_the_service_listener_with_a_password() -> None:
    connection = ingest_connection(Settings.from_env({"F2_MQTT_PASSWORD": "s3cret", "F2_MQTT_HOST": "mqtt.example"}))
    assert connection.client_options() == {
        "hostname": "mqtt.example", "port": 1883, "username": "f2-ingest", "password": "s3cret", "tls_context": None,
    }  # fmt: skip
    assert str(connection) == "mqtt.example:1883 (as f2-ingest)"


def test_with_tls_the_certificate_listener_verified_with_the_ca_and_logged_in_by_certificate(pki: Path) -> None:
    settings = Settings.from_env(
        {
            "F2_MQTT_TLS": "1",
            "F2_MQTT_CA_FILE": str(pki / "ca.crt"),
            "F2_MQTT_CERT_FILE": str(pki / "server.crt"),
            "F2_MQTT_KEY_FILE": str(pki / "server.key"),
            "F2_MQTT_PASSWORD": "s3cret",
        }
    )
    connection = ingest_connection(settings)
    context = connection.tls_context
    assert context is not None
    assert connection.port == 8883
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [ca["subject"] for ca in context.get_ca_certs()] != []  # the project's CA, not an empty store
    assert str(connection) == f"localhost:8883 (TLS, client certificate {pki / 'server.crt'})"
    assert "s3cret" not in str(connection)
    assert ingest_connection(settings).tls_context is context  # read once per process

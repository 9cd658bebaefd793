"""The ingest worker's MQTT connection, from settings: where, as whom, and whether over TLS.

The ingest's session and the pipeline's `mosquitto` health check (which
logs in as the ingest does) both take :func:`ingest_connection`, so that
the check fails exactly when the ingest could not connect either.

With `F2_MQTT_TLS` the session goes to the TLS listener
(`F2_MQTT_TLS_PORT`), verifies the broker's certificate and host name
against `F2_MQTT_CA_FILE` (none: the system's CAs), and logs in with the
client certificate of `F2_MQTT_CERT_FILE`/`F2_MQTT_KEY_FILE`, a password,
or both: Mosquitto's certificate listener takes the certificate's CN as
the user name (`use_identity_as_username`).
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f2stream.settings import Settings

__all__ = ["MqttConnection", "ingest_connection"]


@dataclass(frozen=True, slots=True)
class MqttConnection:
    """Where and how the ingest connects: the arguments of `aiomqtt.Client` that settings decide."""

    host: str
    port: int
    username: str
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    certificate: Path | None = None  # the client certificate, for messages

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of `aiomqtt.Client` (with the host and port as `hostname` and `port`)."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls_context": self.tls_context,
        }

    def __str__(self) -> str:
        """`127.0.0.1:8883 (TLS, client certificate var/pki/services/f2-ingest.crt)`, never the password."""
        if self.tls_context is None:
            return f"{self.host}:{self.port} (as {self.username})"
        login = f"client certificate {self.certificate}" if self.certificate is not None else f"as {self.username}"
        return f"{self.host}:{self.port} (TLS, {login})"


def ingest_connection(settings: Settings) -> MqttConnection:
    """The ingest's connection: the service listener with a password, or the TLS listener with `F2_MQTT_TLS`."""
    password = None if settings.mqtt_password is None else settings.mqtt_password.reveal()
    if not settings.mqtt_tls:
        return MqttConnection(settings.mqtt_host, settings.mqtt_ingest_port, settings.mqtt_username, password)
    context = _tls_context(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)
    return MqttConnection(
        settings.mqtt_host,
        settings.mqtt_ingest_port,
        settings.mqtt_username,
        password,
        context,
        settings.mqtt_cert_file,
    )


@functools.cache
def _tls_context(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """One context per distinct setting, shared; read once (a renewed certificate is taken up at restart)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)  # verifies chain and host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context

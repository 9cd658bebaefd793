"""What the bench and the integration tests share about a private stack: its port settings, free ports, stack.env."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CLUSTER_PORT_SETTINGS",
    "PORT_SETTINGS",
    "SECURE_CLUSTER_PORT_SETTINGS",
    "SECURE_PORT_SETTINGS",
    "db_login",
    "free_ports",
    "kcat_connection",
    "principal",
    "read_env_file",
]

#: The port settings of deploy/stack.sh; a private stack gets a free port for each.
PORT_SETTINGS = (
    "F2_KAFKA_PORT",
    "F2_KAFKA_CONTROLLER_PORT",
    "F2_MQTT_PORT",
    "F2_MQTT_TLS_PORT",
    "F2_MQTT_WS_PORT",
    "F2_PARAMS_PORT",
    "F2_TIMESERIES_PORT",
)
#: The ports of brokers 2 and 3 of a three-broker stack (F2_KAFKA_BROKERS=3).
CLUSTER_PORT_SETTINGS = (
    "F2_KAFKA_PORT_2",
    "F2_KAFKA_CONTROLLER_PORT_2",
    "F2_KAFKA_PORT_3",
    "F2_KAFKA_CONTROLLER_PORT_3",
)

#: The mTLS listeners of a secure stack (F2_STACK_SECURE=1): broker 1's, then brokers 2 and 3's.
SECURE_PORT_SETTINGS = ("F2_KAFKA_TLS_PORT",)
SECURE_CLUSTER_PORT_SETTINGS = ("F2_KAFKA_TLS_PORT_2", "F2_KAFKA_TLS_PORT_3")


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a stack.env."""
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value.strip().strip("'\"")
    return env


def principal(env: Mapping[str, str], name: str) -> dict[str, str]:
    """The Kafka login of one of a secure stack's principals (stack.env: F2_KAFKA_<NAME>_USERNAME, ...).

    `name`: INGEST, PIPELINE or ADMIN; stack.env itself logs in as f2-tools.
    """
    return {
        "F2_KAFKA_USERNAME": env[f"F2_KAFKA_{name}_USERNAME"],
        "F2_KAFKA_PASSWORD_FILE": env[f"F2_KAFKA_{name}_PASSWORD_FILE"],
    }


def db_login(env: Mapping[str, str], name: str) -> dict[str, str]:
    """The database login of one of a stack's processes (stack.env: F2_DB_<NAME>_USER, ...).

    `name`: PIPELINE or REPAIR; stack.env itself logs in as the owner, f2.
    """
    user, password_file = env[f"F2_DB_{name}_USER"], env[f"F2_DB_{name}_PASSWORD_FILE"]
    return {
        "F2_PARAMS_USER": user,
        "F2_PARAMS_PASSWORD_FILE": password_file,
        "F2_TIMESERIES_USER": user,
        "F2_TIMESERIES_PASSWORD_FILE": password_file,
    }


def kcat_connection(env: Mapping[str, str], broker: int | None = None) -> list[str]:
    """kcat's options to reach a stack's brokers (or broker number `broker` alone).

    On a secure stack (F2_STACK_SECURE=1) the mTLS listeners with the
    brokers' own certificate (a super user), as deploy/stack.sh does:
    Debian's kcat (librdkafka 2.0) cannot log in with SCRAM to Kafka 4
    (kcat#462).
    """
    secure = env.get("F2_STACK_SECURE") == "1"
    urls = env["F2_KAFKA_MTLS_BROKER" if secure else "F2_KAFKA_BROKER"].split(";")
    servers = [url.split("://", 1)[-1] for url in (urls if broker is None else [urls[broker - 1]])]
    options = ["-b", ",".join(servers)]
    if secure:
        services = Path(env["F2_PKI_DIR"]) / "services"
        options += ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={env['F2_KAFKA_CA_FILE']}",
                    "-X", f"ssl.certificate.location={services / 'f2-kafka-broker.crt'}",
                    "-X", f"ssl.key.location={services / 'f2-kafka-broker.key'}"]  # fmt: skip
    return options

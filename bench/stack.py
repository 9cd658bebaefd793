"""What the bench and the integration tests share about a private stack: its port settings, free ports, stack.env."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = [
    "CLUSTER_PORT_SETTINGS",
    "PORT_SETTINGS",
    "SECURE_CLUSTER_PORT_SETTINGS",
    "SECURE_PORT_SETTINGS",
    "free_ports",
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

"""The C-tool ceiling of `make bench` on the real stack: every message arrives, nothing hangs, nothing leaks."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from harness import Stack

from bench.ceiling import KAFKA_TOPIC, CeilingError, measure
from f2stream.kafka_client import kafka_options
from f2stream.settings import Secret, Settings

pytestmark = pytest.mark.integration

TOOLS = {"mosquitto_pub", "mosquitto_sub", "kcat"}


async def in_kafka(settings: Settings) -> int:
    """Records in bench_ceiling (0 before it exists)."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(KAFKA_TOPIC, p) for p in consumer.partitions_for_topic(KAFKA_TOPIC) or ()]
        return sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
    finally:
        await consumer.stop()


def tools_running() -> dict[int, list[str]]:
    """Our own C-tool children still alive: pid to command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == str(os.getpid()) and Path(argv[0].decode()).name in TOOLS:
            found[int(entry.name)] = [a.decode() for a in argv if a]
    return found


async def test_the_c_tools_carry_every_message_to_kafka_and_no_password_is_on_a_command_line(stack: Stack) -> None:
    settings = stack.settings
    assert settings.sim_mqtt_password is not None and settings.mqtt_password is not None
    secrets = {settings.sim_mqtt_password.reveal(), settings.mqtt_password.reveal()}
    seen: list[dict[int, list[str]]] = []

    def progress(arrived: int, messages: int) -> None:
        if not seen:  # the tools are running: look at their command lines once
            seen.append(tools_running())

    for _ in range(2):  # twice: the topic exists the second time, and the first run's relay session is gone
        before = await in_kafka(settings)
        result = await asyncio.wait_for(
            measure(settings, messages=3000, clients=3, work_dir=stack.var_dir, stall_s=10, timeout_s=30,
                    progress=progress),
            timeout=40,
        )  # fmt: skip
        assert result.messages == 3000
        assert result.clients == 3
        assert result.seconds > 0 and result.msg_per_s > 0
        assert set(result.cpu_s) == TOOLS and result.cpu_s_total > 0
        assert await in_kafka(settings) - before == 3000
        assert not tools_running()
        assert not list(stack.var_dir.glob("ceiling-*")), "the work folder (options files with passwords) is left"
    assert seen and seen[0], "no tool was seen running"
    for argv in seen[0].values():
        assert not any(secret in arg for secret in secrets for arg in argv), "a password on a command line"


async def test_messages_that_never_arrive_end_in_an_error_not_a_hang(stack: Stack) -> None:
    # The dashboard account may not publish: Mosquitto acknowledges and drops every message of it.
    settings = stack.settings
    password = (stack.var_dir / "secrets" / "mqtt_dashboard_password").read_text().strip()
    silent = dataclasses.replace(settings, sim_mqtt_username="f2-dashboard", sim_mqtt_password=Secret(password))
    with pytest.raises(CeilingError, match="no progress for") as caught:
        await asyncio.wait_for(
            measure(silent, messages=300, clients=2, work_dir=stack.var_dir, stall_s=3, timeout_s=20), timeout=30
        )
    assert caught.value.arrived == 0 and caught.value.expected == 300
    assert password not in str(caught.value)
    assert not tools_running()
    assert not list(stack.var_dir.glob("ceiling-*"))

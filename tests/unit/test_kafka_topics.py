"""f2stream.kafka_topics.ensure_topics without a broker: a refusal stops it at once, an absent Kafka after its wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from f2stream.kafka_topics import TopicSetupError, ensure_topics
from f2stream.settings import Settings


async def test_a_listener_that_hangs_up_on_plaintext_stops_it_without_waiting_out_its_time() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    async with server:
        with pytest.raises(TopicSetupError) as caught:
            await ensure_topics(Settings(kafka_broker=f"kafka://127.0.0.1:{port}", topic_replication=1), wait_s=60)
    assert "closed the connection at once: its listener wants TLS or another protocol" in str(caught.value)
    assert time.monotonic() - started < 30  # twice the same refusal, a second apart: not the 60 s wait


async def test_nobody_listening_is_waited_for_then_said() -> None:
    with pytest.raises(TopicSetupError) as caught:
        await ensure_topics(Settings(kafka_broker="kafka://127.0.0.1:1", topic_replication=1), wait_s=1.5)
    assert str(caught.value) == (
        "Kafka at 127.0.0.1:1 (PLAINTEXT) does not answer: start it (make up) or set F2_KAFKA_BROKER (waited 2s)"
    )

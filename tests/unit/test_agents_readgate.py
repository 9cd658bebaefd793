"""f2stream.agents.readgate: the ingest worker's byte bound (its use on a connection: test_agents_mqtt_session)."""

from __future__ import annotations

import pytest

from f2stream.agents.readgate import MESSAGE_OVERHEAD_BYTES, ReadGate

TOPIC = "stat/f2-e4fd45f654be/access-control-mode/1/strike-1"


class Reading:
    """Stands in for a transport's pause_reading/resume_reading: records the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def test_a_message_counts_its_payload_topic_and_overhead() -> None:
    assert ReadGate.size_of(TOPIC, b"x" * 100) == 100 + len(TOPIC) + MESSAGE_OVERHEAD_BYTES


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReadGate(0)


def test_reading_stops_at_the_limit_and_goes_on_at_half_of_it() -> None:
    pauses: list[int] = []
    gate, reading = ReadGate(1000, on_pause=lambda: pauses.append(1)), Reading()
    gate.attach(reading.pause, reading.resume)
    gate.take(999)
    assert not gate.paused and reading.calls == []
    gate.take(1)
    assert gate.paused and reading.calls == ["pause"] and pauses == [1]
    gate.take(300)  # what the last read brought is still counted
    gate.release(799)  # 501 held: above half
    assert gate.paused and reading.calls == ["pause"]
    gate.release(1)  # 500: half the limit
    assert not gate.paused and reading.calls == ["pause", "resume"] and gate.held_bytes == 500
    gate.release(500)
    assert reading.calls == ["pause", "resume"] and gate.pauses == 1


def test_a_gate_paused_before_it_is_attached_pauses_the_connection_it_gets() -> None:
    gate, reading = ReadGate(10), Reading()
    gate.take(10)
    gate.attach(reading.pause, reading.resume)
    assert reading.calls == ["pause"]

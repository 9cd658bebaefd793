"""f2stream.logging_limits: repeated records collapsed into a first line and a summary (fake clock)."""

from __future__ import annotations

import logging

import pytest

from f2stream.logging_limits import RepeatFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, name: str = "aiokafka", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, "/x.py", 1, msg, args, None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emitted() -> list[logging.LogRecord]:
    return []


@pytest.fixture
def limit(clock: Clock, emitted: list[logging.LogRecord]) -> RepeatFilter:
    return RepeatFilter(emitted.append, window_s=30, clock=clock)


def test_the_first_record_passes_and_repeats_are_held(limit: RepeatFilter, clock: Clock, emitted: list) -> None:
    assert limit.filter(record("Unable connect to node with id %s", 0))
    for n in range(2500):
        clock.now += 0.01
        assert not limit.filter(record("Unable connect to node with id %s", n))
    assert emitted == []


def test_a_summary_once_the_window_ends(limit: RepeatFilter, clock: Clock, emitted: list) -> None:
    limit.filter(record("Unable connect to node with id %s", 0))
    for _ in range(99):
        clock.now += 0.1
        limit.filter(record("Unable connect to node with id %s", 0))
    clock.now = 1030.0
    assert limit.filter(record("Unable connect to node with id %s", 0))  # opens the next window
    assert len(emitted) == 1
    summary = emitted[0]
    assert summary.getMessage() == "Unable connect to node with id 0 ... repeated 99 times in the last 30s"
    assert (summary.name, summary.levelno) == ("aiokafka", logging.ERROR)
    assert limit.filter(summary)  # a summary passes its own filter


def test_the_summary_comes_with_any_later_record(limit: RepeatFilter, clock: Clock, emitted: list) -> None:
    limit.filter(record("Kafka down"))
    limit.filter(record("Kafka down"))
    clock.now += 45
    assert limit.filter(record("Kafka is back", name="f2stream", level=logging.INFO))
    assert [r.getMessage() for r in emitted] == ["Kafka down ... repeated 1 times in the last 45s"]


def test_no_summary_when_nothing_repeated(limit: RepeatFilter, clock: Clock, emitted: list) -> None:
    limit.filter(record("once"))
    clock.now += 60
    limit.filter(record("once"))
    assert emitted == []


def test_kinds_are_logger_level_and_template(limit: RepeatFilter) -> None:
    assert limit.filter(record("m %s", 1))
    assert limit.filter(record("m %s", 1, name="faust"))
    assert limit.filter(record("m %s", 1, level=logging.WARNING))
    assert limit.filter(record("other %s", 1))
    assert not limit.filter(record("m %s", 2))


def test_info_and_debug_pass_untouched(limit: RepeatFilter) -> None:
    for _ in range(10):
        assert limit.filter(record("per message", level=logging.DEBUG))
        assert limit.filter(record("Published parameters of %d devices", 1, level=logging.INFO))


def test_flush_emits_what_is_pending(limit: RepeatFilter, clock: Clock, emitted: list) -> None:
    limit.filter(record("a"))
    limit.filter(record("a"))
    limit.filter(record("b"))
    clock.now += 5
    limit.flush()
    assert [r.getMessage() for r in emitted] == ["a ... repeated 1 times in the last 5s"]
    assert limit.filter(record("a"))


def test_a_broken_format_still_gives_a_summary(limit: RepeatFilter, clock: Clock, emitted: list) -> None:
    limit.filter(record("%d items", "x"))
    limit.filter(record("%d items", "x"))
    clock.now += 31
    limit.filter(record("next"))
    assert emitted[0].getMessage() == "%d items ... repeated 1 times in the last 31s"


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        RepeatFilter(print, window_s=0)


def test_install_on_handlers_once_and_summaries_reach_the_handler(clock: Clock) -> None:
    logger = logging.getLogger("f2stream.test_logging_limits")
    logger.propagate = False
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    try:
        assert len(install(logger, clock=clock)) == 1
        assert install(logger, clock=clock) == []
        for n in range(50):
            logger.error("Unable to update metadata from [%d]", n)
        clock.now += 31
        logger.error("Unable to update metadata from [%d]", 7)
        assert seen == [
            "Unable to update metadata from [0]",
            "Unable to update metadata from [0] ... repeated 49 times in the last 31s",
            "Unable to update metadata from [7]",
        ]
    finally:
        logger.removeHandler(handler)

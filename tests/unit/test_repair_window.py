"""f2stream.repair.window: the operator's window, read and checked against what the topic holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from f2stream.repair.rows import hour_ranges
from f2stream.repair.window import Held, Window, WindowError, check_window, parse_moment

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
HELD = Held("raw_iot_data", NOW - timedelta(days=2), NOW - timedelta(minutes=1), 1000)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("now", NOW),
        ("90m", NOW - timedelta(minutes=90)),
        ("2h", NOW - timedelta(hours=2)),
        ("1.5d", NOW - timedelta(days=1.5)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2026-12-05T10:00", datetime(2026, 12, 5, 10, 0, tzinfo=UTC)),
        ("2026-12-05 10:00:00+01:00", datetime(2026, 12, 5, 9, 0, tzinfo=UTC)),
    ],
)
def test_moments(text: str, moment: datetime) -> None:
    assert parse_moment(text, NOW, option="--since") == moment


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "-2h", "", "2026-13-01"])
def test_not_a_moment_says_which_option_and_the_forms(text: str) -> None:
    with pytest.raises(WindowError, match=r"^--until .* is not a time: write ISO 8601"):
        parse_moment(text, NOW, option="--until")


def test_the_default_window_is_all_the_topic_holds_up_to_now() -> None:
    assert check_window(None, None, NOW, HELD) == Window(HELD.oldest, NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("since", "until", "held", "says"),
    [
        (NOW + timedelta(seconds=1), None, HELD, "is in the future"),
        (NOW - timedelta(hours=1), NOW - timedelta(hours=2), HELD, "the window is empty"),
        (NOW - timedelta(hours=1), NOW - timedelta(hours=1), HELD, "the window is empty"),
        (NOW - timedelta(days=9), NOW - timedelta(days=3), HELD, "lies outside what the topic holds"),
        (NOW - timedelta(seconds=30), None, HELD, "lies outside what the topic holds"),
        (None, None, Held("raw_iot_data", None, None, 0), "holds no records"),
        (NOW - timedelta(days=3), None, Held("raw_iot_data", HELD.oldest, HELD.newest, 10, trimmed=True),
         "past the topic's retention.; start at --since 2026-12-03T12:00:00Z or later"),
    ],
)  # fmt: skip
def test_bad_windows(since: datetime | None, until: datetime | None, held: Held, says: str) -> None:
    with pytest.raises(WindowError, match=says.replace("(", r"\(")):
        check_window(since, until, NOW, held)


def test_before_the_oldest_record_is_fine_when_retention_removed_nothing() -> None:
    since = NOW - timedelta(days=3)
    assert check_window(since, None, NOW, HELD).since == since


def test_the_oldest_second_as_shown_is_accepted_when_trimmed() -> None:
    held = Held("raw_iot_data", NOW.replace(microsecond=500_000), NOW + timedelta(minutes=1), 1, trimmed=True)
    assert check_window(NOW, NOW + timedelta(minutes=2), NOW + timedelta(minutes=3), held).since == NOW


def test_hour_ranges_merge_touching_hours() -> None:
    h = datetime(2026, 3, 1, tzinfo=UTC)
    times = [
        h + timedelta(minutes=5),
        h + timedelta(minutes=65),
        h + timedelta(hours=1, minutes=1),
        h + timedelta(hours=5),
    ]
    assert hour_ranges(times) == [(h, h + timedelta(hours=2)), (h + timedelta(hours=5), h + timedelta(hours=6))]
    assert hour_ranges([]) == []

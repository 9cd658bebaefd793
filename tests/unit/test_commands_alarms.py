"""f2stream.commands.alarms: the arguments checked in one line before any database, and the table it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from f2stream.commands.alarms import format_alarms, request_of
from f2stream.commands.base import CommandError

HOT = {"name": "hot", "kind": "threshold", "severity": "major", "component": "sensor", "data_point": "data",
       "above": 40}  # fmt: skip


def error_of(*words: str, **options: str | bool) -> str:
    with pytest.raises(CommandError) as caught:
        request_of(words, **options)  # type: ignore[arg-type]  # each option's own type
    return str(caught.value)


def test_each_action() -> None:
    assert request_of(("rules", "list")).action == "rules list"
    listed = request_of(("list",), state="all", device="E4:FD:45:F6:54:BE", limit="5")
    assert (listed.state, listed.device, listed.limit) == ("all", "f2-e4fd45f654be", 5)
    assert request_of(("list",)).state == "active"
    ack = request_of(("ack", "f2-e4fd45f654be:hot:0:17"), by=" ops ", note="checked on site")
    assert (ack.alarm_id, ack.by, ack.note) == ("f2-e4fd45f654be:hot:0:17", "ops", "checked on site")
    assert request_of(("ack", "x")).by  # the OS user name


def test_a_rule_file_is_read_and_its_problems_kept_for_the_parameter_check(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_bytes(orjson.dumps([HOT]))
    request = request_of(("rules", "load", str(good)), replace=True)
    assert request.replace and [r.name for r in request.rules] == ["hot"] and not request.problems
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps([HOT, {**HOT, "name": "cold", "for_s": -1}]))
    request = request_of(("rules", "load", str(bad)))
    assert [r.name for r in request.rules] == ["hot"]
    assert request.problems == ("bad.json rule 2 (cold): for_s -1 is negative: a duration is 0 or more seconds",)


@pytest.mark.parametrize(
    ("words", "options", "said"),
    [
        ((), {}, "give one of: alarms rules load FILE; alarms rules list; alarms list; alarms ack ALARM_ID"),
        (("rules",), {}, "give one of"),
        (("rules", "load"), {}, "give one of"),
        (("list", "extra"), {}, "(not 'list extra')"),
        (("list",), {"state": "open"}, "--state must be one of active, raised, acknowledged, cleared, all"),
        (("list",), {"limit": "ten"}, "--limit must be a whole number from 1 to 10000, not 'ten'"),
        (("list",), {"limit": "0"}, "--limit must be"),
        (("list",), {"device": "door"}, "'door' is not a MAC address"),
        (("list",), {"replace": True}, "--replace does not apply to `alarms list`"),
        (("rules", "list"), {"by": "x"}, "--by does not apply to `alarms rules list`"),
        (("ack", "x"), {"state": "all"}, "--state does not apply to `alarms ack`"),
        (("ack", " "), {}, "' ' is not an alarm id"),
        (("ack", "x"), {"by": "a\nb"}, "--by must be a name of 1 to 100 printable characters"),
        (("ack", "x"), {"note": "n" * 1001}, "--note must be at most 1000"),
    ],
)
def test_a_bad_argument_is_one_line(words: tuple[str, ...], options: dict[str, str | bool], said: str) -> None:
    error = error_of(*words, **options)
    assert said in error and "\n" not in error


def test_an_unreadable_rule_file(tmp_path: Path) -> None:
    request = request_of(("rules", "load", str(tmp_path / "missing.toml")))
    assert request.problems == (f"cannot read {tmp_path / 'missing.toml'}: No such file or directory",)


def test_the_alarms_table() -> None:
    rows: list[dict[str, Any]] = [
        {"alarm_id": "f2-e4fd45f654be:hot:0:17", "state": "acknowledged", "severity": "major", "data_point": "data",
         "value": 41.5, "text_value": None, "raised_at": "2026-01-02T03:04:05.000000+00:00",
         "acknowledged_by": "ops", "acknowledged_at": "2026-01-02T03:10:00.000000+00:00", "cleared_at": None},
        {"alarm_id": "f2-e4fd45f654be:strike:1:9", "state": "cleared", "severity": "warning", "data_point": "state",
         "value": None, "text_value": "unlocked", "raised_at": "2026-01-02T04:00:00.000000+00:00",
         "acknowledged_by": None, "acknowledged_at": None, "cleared_at": "2026-01-02T04:01:00.000000+00:00"},
    ]  # fmt: skip
    header, first, second = format_alarms(rows)
    assert header.split()[:3] == ["raised", "(UTC)", "state"]
    assert first.split() == ["2026-01-02T03:04:05.000000+00:00", "acknowledged", "major", "data", "=", "41.5",
                             "f2-e4fd45f654be:hot:0:17", "acknowledged", "by", "ops", "at",
                             "2026-01-02T03:10:00.000000+00:00"]  # fmt: skip
    assert "state = unlocked" in second and second.endswith("cleared at 2026-01-02T04:01:00.000000+00:00")

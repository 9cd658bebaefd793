"""f2stream.commands.tail.render_record: every Kafka record becomes one JSON line, whatever it holds."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import pytest

from f2stream.commands.tail import render_record


@dataclass
class Record:
    """The fields of an aiokafka ConsumerRecord that tail reads."""

    value: bytes | None
    key: bytes | None = b"f2-e4fd45f654be"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "iot_dead_letter"
    partition: int = 3
    offset: int = 17
    timestamp: int = 1_700_000_000_000


def render(record: Record) -> dict[str, object]:
    line = render_record(record)
    assert "\n" not in line and "\r" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    assert (parsed["topic"], parsed["partition"], parsed["offset"]) == (record.topic, record.partition, record.offset)
    return parsed


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_plain_json_is_inline() -> None:
    line = render(Record(b'{"timestamp": "2024-01-01 00:00:00.000001", "state": "locked"}', headers=[("reason", b"x")]))
    assert line["value"] == {"timestamp": "2024-01-01 00:00:00.000001", "state": "locked"}
    assert line["key"] == "f2-e4fd45f654be" and line["headers"] == {"reason": "x"}
    assert "value_note" not in line


def test_deep_nesting_that_orjson_cannot_encode_is_inline_as_it_arrived() -> None:
    value = nested(640)  # orjson.dumps stops at 254 levels: the reported crash
    line = render_record(Record(value))
    assert line.endswith(',"value":' + value.decode() + "}")
    depth, node = 0, json.loads(line)["value"]
    while isinstance(node, dict):
        depth, node = depth + 1, node["a"]
    assert depth == 640


def test_nesting_beyond_the_parser_limit_is_text_with_a_note() -> None:
    value = nested(2000)
    line = render(Record(value))
    assert line["value_text"] == value.decode()
    assert "depth" in str(line["value_note"])


@pytest.mark.parametrize(
    "value",
    [b'{"n": 123456789012345678901234567890}', b'{"n": -18446744073709551617}', b'{"n": 1.0000000000000000001}'],
)
def test_big_numbers_keep_every_digit(value: bytes) -> None:
    line = render_record(Record(value))
    assert line.endswith(',"value":' + value.decode() + "}")


@pytest.mark.parametrize("value", [b'{"n": NaN}', b'{"n": Infinity}', b'{"n": 1e400}', b"-1e400"])
def test_nan_and_infinity_are_text_with_a_note(value: bytes) -> None:
    line = render(Record(value))
    assert line["value_text"] == value.decode()
    assert str(line["value_note"]).startswith("not shown as JSON")


def test_non_utf8_value_is_base64_with_a_note() -> None:
    value = b'{"a": "\xff\xfe"}'
    line = render(Record(value))
    assert base64.b64decode(str(line["value_base64"])) == value
    assert "not UTF-8" in str(line["value_note"])


def test_non_utf8_key_and_header_are_base64() -> None:
    line = render(Record(b"1", key=b"\xff", headers=[("reason", b"bad_json"), ("mqtt_topic", b"stat/\xc3")]))
    assert line["key_base64"] == base64.b64encode(b"\xff").decode() and "key" not in line
    assert line["headers"] == {"reason": "bad_json"}
    assert line["headers_base64"] == {"mqtt_topic": base64.b64encode(b"stat/\xc3").decode()}


def test_line_breaks_in_json_whitespace_do_not_split_the_line() -> None:
    line = render(Record(b'{\r\n  "a": [1,\n 2]\n}\n'))
    assert line["value"] == {"a": [1, 2]}


def test_text_and_empty_values() -> None:
    assert render(Record(b"hello"))["value_text"] == "hello"
    assert render(Record(b""))["value_text"] == ""
    assert render(Record(None))["value"] is None
    assert render(Record(None, key=None))["key"] is None


def test_a_record_that_breaks_rendering_still_gives_one_line() -> None:
    broken = Record(b"\x00\x01", headers=[(b"not-a-str", b"x")])  # type: ignore[list-item]
    line = render(broken)
    assert "render_error" in line
    assert base64.b64decode(str(line["value_base64"])) == b"\x00\x01"

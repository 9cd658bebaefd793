"""decoded_iot_data records: one per message, read back into rows column by column."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from fakes import measurements_of

from f2stream.errors import BadMessage
from f2stream.records import Measurement, Rows, encode_decoded, format_time


def point(data_point: str, value: float | None, text: str | None = None, unit: str | None = None) -> Measurement:
    return Measurement(
        "2025-01-01T00:00:00.000001+00:00", "f2-000000000001", "access-control-mode", 1, "strike-1",
        data_point, value, text, unit, "stat/f2-000000000001/access-control-mode/1/strike-1",
        "2025-01-01T00:00:01.000000+00:00", 7,
    )  # fmt: skip


MESSAGE = [point("state", 1.0, "locked", "state"), point("voltage", 12.1, None, "V"), point("x", None, "y")]


def test_a_message_round_trips_through_its_record() -> None:
    assert measurements_of(encode_decoded(MESSAGE)) == MESSAGE


def test_rows_hold_every_point_of_every_record_in_order() -> None:
    rows = Rows()
    assert rows.columns == tuple([] for _ in Measurement.__slots__)
    assert rows.add_decoded(encode_decoded(MESSAGE)) == 3
    assert rows.columns == Rows.of(MESSAGE).columns
    assert rows.add_decoded(encode_decoded(MESSAGE[:1])) == 1
    assert len(rows) == 4
    assert [rows.row(i) for i in range(4)] == [*MESSAGE, MESSAGE[0]]
    assert rows.columns == Rows.of([*MESSAGE, MESSAGE[0]]).columns


def test_provenance_round_trips_and_records_from_before_it_read_as_none() -> None:
    traced = [replace(m, raw_partition=5, raw_offset=123_456_789_012) for m in MESSAGE]
    assert measurements_of(encode_decoded(traced)) == traced
    older = orjson.loads(encode_decoded(MESSAGE))
    del older["raw_partition"], older["raw_offset"]
    rows = Rows()
    assert rows.add_decoded(orjson.dumps(older)) == 3
    assert [(rows.row(i).raw_partition, rows.row(i).raw_offset) for i in range(3)] == [(None, None)] * 3


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"[]",
        orjson.dumps({"time": "t", "points": []}),
        orjson.dumps({**orjson.loads(encode_decoded(MESSAGE)), "points": [{"data_point": "x"}]}),
        orjson.dumps({**orjson.loads(encode_decoded(MESSAGE)), "points": [{**MESSAGE[0].asdict()}, 3]}),
    ],
)
def test_anything_else_is_a_bad_record_and_adds_nothing(value: bytes | None) -> None:
    rows = Rows()
    rows.add_decoded(encode_decoded(MESSAGE))
    with pytest.raises(BadMessage) as caught:
        rows.add_decoded(value)
    assert caught.value.reason == "bad_record"
    assert len(rows) == 3 and all(len(column) == 3 for column in rows.columns)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (b"[]", "TypeError: list indices must be integers or slices, not str"),
        (orjson.dumps({"time": "t", "points": []}), "KeyError: 'device_id'"),
        (orjson.dumps({**orjson.loads(encode_decoded(MESSAGE)), "points": [{"data_point": "x"}]}), "KeyError: 'value'"),
        (
            orjson.dumps({**orjson.loads(encode_decoded(MESSAGE)), "points": 3}),
            "TypeError: 'int' object is not iterable",
        ),
    ],
)
def test_a_bad_record_says_what_it_lacks(value: bytes, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        Rows().add_decoded(value)
    assert caught.value.detail == f"not a decoded_iot_data record ({detail})"


def test_format_time() -> None:
    assert format_time(datetime(2025, 1, 31, 12, tzinfo=UTC)) == "2025-01-31T12:00:00.000000+00:00"
    assert format_time(datetime.fromisoformat("2025-01-31T13:00:00.5+01:00")) == "2025-01-31T12:00:00.500000+00:00"

"""f2stream.tables.parameters.build_sets: the effective parameter sets the sync publishes, from database rows."""

from __future__ import annotations

import asyncio
import logging

import faust
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError

from f2stream.backoff import Backoff
from f2stream.codec.model import Parameter, ParameterIndex
from f2stream.records import ParameterSet
from f2stream.settings import Settings
from f2stream.tables import parameters
from f2stream.tables.parameters import ParameterSync, apply_records, build_sets, codec_of

DEVICE = "f2-e4fd45f654be"
OTHER = "f2-02f200000001"
THIRD = "f2-02f200000002"

COLUMNS = (
    "device_id", "mode", "component_type", "component_number", "encoding", "unit", "scale_factor", "data_point",
    "field", "byte_offset", "data_type", "byte_order", "word_order", "decimals", "true_words", "false_words",
)  # fmt: skip


def row(device_id: str, component_type: str, number: str | None, encoding: str, **extra: object) -> dict[str, object]:
    """A database row: every column present, NULL unless given."""
    mode = {"sensor": "sensor-mode", "siren": "alarm-mode"}.get(component_type, "access-control-mode")
    base: dict[str, object] = dict.fromkeys(COLUMNS)
    base |= {
        "device_id": device_id,
        "mode": mode,
        "component_type": component_type,
        "component_number": number,
        "encoding": encoding,
        "unit": "state",
        "scale_factor": 1.0,
    }
    return base | extra


def parameters_of(parameter_set: ParameterSet) -> list[Parameter]:
    return [Parameter.from_row(r) for r in parameter_set.parameters]


def test_one_set_per_changed_device_with_its_version() -> None:
    own = [
        row(DEVICE, "strike", "1", "boolean"),
        row(DEVICE, "strike", "1", "number", unit="V", field="voltage", data_point="voltage", decimals=2),
        row(OTHER, "sensor", "3", "hex_to_float", unit="celsius", scale_factor=0.1),
    ]
    sets = build_sets([(DEVICE, 5), (OTHER, 9)], own, [])
    assert [(s.device_id, s.version) for s in sets] == [(DEVICE, 5), (OTHER, 9)]
    assert parameters_of(sets[0]) == [
        Parameter(DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0),
        Parameter(
            DEVICE, "access-control-mode", "strike", "1", "number", "V", 1.0,
            data_point="voltage", field="voltage", decimals=2,
        ),
    ]  # fmt: skip
    assert parameters_of(sets[1]) == [Parameter(OTHER, "sensor-mode", "sensor", "3", "hex_to_float", "celsius", 0.1)]


def test_the_set_holds_rows_as_as_row_writes_them() -> None:
    own = [row(DEVICE, "strike", "1", "boolean", true_words=["Engaged", "held"], false_words=["free"])]
    (parameter_set,) = build_sets([(DEVICE, 1)], own, [])
    assert parameter_set.parameters == [
        {
            "device_id": DEVICE,
            "mode": "access-control-mode",
            "component_type": "strike",
            "component_number": "1",
            "encoding": "boolean",
            "unit": "state",
            "scale_factor": 1.0,
            "data_point": None,
            "field": None,
            "byte_offset": None,
            "data_type": None,
            "byte_order": None,
            "word_order": None,
            "decimals": None,
            "true_words": ["engaged", "held"],
            "false_words": ["free"],
        }
    ]
    # The table writes it as JSON and reads it back.
    assert ParameterSet.loads(parameter_set.dumps()).parameters == parameter_set.parameters


def test_only_the_changed_devices_get_a_set() -> None:
    own = [row(DEVICE, "strike", "1", "boolean"), row(OTHER, "strike", "1", "boolean")]
    sets = build_sets([(OTHER, 3)], own, [])
    assert [(s.device_id, s.version, len(s.parameters)) for s in sets] == [(OTHER, 3, 1)]


def test_an_invalid_row_is_skipped_and_the_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    own = [
        row(DEVICE, "strike", "1", "boolean"),
        row(DEVICE, "strike", "1", "float", data_point="voltage"),
        row(DEVICE, "reader", "1", "raw_string", unit="text"),
        row(OTHER, "sensor", "3", "hex_to_float", data_type="int64"),
        row(OTHER, "sensor", "3", "hex_to_float", data_point="t", data_type="int16"),
    ]
    with caplog.at_level(logging.WARNING, logger="f2stream.tables.parameters"):
        sets = build_sets([(DEVICE, 2), (OTHER, 4)], own, [])
    assert [(p.component_type, p.encoding, p.data_point) for p in parameters_of(sets[0])] == [
        ("strike", "boolean", None),
        ("reader", "raw_string", None),
    ]
    assert [(p.data_point, p.data_type) for p in parameters_of(sets[1])] == [("t", "int16")]
    messages = [r.getMessage() for r in caplog.records]
    assert any(DEVICE in m and "encoding 'float'" in m for m in messages)
    assert any(OTHER in m and "data type 'int64'" in m for m in messages)
    assert len(messages) == 2


def test_a_device_with_only_invalid_rows_gets_an_empty_set() -> None:
    sets = build_sets([(DEVICE, 8)], [row(DEVICE, "strike", "1", "boolean", byte_order="middle")], [])
    assert [(s.device_id, s.version, s.parameters) for s in sets] == [(DEVICE, 8, [])]


def test_a_device_without_rows_gets_an_empty_list_a_deletion() -> None:
    sets = build_sets([(DEVICE, 11), (OTHER, 12)], [row(OTHER, "strike", "1", "boolean")], [])
    assert [(s.device_id, s.version, len(s.parameters)) for s in sets] == [(DEVICE, 11, 0), (OTHER, 12, 1)]
    assert sets[0].parameters == []


def test_no_changed_devices_no_sets() -> None:
    assert build_sets([], [row(DEVICE, "strike", "1", "boolean")], []) == []


def test_template_rows_are_merged_under_the_own_rows() -> None:
    # The template query returns the template's rows with the device id of each device assigned to it.
    # One template of two rows, assigned to DEVICE and OTHER (THIRD has neither template nor rows).
    template = [
        template_row
        for device in (DEVICE, OTHER)
        for template_row in (
            row(device, "strike", "1", "boolean"),
            row(device, "strike", "1", "number", unit="mV", field="voltage", data_point="voltage", scale_factor=1000),
        )
    ]
    own = [
        row(DEVICE, "strike", "1", "number", unit="V", field="voltage", data_point="voltage", decimals=2),
        row(DEVICE, "siren", "1", "boolean"),
    ]
    sets = build_sets([(DEVICE, 21), (OTHER, 22), (THIRD, 23)], own, template)
    assert [(s.device_id, s.version) for s in sets] == [(DEVICE, 21), (OTHER, 22), (THIRD, 23)]
    merged = {p.key: (p.encoding, p.unit, p.scale, p.decimals) for p in parameters_of(sets[0])}
    assert merged == {
        ("access-control-mode", "strike", "1", ""): ("boolean", "state", 1.0, None),
        ("access-control-mode", "strike", "1", "voltage"): ("number", "V", 1.0, 2),
        ("alarm-mode", "siren", "1", ""): ("boolean", "state", 1.0, None),
    }
    assert {p.device_id for p in parameters_of(sets[0])} == {DEVICE}
    assert [(p.unit, p.scale) for p in parameters_of(sets[1])] == [("state", 1.0), ("mV", 1000.0)]
    assert {p.device_id for p in parameters_of(sets[1])} == {OTHER}
    assert sets[2].parameters == []


def test_a_device_with_only_a_template_gets_the_template() -> None:
    template = [row(DEVICE, "reader", None, "raw_string", unit="text")]
    (parameter_set,) = build_sets([(DEVICE, 1)], [], template)
    assert parameters_of(parameter_set) == [
        Parameter(DEVICE, "access-control-mode", "reader", None, "raw_string", "text", 1.0)
    ]


def test_an_invalid_own_row_leaves_the_template_row_in_place() -> None:
    template = [row(DEVICE, "strike", "1", "boolean", unit="state")]
    own = [row(DEVICE, "strike", "1", "boolen", unit="lock")]
    (parameter_set,) = build_sets([(DEVICE, 1)], own, template)
    assert [(p.encoding, p.unit) for p in parameters_of(parameter_set)] == [("boolean", "state")]


def test_an_invalid_template_row_is_skipped() -> None:
    template = [row(DEVICE, "strike", "1", "boolean"), row(DEVICE, "strike", "2", "boolean", mode="door-mode")]
    (parameter_set,) = build_sets([(DEVICE, 1)], [], template)
    assert [p.component_number for p in parameters_of(parameter_set)] == ["1"]


def published(device_id: str, value: bytes | None, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    """A record of the compacted `device_parameters` topic, as the table reads it."""
    return ConsumerRecord(
        topic="device_parameters", partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=device_id.encode(), value=value, checksum=None, serialized_key_size=len(device_id),
        serialized_value_size=len(value or b""), headers=(),
    )  # fmt: skip


def test_the_table_holds_what_was_published_last_and_drops_deleted_devices() -> None:
    [first, other] = build_sets([(DEVICE, 1), (OTHER, 2)], [row(DEVICE, "strike", "1", "boolean"),
                                row(OTHER, "siren", None, "boolean")], [])  # fmt: skip
    [changed] = build_sets([(DEVICE, 3)], [row(DEVICE, "reader", None, "raw_string", unit="text")], [])
    index = ParameterIndex()
    apply_records(
        [
            published(DEVICE, first.dumps()),
            published(OTHER, other.dumps()),
            published(DEVICE, changed.dumps()),
            published(THIRD, b"{not json"),  # unreadable: skipped, the rest applies
        ],
        index,
    )
    codec = index.codec(DEVICE)
    assert codec is not None
    assert (codec.version, [p.component_type for p in codec.parameters]) == (3, ["reader"])
    assert index.codec(THIRD) is None
    apply_records([published(OTHER, ParameterSet(device_id=OTHER, version=4, parameters=[]).dumps())], index)
    apply_records([published(DEVICE, None)], index)  # a tombstone
    assert (index.codec(OTHER), index.codec(DEVICE), len(index)) == (None, None, 0)


def test_codec_of_reads_back_what_build_sets_published() -> None:
    [parameter_set] = build_sets([(DEVICE, 7)], [row(DEVICE, "sensor", "3", "hex_to_float", scale_factor=0.1)], [])
    parsed = codec_of(parameter_set.dumps())
    assert parsed is not None
    device, codec = parsed
    assert codec is not None
    assert (device, codec.version, [p.as_row() for p in codec.parameters]) == (DEVICE, 7, parameter_set.parameters)


async def test_the_sync_survives_a_kafka_error_and_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KafkaError while publishing (or any bug) once ended the sync, and with it the worker: now it tries again."""
    monkeypatch.setattr(parameters, "Backoff", lambda *_, **__: Backoff(0.001, 0.002))
    sync = ParameterSync(faust.App("test-sync"), Settings(), topic=None)  # type: ignore[arg-type]
    failures: list[BaseException] = [KafkaConnectionError(), RuntimeError("a bug")]
    passes = 0

    async def listen_and_sync() -> None:
        nonlocal passes
        passes += 1
        if failures:
            raise failures.pop(0)
        await sync.stop()  # the third pass ends the test

    monkeypatch.setattr(sync, "_listen_and_sync", listen_and_sync)
    await asyncio.wait_for(sync._follow(sync), 10)  # the service task, run by hand
    assert passes == 3
    assert sync.last_error == "RuntimeError: a bug"

"""f2stream.codec.model: parameter rows and the in-memory index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.codec.model import ENCODINGS, DeviceCodec, Parameter, ParameterIndex
from f2stream.errors import BadMessage
from f2stream.mqtt_topics import parse_topic

DEVICE = "f2-e4fd45f654be"


def row(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "device_id": DEVICE,
        "mode": "access-control-mode",
        "component_type": "strike",
        "component_number": "1",
        "encoding": "boolean",
        "unit": "state",
        "scale_factor": 1.0,
    }
    return base | changes


def test_encodings() -> None:
    assert {"boolean", "boolean_map", "hex_to_float", "raw_string", "number"} == ENCODINGS


def test_the_seed_rows_load_as_they_are(seed_rows: list[dict[str, object]]) -> None:
    assert [Parameter.from_row(r) for r in seed_rows] == [
        Parameter(DEVICE, "access-control-mode", "door-sensors", None, "boolean_map", "state", 1.0),
        Parameter(DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0),
        Parameter(DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", "celsius", 0.1),
        Parameter(DEVICE, "alarm-mode", "motion-sensor", "1", "boolean", "presence", 1.0),
        Parameter(DEVICE, "access-control-mode", "reader", "1", "raw_string", "text", 1.0),
    ]


def test_from_row_converts_types() -> None:
    parameter = Parameter.from_row(row(component_number=3, scale_factor=1, unit=None))
    assert parameter.component_number == "3"
    assert parameter.unit is None
    assert parameter.scale == 1.0
    assert type(parameter.scale) is float


def test_missing_scale_is_one() -> None:
    assert Parameter.from_row(row(scale_factor=None)).scale == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"encoding": "float"},
            "encoding 'float' is not one of boolean, boolean_map, hex_to_float, number, raw_string",
        ),
        ({"encoding": None}, "encoding None is not one of"),
        ({"mode": "door-mode"}, "mode 'door-mode' is not one of access-control-mode, alarm-mode, sensor-mode"),
        (
            {"component_type": "door-sensor"},
            "component type 'door-sensor' is not one of door-sensors, exit-buttons, "
            "motion-sensor, reader, sensor, siren, strike",
        ),
        ({"component_type": "strike-1"}, "component type 'strike-1'"),
    ],
)
def test_from_row_refuses_bad_fields(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Parameter.from_row(row(**changes))
    assert str(caught.value).startswith(message)


def test_index_holds_a_codec_per_device(seed_index: ParameterIndex) -> None:
    codec = seed_index.codec(DEVICE)
    assert codec is not None
    assert (len(seed_index), len(codec.parameters)) == (1, 5)
    assert len(ParameterIndex()) == 0


def test_index_put_replaces_and_remove_forgets(seed_index: ParameterIndex) -> None:
    before = seed_index.codec(DEVICE)
    assert before is not None
    seed_index.put(DeviceCodec(DEVICE, 9, before.parameters[:1]))
    after = seed_index.codec(DEVICE)
    assert after is not None
    assert (after.version, after.parameters) == (9, before.parameters[:1])
    seed_index.remove(DEVICE)
    seed_index.remove(DEVICE)  # twice is fine
    assert (seed_index.codec(DEVICE), len(seed_index)) == (None, 0)


def lookup(index: ParameterIndex, topic: str) -> list[Parameter]:
    info = parse_topic(topic)
    codec = index.codec(info.device_id)
    assert codec is not None
    return codec.for_component(info)


@pytest.mark.parametrize(
    ("topic", "component_type", "number"),
    [
        (f"stat/{DEVICE}/access-control-mode/1/strike-1", "strike", "1"),
        (f"stat/{DEVICE}/access-control-mode/2/door-sensors", "door-sensors", None),
        (f"cmnd/{DEVICE}/sensor-mode/4/sensor-3", "sensor", "3"),
        (f"stat/{DEVICE}/alarm-mode/3/motion-sensor-1", "motion-sensor", "1"),
        (f"tele/{DEVICE}/access-control-mode/2/reader-1", "reader", "1"),
    ],
)
def test_lookup_finds_the_seed_rows(
    seed_index: ParameterIndex, topic: str, component_type: str, number: str | None
) -> None:
    [parameter] = lookup(seed_index, topic)
    assert (parameter.component_type, parameter.component_number) == (component_type, number)


def test_own_number_first_then_the_row_for_all() -> None:
    index = ParameterIndex(
        [
            Parameter.from_row(row(component_type="reader", component_number=None, encoding="raw_string", unit="all")),
            Parameter.from_row(row(component_type="reader", component_number="2", encoding="raw_string", unit="two")),
        ]
    )
    for number, unit in (("2", "two"), ("1", "all"), ("7", "all")):
        [parameter] = lookup(index, f"tele/{DEVICE}/access-control-mode/1/reader-{number}")
        assert parameter.unit == unit


def test_unknown_device(seed_index: ParameterIndex) -> None:
    assert seed_index.codec("f2-000000000001") is None


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        (
            f"stat/{DEVICE}/access-control-mode/1/strike-2",
            f"device {DEVICE} has no parameter for access-control-mode strike 2",
        ),
        (f"cmnd/{DEVICE}/sensor-mode/4/sensor-4", f"device {DEVICE} has no parameter for sensor-mode sensor 4"),
        (f"stat/{DEVICE}/alarm-mode/3/siren-1", f"device {DEVICE} has no parameter for alarm-mode siren 1"),
        (
            f"stat/{DEVICE}/access-control-mode/1/exit-buttons",
            f"device {DEVICE} has no parameter for access-control-mode exit-buttons",
        ),
        # Same component type, other mode: the mode is part of the key.
        (f"stat/{DEVICE}/alarm-mode/1/strike-1", f"device {DEVICE} has no parameter for alarm-mode strike 1"),
    ],
)
def test_no_parameter(seed_index: ParameterIndex, topic: str, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        lookup(seed_index, topic)
    assert (caught.value.reason, caught.value.detail, caught.value.topic) == ("no_parameter", detail, topic)


def merged_by_hand(parameters: list[Parameter], component_type: str, number: str | None) -> list[Parameter]:
    """The rule: the component's rows for all numbers, each replaced or joined by its own number's row."""
    merged = {
        p.data_point or "": p for p in parameters if (p.component_type, p.component_number) == (component_type, None)
    }
    if number is not None:
        merged.update(
            (p.data_point or "", p)
            for p in parameters
            if (p.component_type, p.component_number) == (component_type, number)
        )
    return list(merged.values())


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from(["strike", "reader"]), st.sampled_from([None, "1", "2"]),
                  st.sampled_from([None, "a", "b"]), st.sampled_from(["u", "v", "w"])),
        max_size=8,
    ),
    st.sampled_from(["strike-1", "strike-2", "strike-3", "reader-1", "exit-buttons"]),
)  # fmt: skip
def test_for_component_follows_the_rule(rows: list[tuple[str, str | None, str | None, str]], component: str) -> None:
    parameters = [
        Parameter.from_row(row(component_type=t, component_number=n, data_point=d, unit=u)) for t, n, d, u in rows
    ]
    topic = f"stat/{DEVICE}/access-control-mode/1/{component}"
    info = parse_topic(topic)
    expected = merged_by_hand(parameters, info.component_type, info.component_number)
    codec = DeviceCodec(DEVICE, 1, parameters)
    if expected:
        assert list(codec.for_component(info)) == expected
    else:
        with pytest.raises(BadMessage):
            codec.for_component(info)

"""f2stream.mqtt_topics: topic parsing and canonical device ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.errors import BadMessage
from f2stream.mqtt_topics import COMPONENT_TYPES, MESSAGE_TYPES, MODES, TopicInfo, canonical_device_id, parse_topic

DEVICE = "f2-e4fd45f654be"
PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300)

COMPONENTS = [
    ("strike-1", "strike", "1"),
    ("door-sensors", "door-sensors", None),
    ("reader-1", "reader", "1"),
    ("reader-2", "reader", "2"),
    ("exit-buttons", "exit-buttons", None),
    ("siren-1", "siren", "1"),
    ("motion-sensor-1", "motion-sensor", "1"),
    ("sensor-3", "sensor", "3"),
    ("sensor-12", "sensor", "12"),
    ("strike-99", "strike", "99"),
]


def test_the_option_sets_are_the_documented_ones() -> None:
    assert {"cmnd", "stat", "tele"} == MESSAGE_TYPES
    assert {"access-control-mode", "alarm-mode", "sensor-mode"} == MODES
    assert {"strike", "door-sensors", "reader", "exit-buttons", "siren", "motion-sensor", "sensor"} == COMPONENT_TYPES


def test_parse_topic_returns_every_part() -> None:
    topic = f"stat/{DEVICE}/access-control-mode/1/strike-1"
    assert parse_topic(topic) == TopicInfo(
        topic=topic,
        message_type="stat",
        device_id=DEVICE,
        mode="access-control-mode",
        connector=1,
        component="strike-1",
        component_type="strike",
        component_number="1",
    )


@pytest.mark.parametrize(("component", "component_type", "number"), COMPONENTS)
def test_every_component_type(component: str, component_type: str, number: str | None) -> None:
    info = parse_topic(f"tele/{DEVICE}/sensor-mode/2/{component}")
    assert (info.component, info.component_type, info.component_number) == (component, component_type, number)


@pytest.mark.parametrize("message_type", ["cmnd", "stat", "tele"])
def test_every_message_type(message_type: str) -> None:
    assert parse_topic(f"{message_type}/{DEVICE}/alarm-mode/3/siren-1").message_type == message_type


@pytest.mark.parametrize("mode", ["access-control-mode", "alarm-mode", "sensor-mode"])
def test_every_mode(mode: str) -> None:
    assert parse_topic(f"stat/{DEVICE}/{mode}/1/door-sensors").mode == mode


@pytest.mark.parametrize("connector", [1, 2, 3, 4])
def test_connectors_one_to_four(connector: int) -> None:
    info = parse_topic(f"cmnd/{DEVICE}/sensor-mode/{connector}/sensor-3")
    assert info.connector == connector
    assert type(info.connector) is int


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("", "expected 5 levels <type>/f2-<mac>/<mode>/<connector>/<component>, got 1"),
        (f"stat/{DEVICE}/access-control-mode/1", "got 4"),
        (f"stat/{DEVICE}/access-control-mode/1/strike-1/", "got 6"),
        (f"/stat/{DEVICE}/access-control-mode/1/strike-1", "got 6"),
        (f"stat/{DEVICE}/access-control-mode/1/strike-1/extra", "got 6"),
        (f"status/{DEVICE}/access-control-mode/1/strike-1", "type 'status' is not one of cmnd, stat, tele"),
        (f"STAT/{DEVICE}/access-control-mode/1/strike-1", "type 'STAT'"),
        (
            "stat/f2-E4FD45F654BE/access-control-mode/1/strike-1",
            "device 'f2-E4FD45F654BE' is not f2- followed by 12 lowercase hex digits",
        ),
        ("stat/e4fd45f654be/access-control-mode/1/strike-1", "device 'e4fd45f654be'"),
        ("stat/f2-e4fd45f654b/access-control-mode/1/strike-1", "device 'f2-e4fd45f654b'"),
        ("stat/f2-e4fd45f654bee/access-control-mode/1/strike-1", "device 'f2-e4fd45f654bee'"),
        ("stat/f2-e4fd45f654bg/access-control-mode/1/strike-1", "device 'f2-e4fd45f654bg'"),
        ("stat/f2-e4:fd:45:f6:54:be/access-control-mode/1/strike-1", "device 'f2-e4:fd:45:f6:54:be'"),
        (
            f"stat/{DEVICE}/door-mode/1/strike-1",
            "mode 'door-mode' is not one of access-control-mode, alarm-mode, sensor-mode",
        ),
        (f"stat/{DEVICE}/Alarm-mode/1/strike-1", "mode 'Alarm-mode'"),
        (f"stat/{DEVICE}/alarm-mode/0/siren-1", "connector '0' is not a number from 1 to 4"),
        (f"stat/{DEVICE}/alarm-mode/5/siren-1", "connector '5' is not a number from 1 to 4"),
        (f"stat/{DEVICE}/alarm-mode/-1/siren-1", "connector '-1'"),
        (f"stat/{DEVICE}/alarm-mode/x/siren-1", "connector 'x'"),
        (f"stat/{DEVICE}/alarm-mode//siren-1", "connector ''"),
        (f"stat/{DEVICE}/alarm-mode/ 1/siren-1", "connector ' 1'"),
        (
            f"stat/{DEVICE}/alarm-mode/1/siren",
            "component 'siren' is not one of strike-N, door-sensors, reader-N, exit-buttons, "
            "siren-N, motion-sensor-N, sensor-N",
        ),
        (f"stat/{DEVICE}/alarm-mode/1/siren-0", "component 'siren-0'"),
        (f"stat/{DEVICE}/alarm-mode/1/siren-01", "component 'siren-01'"),
        (f"stat/{DEVICE}/alarm-mode/1/siren-100", "component 'siren-100'"),
        (f"stat/{DEVICE}/alarm-mode/1/siren-1a", "component 'siren-1a'"),
        (f"stat/{DEVICE}/alarm-mode/1/Siren-1", "component 'Siren-1'"),
        (f"stat/{DEVICE}/alarm-mode/1/lamp-1", "component 'lamp-1'"),
        (f"stat/{DEVICE}/alarm-mode/1/door-sensors-1", "component 'door-sensors-1'"),
        (f"stat/{DEVICE}/alarm-mode/1/exit-buttons-2", "component 'exit-buttons-2'"),
        (f"stat/{DEVICE}/alarm-mode/1/door-sensor", "component 'door-sensor'"),
        (f"stat/{DEVICE}/alarm-mode/1/", "component ''"),
        (f"stat/{DEVICE}/alarm-mode/1/sensor-3\n", "component 'sensor-3\\n'"),
    ],
)
def test_bad_topics_name_the_bad_part(topic: str, detail: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_topic(topic)
    assert caught.value.reason == "bad_topic"
    assert caught.value.topic == topic
    assert detail in caught.value.detail
    assert str(caught.value) == f"bad_topic: {caught.value.detail}"


@pytest.mark.parametrize("connector", ["²", "١", "𝟙"])
def test_connector_with_non_ascii_digits_is_bad_topic(connector: str) -> None:
    topic = f"stat/{DEVICE}/alarm-mode/{connector}/siren-1"
    with pytest.raises(BadMessage) as caught:
        parse_topic(topic)
    assert caught.value.reason == "bad_topic"


@PROPERTY
@given(st.text())
def test_parse_topic_raises_only_bad_message_for_any_text(topic: str) -> None:
    try:
        info = parse_topic(topic)
    except BadMessage as exc:
        assert exc.reason == "bad_topic"
        assert exc.topic == topic
    else:
        assert info.topic == topic


def _level(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, st.text(max_size=20))


@PROPERTY
@given(
    _level(st.sampled_from(sorted(MESSAGE_TYPES))),
    _level(st.builds(lambda b: "f2-" + b.hex(), st.binary(min_size=6, max_size=6))),
    _level(st.sampled_from(sorted(MODES))),
    _level(st.integers(0, 6).map(str)),
    _level(st.sampled_from([c for c, _, _ in COMPONENTS])),
)
def test_parse_topic_near_valid_topics_raise_only_bad_message(
    message_type: str, device: str, mode: str, connector: str, component: str
) -> None:
    topic = "/".join((message_type, device, mode, connector, component))
    try:
        info = parse_topic(topic)
    except BadMessage as exc:
        assert exc.reason == "bad_topic"
    else:
        assert (info.message_type, info.device_id, info.mode, str(info.connector), info.component) == (
            message_type,
            device,
            mode,
            connector,
            component,
        )


@PROPERTY
@given(
    st.sampled_from(sorted(MESSAGE_TYPES)),
    st.binary(min_size=6, max_size=6),
    st.sampled_from(sorted(MODES)),
    st.integers(1, 4),
    st.sampled_from(sorted(COMPONENT_TYPES)),
    st.integers(1, 99),
)
def test_well_formed_topics_round_trip(
    message_type: str, mac: bytes, mode: str, connector: int, component_type: str, number: int
) -> None:
    unnumbered = component_type in ("door-sensors", "exit-buttons")
    component = component_type if unnumbered else f"{component_type}-{number}"
    info = parse_topic(f"{message_type}/f2-{mac.hex()}/{mode}/{connector}/{component}")
    assert info.device_id == f"f2-{mac.hex()}"
    assert info.connector == connector
    assert info.component_type == component_type
    assert info.component_number == (None if unnumbered else str(number))


@pytest.mark.parametrize(
    "spelling",
    [
        "e4:fd:45:f6:54:be",
        "E4:FD:45:F6:54:BE",
        "E4-FD-45-F6-54-BE",
        "e4-fd-45-f6-54-be",
        "e4fd.45f6.54be",
        "e4fd45f654be",
        "E4FD45F654BE",
        "f2-e4fd45f654be",
        "F2-E4FD45F654BE",
        "f2-e4:fd:45:f6:54:be",
        "  e4:fd:45:f6:54:be\n",
    ],
)
def test_canonical_device_id_accepts_usual_spellings(spelling: str) -> None:
    assert canonical_device_id(spelling) == "f2-e4fd45f654be"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "f2-",
        "e4:fd:45:f6:54",
        "e4:fd:45:f6:54:be:00",
        "g4:fd:45:f6:54:be",
        "e4fd45f654b",
        "not a mac",
        "e4_fd_45_f6_54_be",
    ],
)
def test_canonical_device_id_refuses_non_macs_helpfully(text: str) -> None:
    with pytest.raises(ValueError, match="is not a MAC address") as caught:
        canonical_device_id(text)
    message = str(caught.value)
    assert message.startswith(repr(text))
    assert "expected 12 hex digits, e.g. e4:fd:45:f6:54:be or f2-e4fd45f654be" in message


_SPELLINGS = [
    lambda h: ":".join(h[i : i + 2] for i in range(0, 12, 2)),
    lambda h: "-".join(h[i : i + 2] for i in range(0, 12, 2)).upper(),
    lambda h: ".".join(h[i : i + 4] for i in range(0, 12, 4)),
    lambda h: h,
    lambda h: h.upper(),
    lambda h: "f2-" + h,
    lambda h: "F2-" + h.upper(),
]


@PROPERTY
@given(st.binary(min_size=6, max_size=6), st.sampled_from(range(len(_SPELLINGS))))
def test_canonical_device_id_round_trips_any_mac(mac: bytes, spelling: int) -> None:
    text = _SPELLINGS[spelling](mac.hex())
    device = canonical_device_id(text)
    assert device == "f2-" + mac.hex()
    assert canonical_device_id(device) == device
    assert parse_topic(f"stat/{device}/alarm-mode/1/siren-1").device_id == device

"""MQTT topic parsing and device ids: pure functions, no I/O."""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple, get_args

from f2stream.errors import BadMessage

__all__ = [
    "COMPONENT_TYPES",
    "MESSAGE_TYPES",
    "MODES",
    "ComponentType",
    "MessageType",
    "Mode",
    "TopicInfo",
    "canonical_device_id",
    "parse_topic",
]

MessageType = Literal["cmnd", "stat", "tele"]
Mode = Literal["access-control-mode", "alarm-mode", "sensor-mode"]
ComponentType = Literal["strike", "door-sensors", "reader", "exit-buttons", "siren", "motion-sensor", "sensor"]
MESSAGE_TYPES: Final = frozenset(get_args(MessageType))
MODES: Final = frozenset(get_args(Mode))
COMPONENT_TYPES: Final = frozenset(get_args(ComponentType))
#: Components that exist once per connector and carry no number.
_UNNUMBERED: Final = frozenset({"door-sensors", "exit-buttons"})
MAX_CONNECTOR: Final = 4
_CONNECTORS: Final = frozenset(str(n) for n in range(1, MAX_CONNECTOR + 1))

_DEVICE_RE: Final = re.compile(r"f2-[0-9a-f]{12}")
_MAC_SEPARATORS: Final = re.compile(r"[:\-.\s]")
_COMPONENT_RE: Final = re.compile(r"([a-z\-]+?)-([1-9][0-9]?)")


class TopicInfo(NamedTuple):
    """The parts of `<type>/f2-<mac>/<mode>/<connector>/<component>`.

    A named tuple, immutable as a frozen dataclass is: made for every message, it costs a quarter of one.
    """

    topic: str
    message_type: MessageType
    device_id: str
    mode: Mode
    connector: int
    component: str
    component_type: ComponentType
    component_number: str | None


def canonical_device_id(mac_or_id: str) -> str:
    """Return the canonical device id `f2-<12 lowercase hex digits>`.

    Accepts the usual MAC spellings (`e4:fd:45:f6:54:be`, `E4-FD-45-F6-54-BE`,
    `e4fd.45f6.54be`, `e4fd45f654be`) and device ids (`f2-e4fd45f654be`).

    Raises:
        ValueError: the text is not a MAC address; the message says what is expected.
    """
    text = mac_or_id.strip().lower()
    if text.startswith("f2-"):
        text = text[3:]
    digits = _MAC_SEPARATORS.sub("", text)
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(
            f"{mac_or_id!r} is not a MAC address: expected 12 hex digits, e.g. e4:fd:45:f6:54:be or f2-e4fd45f654be"
        )
    return "f2-" + digits


def parse_topic(topic: str) -> TopicInfo:
    """Split an F2 telemetry topic into its parts.

    Raises:
        BadMessage: reason `bad_topic`, with what part is wrong.
    """
    parts = topic.split("/")
    if len(parts) != 5:
        raise _bad(topic, f"expected 5 levels <type>/f2-<mac>/<mode>/<connector>/<component>, got {len(parts)}")
    message_type, device_id, mode, connector_text, component = parts
    if message_type not in MESSAGE_TYPES:
        raise _bad(topic, f"type {message_type!r} is not one of cmnd, stat, tele")
    if not _DEVICE_RE.fullmatch(device_id):
        raise _bad(topic, f"device {device_id!r} is not f2- followed by 12 lowercase hex digits")
    if mode not in MODES:
        raise _bad(topic, f"mode {mode!r} is not one of {', '.join(sorted(MODES))}")
    if connector_text not in _CONNECTORS:
        raise _bad(topic, f"connector {connector_text!r} is not a number from 1 to {MAX_CONNECTOR}")
    component_type, number = _split_component(topic, component)
    return TopicInfo(
        topic=topic,
        message_type=message_type,  # type: ignore[arg-type]  # checked above
        device_id=device_id,
        mode=mode,  # type: ignore[arg-type]  # checked above
        connector=int(connector_text),
        component=component,
        component_type=component_type,
        component_number=number,
    )


def _split_component(topic: str, component: str) -> tuple[ComponentType, str | None]:
    if component in _UNNUMBERED:
        return component, None  # type: ignore[return-value]  # member of _UNNUMBERED
    match = _COMPONENT_RE.fullmatch(component)
    if match is None or match[1] not in COMPONENT_TYPES or match[1] in _UNNUMBERED:
        raise _bad(
            topic,
            f"component {component!r} is not one of strike-N, door-sensors, reader-N, "
            "exit-buttons, siren-N, motion-sensor-N, sensor-N",
        )
    return match[1], match[2]  # type: ignore[return-value]  # checked above


def _bad(topic: str, detail: str) -> BadMessage:
    return BadMessage("bad_topic", detail, topic=topic)

"""Turn one raw MQTT message into measurements: the decode agent's pure core.

Rules (docs/encodings.md, pinned by tests):

* The parameters of the topic's component are applied one by one. Each reads
  its `field`, by default the component's main field (strike and siren:
  `state`; reader: `card_id`; exit-buttons: `button_pressed`;
  motion-sensor: `motion_detected`; sensor: `data`), and yields a data point
  named `data_point`, by default the field's name. `boolean_map` reads every
  field holding a boolean word that no other parameter read.
* Every other field is kept as a data point of its own: numbers and booleans
  as numeric values, strings as text values; nested values and nulls are
  ignored. Nothing the device sent is dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

from f2stream.codec.model import DeviceCodec, Parameter
from f2stream.codec.values import (
    DEFAULT_FALSE_WORDS,
    DEFAULT_TRUE_WORDS,
    ModbusFrame,
    check_field_name,
    check_number,
    check_text,
    device_time,
    parse_json_object,
    parse_modbus_frame,
    to_boolean,
)
from f2stream.errors import BadMessage
from f2stream.mqtt_topics import TopicInfo, parse_topic
from f2stream.records import Measurement, Point

__all__ = ["MAIN_FIELDS", "CodecSource", "DecodedMessage", "decode_message", "decode_points", "decode_with"]

#: The field a parameter reads unless it names another (None: `boolean_map` reads every boolean field).
MAIN_FIELDS: Final[dict[str, str | None]] = {
    "strike": "state",
    "door-sensors": None,
    "reader": "card_id",
    "exit-buttons": "button_pressed",
    "siren": "state",
    "motion-sensor": "motion_detected",
    "sensor": "data",
}
_TIMESTAMP: Final = "timestamp"


class CodecSource(Protocol):
    """Where the decoder finds a device's parameters: a :class:`ParameterIndex` or the parameter table."""

    def codec(self, device_id: str) -> DeviceCodec | None:
        """The device's codec, or None for a device without parameters."""


class DecodedMessage(NamedTuple):
    """One message decoded: what its rows share, and one tuple per value (no object per value).

    A named tuple, as :class:`~f2stream.mqtt_topics.TopicInfo`: made for every message.
    """

    info: TopicInfo
    time: str
    param_version: int | None
    points: list[Point]

    def measurements(self, received_at: str, raw: tuple[int, int] | None = None) -> list[Measurement]:
        """The message's rows (see :func:`decode_with`)."""
        info, time, version = self.info, self.time, self.param_version
        raw_partition, raw_offset = raw or (None, None)
        return [
            Measurement(time, info.device_id, info.mode, info.connector, info.component, name, value, text, unit,
                        info.topic, received_at, version, raw_partition, raw_offset)
            for name, value, text, unit in self.points
        ]  # fmt: skip


def decode_message(
    topic: str, payload: bytes, received_at: str, params: CodecSource, raw: tuple[int, int] | None = None
) -> list[Measurement]:
    """Decode one MQTT message with the parameters of its device (see :func:`decode_with`).

    Raises:
        BadMessage: the message cannot be decoded; `reason` says why, `topic` where.
    """
    return decode_points(topic, payload, params).measurements(received_at, raw)


def decode_points(topic: str, payload: bytes, params: CodecSource) -> DecodedMessage:
    """Decode one MQTT message with the parameters of its device into points, not measurements.

    Raises:
        BadMessage: the message cannot be decoded; `reason` says why, `topic` where.
    """
    info = parse_topic(topic)
    codec = params.codec(info.device_id)
    if codec is None:
        raise BadMessage("unknown_device", f"device {info.device_id} has no parameters", topic=topic)
    return _decode(info, payload, codec)


def decode_with(
    info: TopicInfo, payload: bytes, received_at: str, codec: DeviceCodec, raw: tuple[int, int] | None = None
) -> list[Measurement]:
    """Decode one message of a parsed topic with its device's codec: one measurement per value.

    Args:
        info: the parsed MQTT topic.
        payload: the message body as received.
        received_at: when the ingest worker received it (ISO 8601, UTC).
        codec: the device's parameters.
        raw: the (partition, offset) of the message's `raw_iot_data` record: its rows' provenance.

    Raises:
        BadMessage: the message cannot be decoded; `reason` says why, `topic` where.
    """
    return _decode(info, payload, codec).measurements(received_at, raw)


def _decode(info: TopicInfo, payload: bytes, codec: DeviceCodec) -> DecodedMessage:
    try:
        parameters = codec.for_component(info)
        body = parse_json_object(payload)
        time = device_time(body.get(_TIMESTAMP))
        points = _decode_fields(info, parameters, body)
    except BadMessage as exc:
        exc.topic = info.topic
        raise
    return DecodedMessage(info, time, codec.version, points)


def _decode_fields(info: TopicInfo, parameters: Sequence[Parameter], body: dict[str, Any]) -> list[Point]:
    main = MAIN_FIELDS[info.component_type] or "state"
    points: list[Point] = []
    read: set[str] = {_TIMESTAMP}
    frames: dict[str, ModbusFrame] = {}
    maps = []
    for parameter in parameters:
        if parameter.encoding == "boolean_map":
            maps.append(parameter)
            continue
        field = parameter.field or main
        if field not in body:
            raise BadMessage(
                "bad_payload", f"field {field!r} is missing for {info.component_type} ({parameter.encoding})"
            )
        points.append(_decode_one(parameter, field, body[field], frames))
        read.add(field)
    for parameter in maps:
        points.extend(_boolean_map(parameter, body, read))
    for field, value in body.items():
        if field not in read:
            point = _passthrough(field, value)
            if point is not None:
                points.append(point)
    return points


def _decode_one(parameter: Parameter, field: str, value: object, frames: dict[str, ModbusFrame]) -> Point:
    name = parameter.data_point or field
    if parameter.encoding == "boolean":
        flag = to_boolean(value, *_words(parameter))
        text = check_text(value, field) if isinstance(value, str) else None
        return name, 1.0 if flag else 0.0, text, parameter.unit
    if parameter.encoding == "hex_to_float":
        frame = frames.get(field)
        if frame is None:
            frame = frames[field] = parse_modbus_frame(value)
        number = frame.value(
            parameter.byte_offset or 0, parameter.data_type or "int16",
            parameter.byte_order or "big", parameter.word_order or "big",
        )  # fmt: skip
        return name, _scaled(parameter, number), None, parameter.unit
    if parameter.encoding == "number":
        return name, _scaled(parameter, check_number(value, field)), None, parameter.unit
    return name, None, check_text(value, field), parameter.unit  # raw_string


def _scaled(parameter: Parameter, number: float) -> float:
    scaled = number * parameter.scale
    if not math.isfinite(scaled):
        raise BadMessage("bad_value", f"{number} × scale {parameter.scale} is not a finite number")
    return scaled if parameter.decimals is None else round(scaled, parameter.decimals)


def _words(parameter: Parameter) -> tuple[frozenset[str], frozenset[str]]:
    return parameter.true_words or DEFAULT_TRUE_WORDS, parameter.false_words or DEFAULT_FALSE_WORDS


def _boolean_map(parameter: Parameter, body: dict[str, Any], read: set[str]) -> list[Point]:
    points: list[Point] = []
    true_words, false_words = _words(parameter)
    for field, value in body.items():
        if field in read:
            continue
        try:
            flag = to_boolean(value, true_words, false_words)
        except BadMessage:
            continue
        text = check_text(value, field) if isinstance(value, str) else None
        points.append((check_field_name(field), 1.0 if flag else 0.0, text, parameter.unit))
        read.add(field)
    if not points:
        raise BadMessage("bad_value", "boolean_map found no field holding a boolean or a boolean word")
    return points


def _passthrough(field: str, value: object) -> Point | None:
    if value is None or isinstance(value, dict | list):
        return None
    check_field_name(field)
    if isinstance(value, bool):
        return field, 1.0 if value else 0.0, None, None
    if isinstance(value, int | float):
        return field, check_number(value, field), None, None
    return field, None, check_text(value, field), None

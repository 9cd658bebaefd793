"""Turn one raw MQTT message into measurements: the decode agent's pure core.

Rules (written down in docs/encodings.md and pinned by tests):

* The parameter for the topic's component picks the encoding of its main
  field (strike and siren: `state`; reader: `card_id`; exit-buttons:
  `button_pressed`; motion-sensor: `motion_detected`; sensor: `data`).
  `boolean_map` reads every field that holds a boolean word.
* Every other field is kept as a data point of its own: numbers and booleans
  as numeric values, strings as text values; nested values and nulls are
  ignored. Nothing the device sent is dropped silently.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from f2stream.codecs import (
    check_field_name,
    check_number,
    check_text,
    parse_json_object,
    parse_modbus_frame,
    parse_timestamp,
    to_boolean,
)
from f2stream.errors import BadMessage
from f2stream.parameters import Parameter, ParameterIndex
from f2stream.records import Measurement
from f2stream.topics import TopicInfo, parse_topic

__all__ = ["MAIN_FIELDS", "decode_message", "format_time"]

#: The field a component's parameter decodes (None: `boolean_map` reads every boolean field).
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

_Point = tuple[str, float | None, str | None, str | None]  # data point, value, text, unit


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds: the one time format on the topics."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def decode_message(topic: str, payload: bytes, received_at: str, params: ParameterIndex) -> list[Measurement]:
    """Decode one MQTT message into one measurement per value.

    Args:
        topic: the MQTT topic it was published on.
        payload: the message body as received.
        received_at: when the ingest worker received it (ISO 8601, UTC).
        params: the device parameters.

    Raises:
        BadMessage: the message cannot be decoded; `reason` says why, `topic` where.
    """
    info = parse_topic(topic)
    try:
        parameter = params.lookup(info)
        body = parse_json_object(payload)
        time = format_time(parse_timestamp(body.get(_TIMESTAMP)))
        points = _decode_fields(info, parameter, body)
    except BadMessage as exc:
        exc.topic = topic
        raise
    return [
        Measurement(
            time=time,
            device_id=info.device_id,
            mode=info.mode,
            connector=info.connector,
            component=info.component,
            data_point=name,
            value=value,
            text_value=text,
            unit=unit,
            source_topic=topic,
            received_at=received_at,
        )
        for name, value, text, unit in points
    ]


def _decode_fields(info: TopicInfo, parameter: Parameter, body: dict[str, Any]) -> list[_Point]:
    main = MAIN_FIELDS[info.component_type]
    if parameter.encoding == "boolean_map":
        points = _boolean_map(parameter, body)
        decoded = {name for name, *_ in points}
    else:
        field = main or "state"
        if field not in body:
            raise BadMessage(
                "bad_payload", f"field {field!r} is missing for {info.component_type} ({parameter.encoding})"
            )
        points = [_decode_main(parameter, field, body[field])]
        decoded = {field}
    for field, value in body.items():
        if field != _TIMESTAMP and field not in decoded:
            point = _passthrough(field, value)
            if point is not None:
                points.append(point)
    return points


def _decode_main(parameter: Parameter, field: str, value: object) -> _Point:
    if parameter.encoding == "boolean":
        text = check_text(value, field) if isinstance(value, str) else None
        return field, 1.0 if to_boolean(value) else 0.0, text, parameter.unit
    if parameter.encoding == "hex_to_float":
        frame = parse_modbus_frame(value)
        return field, frame.register(0) * parameter.scale, None, parameter.unit
    return field, None, check_text(value, field), parameter.unit  # raw_string


def _boolean_map(parameter: Parameter, body: dict[str, Any]) -> list[_Point]:
    points: list[_Point] = []
    for field, value in body.items():
        if field == _TIMESTAMP:
            continue
        try:
            flag = to_boolean(value)
        except BadMessage:
            continue
        text = check_text(value, field) if isinstance(value, str) else None
        points.append((check_field_name(field), 1.0 if flag else 0.0, text, parameter.unit))
    if not points:
        raise BadMessage("bad_value", "boolean_map found no field holding a boolean or a boolean word")
    return points


def _passthrough(field: str, value: object) -> _Point | None:
    if value is None or isinstance(value, dict | list):
        return None
    check_field_name(field)
    if isinstance(value, bool):
        return field, 1.0 if value else 0.0, None, None
    if isinstance(value, int | float):
        return field, check_number(value, field), None, None
    return field, None, check_text(value, field), None

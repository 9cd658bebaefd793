"""Records on the Kafka topics, and their encoding.

`decoded_iot_data` carries one JSON object per decoded MQTT message: the
message's identity once, then its data points. A measurement (one row of
`iot_measurements`) is a plain dataclass: the decoder makes millions of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import faust
import orjson

from f2stream.errors import BadMessage

__all__ = ["Measurement", "ParameterSet", "Point", "Rows", "encode_decoded", "encode_points", "format_time"]

#: One decoded value of a message: data point, value, text value, unit (what a message's rows do not share).
Point = tuple[str, float | None, str | None, str | None]


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds: the one time format on the topics."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded value: a row of `iot_measurements`.

    Times are ISO 8601 strings in UTC with microseconds, so that they survive
    JSON exactly and a re-delivered message yields the same primary key.
    """

    time: str
    device_id: str
    mode: str
    connector: int
    component: str
    data_point: str
    value: float | None
    text_value: str | None
    unit: str | None
    source_topic: str
    received_at: str
    param_version: int | None = None
    # Provenance: the raw_iot_data record decoded (None for rows decoded before it was kept).
    raw_partition: int | None = None
    raw_offset: int | None = None

    def asdict(self) -> dict[str, Any]:
        """The measurement as a JSON-friendly mapping."""
        return {name: getattr(self, name) for name in self.__slots__}


# The fields a decoded record holds once for all its points.
_MESSAGE_FIELDS = (
    "time",
    "device_id",
    "mode",
    "connector",
    "component",
    "source_topic",
    "received_at",
    "param_version",
)
_POINT_FIELDS = ("data_point", "value", "text_value", "unit")
_message_fields = itemgetter(*_MESSAGE_FIELDS)
_point_fields = itemgetter(*_POINT_FIELDS)


def encode_decoded(measurements: Sequence[Measurement]) -> bytes:
    """One `decoded_iot_data` value for the measurements of one MQTT message (all share its identity)."""
    first = measurements[0]
    return encode_points(
        first.time, first.device_id, first.mode, first.connector, first.component, first.source_topic,
        first.received_at, first.param_version, first.raw_partition, first.raw_offset,
        [(m.data_point, m.value, m.text_value, m.unit) for m in measurements],
    )  # fmt: skip


def encode_points(
    time: str,
    device_id: str,
    mode: str,
    connector: int,
    component: str,
    source_topic: str,
    received_at: str,
    param_version: int | None,
    raw_partition: int | None,
    raw_offset: int | None,
    points: Sequence[Point],
) -> bytes:
    """One `decoded_iot_data` value from a message's identity and its points: no :class:`Measurement` per point."""
    return orjson.dumps(
        {
            "time": time,
            "device_id": device_id,
            "mode": mode,
            "connector": connector,
            "component": component,
            "source_topic": source_topic,
            "received_at": received_at,
            "param_version": param_version,
            "raw_partition": raw_partition,
            "raw_offset": raw_offset,
            "points": [{"data_point": d, "value": v, "text_value": t, "unit": u} for d, v, t, u in points],
        }
    )


class Rows:
    """Measurements column by column (in :class:`Measurement`'s field order): what the sink writes at once.

    The sink turns thousands of decoded records into one statement's
    columns; building them straight from the JSON costs a fraction of
    building a :class:`Measurement` per row first. Each row is kept as two
    tuples, what its message's rows share and its point; the columns are
    made from them in one go when they are asked for.
    """

    __slots__ = ("_columns", "_points", "_shared")

    def __init__(self) -> None:
        # Per row: (time … component, source_topic … raw_offset), the same tuple for a message's rows.
        self._shared: list[tuple[Any, ...]] = []
        self._points: list[tuple[Any, ...]] = []  # per row: (data_point, value, text_value, unit)
        self._columns: tuple[list[Any], ...] | None = None

    @classmethod
    def of(cls, measurements: Sequence[Measurement]) -> Rows:
        """Rows holding `measurements`."""
        rows = cls()
        for m in measurements:
            rows._shared.append((m.time, m.device_id, m.mode, m.connector, m.component, m.source_topic, m.received_at,
                                 m.param_version, m.raw_partition, m.raw_offset))  # fmt: skip
            rows._points.append((m.data_point, m.value, m.text_value, m.unit))
        return rows

    @property
    def columns(self) -> tuple[list[Any], ...]:
        """One list per field of :class:`Measurement`, in its order; made again only after an add."""
        if self._columns is None:
            if self._points:
                shared, points = list(zip(*self._shared, strict=True)), zip(*self._points, strict=True)
                self._columns = tuple(list(column) for column in (*shared[:5], *points, *shared[5:]))
            else:
                self._columns = tuple([] for _ in Measurement.__slots__)
        return self._columns

    def add_decoded(self, value: bytes | None) -> int:
        """Append the points of one `decoded_iot_data` value; return how many. All or nothing.

        Raises:
            BadMessage: `bad_record`: the value is not such a record.
        """
        try:
            record = orjson.loads(value or b"")
            # Provenance: decoded records written before it was kept lack it; it reads as None.
            shared = (*_message_fields(record), record.get("raw_partition"), record.get("raw_offset"))
            points = list(map(_point_fields, record["points"]))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadMessage("bad_record", f"not a decoded_iot_data record ({exc.__class__.__name__}: {exc})") from exc
        count = len(points)
        if count:
            self._shared.extend([shared] * count)
            self._points.extend(points)
            self._columns = None
        return count

    def row(self, index: int) -> Measurement:
        """One row as a measurement."""
        shared = self._shared[index]
        return Measurement(*shared[:5], *self._points[index], *shared[5:])

    def __len__(self) -> int:
        return len(self._points)


class ParameterSet(faust.Record, serializer="json", include_metadata=False):
    """A device's effective parameters at one version: a record of `device_parameters`.

    `parameters` holds rows as :meth:`f2stream.codec.model.Parameter.as_row`
    writes them; an empty list means the device has no parameters any more.
    """

    device_id: str
    version: int
    parameters: list  # type: ignore[type-arg]  # faust cannot read list[dict[str, Any]]

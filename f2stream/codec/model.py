"""Device parameters: how each device's components are decoded.

A :class:`Parameter` is one row of `device_parameters` (or of a template).
:func:`effective_parameters` merges a device's template with its own rows,
:class:`DeviceCodec` holds one device's set compiled for lookups from memory,
and :class:`ParameterIndex` maps devices to codecs. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal, get_args

from f2stream.errors import BadMessage
from f2stream.mqtt_topics import COMPONENT_TYPES, MODES, TopicInfo

__all__ = [
    "DATA_TYPES",
    "ENCODINGS",
    "DataType",
    "DeviceCodec",
    "Encoding",
    "Parameter",
    "ParameterIndex",
    "effective_parameters",
]

Encoding = Literal["boolean", "boolean_map", "hex_to_float", "raw_string", "number"]
ENCODINGS: Final = frozenset(get_args(Encoding))
DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
DATA_TYPES: Final = frozenset(get_args(DataType))
Order = Literal["big", "little"]
_ORDERS: Final = frozenset(get_args(Order))

#: The columns of a parameter row beyond the seed's seven, all optional.
OPTIONAL_COLUMNS: Final = (
    "data_point", "field", "byte_offset", "data_type", "byte_order", "word_order", "decimals",
    "true_words", "false_words",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter row: the seed's seven columns, then the optional codec columns."""

    device_id: str
    mode: str
    component_type: str
    component_number: str | None
    encoding: Encoding
    unit: str | None
    scale: float
    data_point: str | None = None
    field: str | None = None
    byte_offset: int | None = None
    data_type: DataType | None = None
    byte_order: Order | None = None
    word_order: Order | None = None
    decimals: int | None = None
    true_words: frozenset[str] | None = None
    false_words: frozenset[str] | None = None

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        """What makes a row unique within a device: mode, component, number, data point."""
        return self.mode, self.component_type, self.component_number, self.data_point or ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Parameter:
        """Build a parameter from a database row or a record, checking every field.

        Raises:
            ValueError: a field is invalid; the message names it.
        """
        _one_of(row["encoding"], ENCODINGS, "encoding")
        _one_of(row["mode"], MODES, "mode")
        _one_of(row["component_type"], COMPONENT_TYPES, "component type")
        optional = {name: row.get(name) for name in OPTIONAL_COLUMNS}
        if optional["data_type"] is not None:
            _one_of(optional["data_type"], DATA_TYPES, "data type")
        for name in ("byte_order", "word_order"):
            if optional[name] is not None:
                _one_of(optional[name], _ORDERS, name.replace("_", " "))
        for name in ("true_words", "false_words"):
            words = optional[name]
            if words is not None:
                optional[name] = frozenset(str(w).strip().lower() for w in words)
        number = row["component_number"]
        scale = row.get("scale_factor", row.get("scale"))
        if scale is not None and not math.isfinite(float(scale)):
            raise ValueError(f"scale factor {scale!r} is not a finite number")
        offset = optional["byte_offset"]
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 250):
            raise ValueError(f"byte offset {offset!r} is not a whole number from 0 to 250")
        decimals = optional["decimals"]
        if decimals is not None and (
            not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 9
        ):
            raise ValueError(f"decimals {decimals!r} is not a whole number from 0 to 9")
        return cls(
            device_id=str(row["device_id"]),
            mode=str(row["mode"]),
            component_type=str(row["component_type"]),
            component_number=None if number is None else str(number),
            encoding=row["encoding"],
            unit=None if row["unit"] is None else str(row["unit"]),
            scale=1.0 if scale is None else float(scale),
            **optional,
        )

    def as_row(self) -> dict[str, Any]:
        """The parameter as a JSON-friendly mapping (`from_row` reads it back)."""
        row: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        row["scale_factor"] = row.pop("scale")
        for name in ("true_words", "false_words"):
            if row[name] is not None:
                row[name] = sorted(row[name])
        return row


def _one_of(value: object, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(sorted(allowed))}")


def effective_parameters(device_id: str, own: Iterable[Parameter], template: Iterable[Parameter]) -> list[Parameter]:
    """A device's parameters: its template's rows, each overridden by the device's own row with the same key."""
    merged = {p.key: replace(p, device_id=device_id) for p in template}
    merged.update((p.key, p) for p in own)
    return list(merged.values())


class DeviceCodec:
    """One device's parameters at one version, indexed by component."""

    __slots__ = ("_by_component", "device_id", "parameters", "version")

    def __init__(self, device_id: str, version: int | None, parameters: Iterable[Parameter]) -> None:
        self.device_id = device_id
        self.version = version
        #: The parameters as given, in their order.
        self.parameters = tuple(parameters)
        self._by_component: dict[tuple[str, str], dict[str | None, dict[str, Parameter]]] = {}
        for parameter in self.parameters:
            numbers = self._by_component.setdefault((parameter.mode, parameter.component_type), {})
            numbers.setdefault(parameter.component_number, {})[parameter.data_point or ""] = parameter

    def for_component(self, info: TopicInfo) -> list[Parameter]:
        """The parameters of a topic's component: rows for all numbers, overridden by its own number's.

        Raises:
            BadMessage: `no_parameter`.
        """
        numbers = self._by_component.get((info.mode, info.component_type))
        if numbers is not None:
            merged = dict(numbers.get(None, {}))
            if info.component_number is not None:
                merged.update(numbers.get(info.component_number, {}))
            if merged:
                return list(merged.values())
        raise BadMessage(
            "no_parameter",
            f"device {info.device_id} has no parameter for {info.mode} {info.component_type}"
            + ("" if info.component_number is None else f" {info.component_number}"),
            topic=info.topic,
        )


class ParameterIndex:
    """Codecs by device: what a worker decodes from, held in memory."""

    __slots__ = ("_codecs",)

    def __init__(self, parameters: Iterable[Parameter] = (), versions: Mapping[str, int] | None = None) -> None:
        by_device: dict[str, list[Parameter]] = {}
        for parameter in parameters:
            by_device.setdefault(parameter.device_id, []).append(parameter)
        versions = versions or {}
        self._codecs = {d: DeviceCodec(d, versions.get(d), ps) for d, ps in by_device.items()}

    def __len__(self) -> int:
        """How many devices have parameters."""
        return len(self._codecs)

    def codec(self, device_id: str) -> DeviceCodec | None:
        """The device's codec, or None for a device without parameters."""
        return self._codecs.get(device_id)

    def put(self, codec: DeviceCodec) -> None:
        """Hold `codec` for its device, in place of the one before."""
        self._codecs[codec.device_id] = codec

    def remove(self, device_id: str) -> None:
        """Forget the device's parameters (none is fine)."""
        self._codecs.pop(device_id, None)

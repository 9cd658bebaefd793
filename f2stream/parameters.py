"""Device parameters: how each device's components are decoded.

The index is built once from the rows of `device_parameters` and answers
lookups from memory, so decoding never waits on the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from f2stream.errors import BadMessage
from f2stream.topics import COMPONENT_TYPES, MODES, TopicInfo

__all__ = ["ENCODINGS", "Encoding", "Parameter", "ParameterIndex"]

Encoding = Literal["boolean", "boolean_map", "hex_to_float", "raw_string"]
ENCODINGS: Final = frozenset(get_args(Encoding))


@dataclass(frozen=True, slots=True)
class Parameter:
    """One row of `device_parameters` (the seed's seven columns)."""

    device_id: str
    mode: str
    component_type: str
    component_number: str | None
    encoding: Encoding
    unit: str | None
    scale: float

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> Parameter:
        """Build a parameter from a database row, checking every field.

        Raises:
            ValueError: a field is invalid; the message names it.
        """
        encoding = row["encoding"]
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r} is not one of {', '.join(sorted(ENCODINGS))}")
        if row["mode"] not in MODES:
            raise ValueError(f"mode {row['mode']!r} is not one of {', '.join(sorted(MODES))}")
        if row["component_type"] not in COMPONENT_TYPES:
            raise ValueError(
                f"component type {row['component_type']!r} is not one of {', '.join(sorted(COMPONENT_TYPES))}"
            )
        number = row["component_number"]
        scale = row["scale_factor"]
        return cls(
            device_id=str(row["device_id"]),
            mode=str(row["mode"]),
            component_type=str(row["component_type"]),
            component_number=None if number is None else str(number),
            encoding=encoding,  # type: ignore[arg-type]  # checked above
            unit=None if row["unit"] is None else str(row["unit"]),
            scale=1.0 if scale is None else float(scale),  # type: ignore[arg-type]
        )


_Key = tuple[str, str, str]


class ParameterIndex:
    """Parameters by device, mode and component, for lookups from memory."""

    __slots__ = ("_by_component", "_devices", "size")

    def __init__(self, parameters: Iterable[Parameter] = ()) -> None:
        self._by_component: dict[_Key, dict[str | None, Parameter]] = {}
        self._devices: set[str] = set()
        self.size = 0
        for parameter in parameters:
            key = (parameter.device_id, parameter.mode, parameter.component_type)
            self._by_component.setdefault(key, {})[parameter.component_number] = parameter
            self._devices.add(parameter.device_id)
            self.size += 1

    @property
    def device_count(self) -> int:
        """How many devices have at least one parameter."""
        return len(self._devices)

    def lookup(self, info: TopicInfo) -> Parameter:
        """Return the parameter for a topic's component: its own number first, then the row for all.

        Raises:
            BadMessage: `unknown_device` or `no_parameter`.
        """
        numbers = self._by_component.get((info.device_id, info.mode, info.component_type))
        if numbers is not None:
            parameter = numbers.get(info.component_number) or numbers.get(None)
            if parameter is not None:
                return parameter
        if info.device_id not in self._devices:
            raise BadMessage("unknown_device", f"device {info.device_id} has no parameters", topic=info.topic)
        raise BadMessage(
            "no_parameter",
            f"device {info.device_id} has no parameter for {info.mode} {info.component_type}"
            + ("" if info.component_number is None else f" {info.component_number}"),
            topic=info.topic,
        )

"""Parameter files: device parameter rows from a .csv or .json file, checked whole, loaded in one transaction.

A file is checked whole before anything is written; the first bad row is
reported with its line (CSV) or item (JSON) number and nothing is loaded.
`faust -A f2stream params load` (:mod:`f2stream.commands.params`) uses it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from f2stream.codec.model import OPTIONAL_COLUMNS, Parameter
from f2stream.errors import F2StreamError
from f2stream.mqtt_topics import canonical_device_id

__all__ = ["COLUMNS", "ParameterFileError", "load_parameters", "parse_parameter_file"]

#: The columns of `device_parameters` a file may hold, in table order.
COLUMNS = (
    "device_id", "mode", "component_type", "component_number", "encoding", "unit", "scale_factor", *OPTIONAL_COLUMNS,
)  # fmt: skip
_UPSERT = f"""
INSERT INTO device_parameters ({", ".join(COLUMNS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))})
ON CONFLICT (device_id, mode, component_type, coalesce(component_number, ''), coalesce(data_point, ''))
DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[4:])}, updated_at = now()
"""


class ParameterFileError(F2StreamError):
    """A parameter file has a bad row; nothing was loaded."""


def parse_parameter_file(name: str, content: bytes) -> list[Parameter]:
    """Read and check every row of a .csv (header line) or .json (list of objects) file.

    Raises:
        ParameterFileError: naming the first bad row and what is wrong with it; nothing is loaded.
    """
    numbered, where = _rows_of(name, content)
    parameters = []
    seen: dict[tuple[str | None, ...], int] = {}
    for number, row in numbered:
        try:
            parameter = _parse_row(row)
        except (KeyError, ValueError, TypeError) as exc:
            detail = f"column {exc} is missing" if isinstance(exc, KeyError) else str(exc)
            raise ParameterFileError(f"{name} {where} {number}: {detail}; nothing was loaded") from exc
        key = (parameter.device_id, *parameter.key)
        if key in seen:
            raise ParameterFileError(
                f"{name} {where} {number}: same device, component and data point as {where} {seen[key]}; "
                "nothing was loaded"
            )
        seen[key] = number
        parameters.append(parameter)
    if not parameters:
        raise ParameterFileError(f"{name} holds no rows; nothing was loaded")
    return parameters


def _rows_of(name: str, content: bytes) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """The file's rows with their line (CSV) or item (JSON) numbers."""
    lower = name.lower()
    if lower.endswith(".json"):
        try:
            rows = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise ParameterFileError(f"{name} is not JSON ({exc}); nothing was loaded") from exc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ParameterFileError(f"{name} must hold a JSON list of objects, one per row; nothing was loaded")
        return list(enumerate(rows, start=1)), "item"
    if lower.endswith(".csv"):
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ParameterFileError(f"{name} is not UTF-8 text ({exc.reason}); nothing was loaded") from exc
        reader = csv.DictReader(io.StringIO(text))
        return [(i, {k: (v if v != "" else None) for k, v in r.items()}) for i, r in enumerate(reader, start=2)], "line"
    raise ParameterFileError(f"{name}: give a .csv or .json file; nothing was loaded")


_REQUIRED = ("device_id", "mode", "component_type", "encoding")


def _parse_row(row: Mapping[str, Any]) -> Parameter:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown column {sorted(unknown)[0]!r}")
    for column in _REQUIRED:
        if row.get(column) is None:
            raise ValueError(f"column {column!r} is missing or empty")
    fixed: dict[str, Any] = {c: row.get(c) for c in COLUMNS}
    fixed["device_id"] = canonical_device_id(str(row["device_id"]))
    for name in ("true_words", "false_words"):
        if isinstance(fixed[name], str):
            fixed[name] = [w for w in fixed[name].split("|") if w]
    if fixed["scale_factor"] is not None:
        fixed["scale_factor"] = float(fixed["scale_factor"])
    for name in ("byte_offset", "decimals"):
        fixed[name] = _whole(fixed[name], name)
    return Parameter.from_row(fixed)


def _whole(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"{name} {value!r} is not a whole number")
    try:
        return int(str(value)) if not isinstance(value, float) else int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} {value!r} is not a whole number") from exc


def _values(parameter: Parameter) -> list[Any]:
    row = parameter.as_row()
    return [row[c] for c in COLUMNS]


async def load_parameters(conn: asyncpg.Connection, parameters: list[Parameter], *, replace: bool) -> int:
    """Write the rows in one transaction; return how many."""
    async with conn.transaction():
        if replace:
            await conn.execute(
                "DELETE FROM device_parameters WHERE device_id = ANY($1::text[])",
                sorted({p.device_id for p in parameters}),
            )
        await conn.executemany(_UPSERT, [_values(p) for p in parameters])
    return len(parameters)

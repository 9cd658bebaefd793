"""`faust -A f2stream params`: manage device parameters without writing SQL.

    params list                      devices, their row counts, template and version
    params show DEVICE               one device's rows
    params load FILE [--replace]     rows from a .csv or .json file, all or nothing
    params delete DEVICE             all rows of a device

A loaded file is checked whole before anything is written; the first bad row
is reported with its line and nothing is loaded. `--replace` replaces every
row of the devices in the file; otherwise rows are upserted by their key.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import click
import faust
import orjson
from faust.cli import argument, option

from f2stream.db import connect, describe_dsn
from f2stream.errors import F2StreamError
from f2stream.parameters import OPTIONAL_COLUMNS, Parameter
from f2stream.settings import Settings
from f2stream.topics import canonical_device_id

__all__ = ["ParameterFileError", "parse_parameter_file", "register"]

_COLUMNS = (
    "device_id", "mode", "component_type", "component_number", "encoding", "unit", "scale_factor", *OPTIONAL_COLUMNS,
)  # fmt: skip
_UPSERT = f"""
INSERT INTO device_parameters ({", ".join(_COLUMNS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))})
ON CONFLICT (device_id, mode, component_type, coalesce(component_number, ''), coalesce(data_point, ''))
DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[4:])}, updated_at = now()
"""
_LIST = """
SELECT v.device_id, count(p.device_id) AS rows, t.template, v.version
FROM parameter_versions v
LEFT JOIN device_parameters p ON p.device_id = v.device_id
LEFT JOIN device_templates t ON t.device_id = v.device_id
GROUP BY v.device_id, t.template, v.version
HAVING count(p.device_id) > 0 OR t.template IS NOT NULL
ORDER BY v.device_id
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
    unknown = set(row) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown column {sorted(unknown)[0]!r}")
    for column in _REQUIRED:
        if row.get(column) is None:
            raise ValueError(f"column {column!r} is missing or empty")
    fixed: dict[str, Any] = {c: row.get(c) for c in _COLUMNS}
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
    return [row[c] for c in _COLUMNS]


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


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `params` command."""
    from f2stream.cli import one_line_errors  # cli imports this module

    @app.command(
        argument("action", type=click.Choice(["list", "show", "load", "delete"])),
        argument("target", required=False),
        option("--replace", is_flag=True, default=False, help="load: replace all rows of the devices in the file."),
    )
    @one_line_errors
    async def params(self: Any, action: str, target: str | None, replace: bool) -> None:
        """Manage device parameters: list, show DEVICE, load FILE, delete DEVICE."""
        await _run(settings, action, target, replace=replace)


def _prepare(action: str, target: str | None) -> tuple[list[Parameter], str]:
    """Check the arguments (and read the file) before touching the database."""
    if action != "list" and not target:
        raise ParameterFileError(f"params {action} needs a {'FILE' if action == 'load' else 'DEVICE'} argument")
    if action == "load":
        path = Path(str(target))
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ParameterFileError(f"cannot read {path}: {exc.strerror}") from exc
        return parse_parameter_file(path.name, content), ""
    if action in ("show", "delete"):
        try:
            return [], canonical_device_id(str(target))
        except ValueError as exc:
            raise ParameterFileError(str(exc)) from exc
    return [], ""


async def _run(settings: Settings, action: str, target: str | None, *, replace: bool) -> None:
    parameters, device = _prepare(action, target)
    try:
        conn = await connect(settings.params_dsn, settings.params_password)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise ParameterFileError(
            f"cannot connect to {describe_dsn(settings.params_dsn)} ({exc.__class__.__name__}); "
            "start it or set F2_PARAMS_DSN"
        ) from exc
    try:
        if action == "list":
            for r in await conn.fetch(_LIST):
                print(f"{r['device_id']}  rows={r['rows']}  template={r['template'] or '-'}  version={r['version']}")
        elif action == "show":
            rows = await conn.fetch(f"SELECT {', '.join(_COLUMNS)} FROM device_parameters WHERE device_id = $1", device)
            if not rows:
                raise ParameterFileError(f"device {device} has no parameter rows")
            for r in rows:
                print(orjson.dumps({k: v for k, v in dict(r).items() if v is not None}).decode())
        elif action == "load":
            count = await load_parameters(conn, parameters, replace=replace)
            print(f"params: {count} rows of {len({p.device_id for p in parameters})} devices loaded")
        else:
            status = await conn.execute("DELETE FROM device_parameters WHERE device_id = $1", device)
            print(f"params: {status.split()[-1]} rows of {device} deleted")
    finally:
        await conn.close()

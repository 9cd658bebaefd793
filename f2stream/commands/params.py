"""`faust -A f2stream params`: manage device parameters without writing SQL.

    params list                      devices, their row counts, template and version
    params show DEVICE               one device's rows
    params load FILE [--replace]     rows from a .csv or .json file, all or nothing
    params delete DEVICE             all rows of a device

A loaded file is checked whole before anything is written
(:mod:`f2stream.devices.parameter_file`). `--replace` replaces every row of the
devices in the file; otherwise rows are upserted by their key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import click
import faust
import orjson
from faust.cli import argument, option

from f2stream.codec.model import Parameter
from f2stream.commands.base import CommandError, connect_database, device_id_of, one_line_errors
from f2stream.devices.parameter_file import COLUMNS, ParameterFileError, load_parameters, parse_parameter_file
from f2stream.settings import Settings

__all__ = ["register"]

_LIST = """
SELECT v.device_id, count(p.device_id) AS rows, t.template, v.version
FROM parameter_versions v
LEFT JOIN device_parameters p ON p.device_id = v.device_id
LEFT JOIN device_templates t ON t.device_id = v.device_id
GROUP BY v.device_id, t.template, v.version
HAVING count(p.device_id) > 0 OR t.template IS NOT NULL
ORDER BY v.device_id
"""
_SHOW = f"SELECT {', '.join(COLUMNS)} FROM device_parameters WHERE device_id = $1"


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `params` command."""

    @app.command(
        argument("action", type=click.Choice(["list", "show", "load", "delete"])),
        argument("target", required=False),
        option("--replace", is_flag=True, default=False, help="load: replace all rows of the devices in the file."),
    )
    @one_line_errors
    async def params(self: Any, action: str, target: str | None, replace: bool) -> None:
        """Manage device parameters: list, show DEVICE, load FILE, delete DEVICE."""
        parameters, device = _prepare(action, target)
        conn = await connect_database(settings, "params")
        try:
            await _run(conn, action, parameters, device, replace=replace)
        finally:
            await conn.close()


def _prepare(action: str, target: str | None) -> tuple[list[Parameter], str]:
    """Check the arguments (and read the file) before touching the database."""
    if action != "list" and not target:
        raise CommandError(f"params {action} needs a {'FILE' if action == 'load' else 'DEVICE'} argument")
    if action == "load":
        path = Path(str(target))
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ParameterFileError(f"cannot read {path}: {exc.strerror}") from exc
        return parse_parameter_file(path.name, content), ""
    if action in ("show", "delete"):
        return [], device_id_of(str(target))
    return [], ""


async def _run(
    conn: asyncpg.Connection, action: str, parameters: list[Parameter], device: str, *, replace: bool
) -> None:
    if action == "list":
        for r in await conn.fetch(_LIST):
            print(f"{r['device_id']}  rows={r['rows']}  template={r['template'] or '-'}  version={r['version']}")
    elif action == "show":
        rows = await conn.fetch(_SHOW, device)
        if not rows:
            raise CommandError(f"device {device} has no parameter rows")
        for r in rows:
            print(orjson.dumps({k: v for k, v in dict(r).items() if v is not None}).decode())
    elif action == "load":
        count = await load_parameters(conn, parameters, replace=replace)
        print(f"params: {count} rows of {len({p.device_id for p in parameters})} devices loaded")
    else:
        status = await conn.execute("DELETE FROM device_parameters WHERE device_id = $1", device)
        print(f"params: {status.split()[-1]} rows of {device} deleted")

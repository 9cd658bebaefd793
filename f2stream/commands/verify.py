"""`faust -A f2stream verify`: every simulated message is in the database, exactly once (f2stream.verify)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.cli import option

from f2stream.commands.base import connect_database, one_line_errors
from f2stream.settings import Settings
from f2stream.verify import poll_database, read_manifest

__all__ = ["register"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `verify` command."""

    @app.command(
        option("--manifest", type=str, required=True, help="The file `simulate --manifest` wrote."),
        option("--timeout-s", type=float, default=60.0, show_default=True, help="How long to wait for rows."),
    )
    @one_line_errors
    async def verify(self: Any, manifest: str, timeout_s: float) -> None:
        """Check that every simulated message landed in the database exactly once."""
        try:
            expected = read_manifest(Path(manifest))
        except FileNotFoundError:
            raise SystemExit(
                f"f2stream: manifest {manifest} does not exist; run `simulate --manifest {manifest}` first"
            ) from None
        conn = await connect_database(settings, "timeseries")
        try:
            verdict = await poll_database(conn, expected, timeout_s)
        finally:
            await conn.close()
        print(f"verify: {verdict}", flush=True)
        if not verdict.ok:
            raise SystemExit(1)

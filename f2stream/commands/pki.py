"""`pki init`: the device CA (created once, never replaced) and the broker's certificate."""

from __future__ import annotations

from typing import Any

import click
import faust
from faust.cli import argument

from f2stream.commands.base import one_line_errors
from f2stream.pki import init_pki
from f2stream.settings import Settings

__all__ = ["register"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `pki` command."""

    @app.command(argument("action", type=click.Choice(["init"])))
    @one_line_errors
    async def pki(self: Any, action: str) -> None:
        """`pki init`: create the CA once (never replaced) and the broker's certificate."""
        hosts = [settings.mqtt_host, *settings.pki_hosts.split(",")]
        result = init_pki(settings.pki_dir, hosts)
        state = "created" if result.ca_created else "kept (exists)"
        print(f"pki: CA {state} in {settings.pki_dir}; server certificate for {', '.join(result.hosts)}", flush=True)

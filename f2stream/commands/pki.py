"""`pki init`: the device CA (created once, never replaced) and the broker's certificate; `pki issue`: a service's."""

from __future__ import annotations

from typing import Any

import click
import faust
from faust.cli import argument, option

from f2stream.commands.base import CommandError, one_line_errors
from f2stream.pki import PkiPaths, init_pki, issue_service_certificate
from f2stream.settings import Settings

__all__ = ["register"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `pki` command."""

    @app.command(
        argument("action", type=click.Choice(["init", "issue"])),
        argument("name", required=False),
        option("--host", "hosts", multiple=True, help="issue: a DNS name or IP address the service answers on"),
        option("--force", is_flag=True, default=False, help="issue: a new certificate even if the old one is right"),
    )
    @one_line_errors
    async def pki(self: Any, action: str, name: str | None, hosts: tuple[str, ...], force: bool) -> None:
        """`pki init`: create the CA once and the MQTT broker's certificate; `pki issue NAME`: a service's."""
        if action == "init":
            hosts = (settings.mqtt_host, *settings.pki_hosts.split(","))
            result = init_pki(settings.pki_dir, hosts)
            state = "created" if result.ca_created else "kept (exists)"
            print(
                f"pki: CA {state} in {settings.pki_dir}; server certificate for {', '.join(result.hosts)}", flush=True
            )
            return
        if not name:
            raise CommandError("pki issue needs the service's name, e.g. pki issue f2-kafka-broker --host 127.0.0.1")
        info, issued = issue_service_certificate(settings.pki_dir, name, hosts, force=force)
        paths = PkiPaths(settings.pki_dir)
        state = "issued" if issued else "kept (still right)"
        until = f"{info.not_after:%Y-%m-%d}"
        print(f"pki: {name} {state}: {paths.service_cert(name)} (serial {info.serial}, until {until})", flush=True)

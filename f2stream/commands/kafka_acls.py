"""`faust -A f2stream kafka-acls`: the Kafka ACLs of the three principals, printed or applied."""

from __future__ import annotations

from typing import Any

import faust
from faust.cli import option

from f2stream.commands.base import one_line_errors
from f2stream.kafka_acls import Principals, apply_acls, kafka_acls_command, pipeline_acls
from f2stream.kafka_client import describe
from f2stream.settings import Settings

__all__ = ["register"]

_DEFAULT = Principals()


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `kafka-acls` command."""

    @app.command(
        option("--apply", is_flag=True, default=False, help="Create them (as a super user) instead of printing them."),
        option("--ingest", default=_DEFAULT.ingest, show_default=True, help="The ingest worker's principal."),
        option("--pipeline", default=_DEFAULT.pipeline, show_default=True, help="The pipeline worker's principal."),
        option("--tools", default=_DEFAULT.tools, show_default=True, help="The principal of tail, replay, redrive."),
        name="kafka-acls",
    )
    @one_line_errors
    async def kafka_acls(self: Any, apply: bool, ingest: str, pipeline: str, tools: str) -> None:
        """The ACLs each principal needs: kafka-acls.sh lines, or created with --apply."""
        principals = Principals(ingest=ingest, pipeline=pipeline, tools=tools)
        acls = pipeline_acls(principals)
        if not apply:  # one write: a reader that stops early (| head) sees whole lines
            print("\n".join(kafka_acls_command(acl, settings.kafka_bootstrap) for acl in acls), flush=True)
            return
        sent = await apply_acls(settings, acls)
        print(f"kafka-acls: {sent} ACL bindings in place for {ingest}, {pipeline}, {tools} on {describe(settings)}",
              flush=True)  # fmt: skip

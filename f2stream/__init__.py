"""f2stream: telemetry pipeline for F2 Smart Controllers.

`faust -A f2stream` finds the pipeline app as :data:`f2stream.app`; it is
built on first access, so that `faust -A f2stream.ingest` does not build it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from f2stream.pipeline import app  # noqa: PLC0415  # built on first access (see above)

        return app
    raise AttributeError(f"module 'f2stream' has no attribute {name!r}")

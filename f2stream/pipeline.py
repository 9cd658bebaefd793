"""The pipeline app: parameter cache, decode agent, sink agent, web views, commands.

Run it with `faust -A f2stream worker -l info` (web on :6066).
"""

from __future__ import annotations

import time

from f2stream import cli, web
from f2stream.agents import decode, sink
from f2stream.appbase import F2App, PipelineTopics, load_settings
from f2stream.metrics import Metrics
from f2stream.tables.params import ParameterCache
from f2stream.timeseries import MeasurementWriter
from f2stream.web import Check

__all__ = ["app", "metrics", "params", "settings", "topics", "writer"]

settings = load_settings()
app = F2App("f2stream", settings, web_port=6066)
topics = PipelineTopics(app)
metrics = Metrics()
params = ParameterCache(settings)
app.service(params)
writer = MeasurementWriter(settings)

decode_agent = decode.register(app, topics.raw, topics.decoded, topics.dead, params, metrics)
sink_agent = sink.register(
    app,
    topics.decoded,
    topics.dead,
    writer,
    metrics,
    batch_size=settings.sink_batch_size,
    batch_window_s=settings.sink_batch_window_ms / 1000,
)


def health_checks() -> list[Check]:
    """What `/health` reports for the pipeline worker."""
    checks = []
    if params.loaded_at is None:
        checks.append(Check("parameters", "failing", f"not loaded yet: {params.last_error or 'loading'}"))
    else:
        age = time.time() - params.loaded_at
        checks.append(
            Check(
                "parameters",
                "degraded" if params.last_error else "ok",
                f"{params.index.size} parameters, loaded {age:.0f}s ago",
            )
        )
    if writer.last_error:
        checks.append(Check("timeseries", "failing", "writes are failing and being retried"))
    else:
        checks.append(Check("timeseries", "ok", "last write succeeded (or none needed)"))
    assigned = len(app.consumer.assignment()) if app.consumer is not None else 0
    checks.append(Check("kafka", "ok" if assigned else "degraded", f"{assigned} partitions assigned"))
    return checks


web.register(app, metrics, health_checks)
cli.register(app, settings)

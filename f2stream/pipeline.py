"""The pipeline app: parameter table, decode agent, sink agent, web views, commands.

Run it with `faust -A f2stream worker -l info` (web on :6066).
"""

from __future__ import annotations

from f2stream import cli, health, views, web
from f2stream.agents import decode, sink
from f2stream.appbase import F2App, PipelineTopics, load_settings
from f2stream.health import Check, HealthChecks
from f2stream.kafka import DECODED_TOPIC, RAW_TOPIC
from f2stream.metrics import Metrics
from f2stream.tables.params import ParameterTable
from f2stream.timeseries import MeasurementWriter

__all__ = ["app", "metrics", "params", "settings", "topics", "writer"]

settings = load_settings()
app = F2App("f2stream", settings, web_port=6066)
topics = PipelineTopics(app)
metrics = Metrics()
params = ParameterTable(app, settings, topics.parameters)
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


# More than this many messages behind in total and the worker reports degraded.
LAG_DEGRADED_ABOVE = 10_000


def consumer_lag() -> dict[tuple[str, int], int]:
    """Lag per assigned partition of raw_iot_data and decoded_iot_data."""
    return health.consumer_lag(app.consumer, (RAW_TOPIC, DECODED_TOPIC))


def _assigned() -> int:
    return len(app.consumer.assignment())


async def _kafka() -> Check:
    return await health.kafka_check(settings.kafka_bootstrap, _assigned)


async def _parameters() -> Check:
    checked = await health.postgres_check(
        "parameters",
        settings.params_dsn,
        settings.params_password,
        "SELECT count(*) FROM device_parameters",
        describe=lambda n: f"{n} rows in the database",
    )
    held = f"{params.size} devices in this worker's parameter table"
    if checked.status != "ok":  # decoding goes on with the table
        return Check("parameters", "degraded", f"{checked.detail}; {held}")
    return Check("parameters", "ok", f"{checked.detail}; {held}")


async def _timeseries() -> Check:
    checked = await health.postgres_check(
        "timeseries",
        settings.timeseries_dsn,
        settings.timeseries_password,
        "SELECT max(time) FROM iot_measurements",  # the time index answers it
        describe=lambda t: f"newest device time {t.isoformat() if t else 'none'}",
    )
    if checked.status == "ok" and writer.last_error:
        return Check("timeseries", "degraded", f"{checked.detail}; the last write failed and is being retried")
    return checked


async def _lag() -> Check:
    return health.lag_check(consumer_lag, degraded_above=LAG_DEGRADED_ABOVE)


async def _rows() -> Check:
    return health.rows_check(writer.last_commit_at, sum(consumer_lag().values()))


health_checks = HealthChecks(
    {
        "kafka": _kafka,
        "parameters": _parameters,
        "timeseries": _timeseries,
        "consumer_lag": _lag,
        "rows": _rows,
    }
)
metrics.watch_lag(consumer_lag)
metrics.parameters.set_function(lambda: params.size)
metrics.parameters_synced.set_function(lambda: params.sync.synced_at or 0.0)
web.register(app, metrics, health_checks)
views.register(app, settings, params)
cli.register(app, settings)

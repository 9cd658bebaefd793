"""The pipeline app: parameter table, decode and sink stages, web views, commands.

Run it with `faust -A f2stream worker -l info` (web on :6066).
"""

from __future__ import annotations

import logging
import sys

from f2stream import commands, health
from f2stream.agents.stages import Stages
from f2stream.appbase import F2App, PipelineTopics, load_settings
from f2stream.errors import ERROR_EXIT
from f2stream.health import Check, HealthChecks, overall
from f2stream.kafka_client import kafka_options
from f2stream.kafka_topics import PIPELINE_APP_ID
from f2stream.metrics import Metrics
from f2stream.mqtt_client import ingest_connection
from f2stream.storage.privileges import check_pipeline_rights
from f2stream.storage.timeseries import MeasurementWriter
from f2stream.tables.parameters import ParameterSync, ParameterTable
from f2stream.web import alarms, liveness, pages, views

__all__ = ["PipelineApp", "app", "metrics", "params", "services", "settings", "stages", "sync", "topics", "writer"]

logger = logging.getLogger(__name__)


class PipelineApp(F2App):
    """The pipeline's Faust app: its database rights are checked before anything starts."""

    async def on_first_start(self) -> None:
        """Say which database rights the worker holds beyond its needs; refuse to start on them if strict.

        WARNING by default; with F2_DB_STRICT_PRIVILEGES one line on stderr and
        exit status 2, before any topic, consumer or connection pool is made.
        """
        line = await check_pipeline_rights(self.settings)
        if line is not None:
            if self.settings.db_strict_privileges:
                print(f"f2stream: {line}; it refuses to start (F2_DB_STRICT_PRIVILEGES=1)", file=sys.stderr, flush=True)
                raise SystemExit(ERROR_EXIT)
            logger.warning("%s (F2_DB_STRICT_PRIVILEGES=1 would refuse to start)", line[0].upper() + line[1:])
        await super().on_first_start()


settings = load_settings()
kafka = kafka_options(settings)
app = PipelineApp(PIPELINE_APP_ID, settings, web_port=6066)
topics = PipelineTopics(app)
metrics = Metrics()
sync = ParameterSync(app, settings, topics.parameters)
params = ParameterTable(settings, sync=sync)
app.service(params)  # type: ignore[arg-type]  # faust takes instances too; its stub says classes
writer = MeasurementWriter(settings)

stages = Stages(settings, metrics, writer, params)
app.service(stages)  # type: ignore[arg-type]  # faust takes instances too; its stub says classes


# More than this many messages behind in total and the worker reports degraded.
LAG_DEGRADED_ABOVE = 10_000


def consumer_lag() -> dict[tuple[str, int], int]:
    """Lag per assigned partition of raw_iot_data and decoded_iot_data."""
    lag: dict[tuple[str, int], int] = stages.lag()
    return lag


def _assigned() -> int:
    return sum(len(loop.assignment()) for loop in stages.loops)


async def _kafka() -> Check:
    return await health.kafka_check(kafka, _assigned)


async def _parameters() -> Check:
    checked = await health.postgres_check(
        "parameters",
        settings.params_dsn,
        settings.params_password,
        "SELECT count(*) FROM device_parameters",
        describe=lambda n: f"{n} rows in the database",
    )
    held = f"{params.size} devices' parameters held for decoding"
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
    if writer.last_error and not writer.last_error_transient:
        return Check("timeseries", "failing", f"writes fail until fixed ({writer.last_error})")
    if checked.status == "ok" and writer.last_error:
        return Check("timeseries", "degraded", f"{checked.detail}; a write failed ({writer.last_error}), retrying")
    return checked


async def _timescaledb() -> Check:
    return await health.timescaledb_check(settings.timeseries_dsn, settings.timeseries_password)


async def _loops() -> Check:
    down = [loop.name for loop in stages.loops if not loop.running]
    if down and stages.started:
        return Check("loops", "failing", f"not running: {', '.join(down)}")
    errors = [f"{loop.name}: {loop.last_error}" for loop in stages.loops if loop.last_error]
    if errors:
        return Check("loops", "degraded", "; ".join(errors))
    quarantined = sum(loop.quarantined for loop in stages.loops)
    return Check("loops", "ok", f"decode and sink running; {quarantined} records dead-lettered as handler_error")


async def _alarms() -> Check:
    tracker = stages.alarms
    if tracker is None:
        return Check("alarms", "ok", "alarm evaluation is off (F2_ALARMS_ENABLED=false)")
    state = tracker.alarm_state
    detail = (f"{tracker.config.rules_loaded} rules loaded; {len(state)} devices' alarm state held, "
              f"{sum(state.active.values())} alarms active")  # fmt: skip
    errors = [e for e in (tracker.config.last_error, tracker.last_error) if e]
    if errors:  # evaluation goes on with the rules held; transitions not produced wait in the outbox
        return Check("alarms", "degraded", f"{'; '.join(errors)}; {detail}")
    return Check("alarms", "ok", detail)


async def _lag() -> Check:
    return health.lag_check(consumer_lag, degraded_above=LAG_DEGRADED_ABOVE)


async def _rows() -> Check:
    return health.rows_check(writer.last_commit_at, sum(consumer_lag().values()))


health_checks = HealthChecks(
    {
        "kafka": _kafka,
        "parameters": _parameters,
        "timeseries": _timeseries,
        "timescaledb": _timescaledb,
        "loops": _loops,
        "alarms": _alarms,
        "consumer_lag": _lag,
        "rows": _rows,
    }
)


async def _pipeline_service() -> Check:
    own = await health_checks.run()
    not_ok = [f"{c.name}: {c.status}" for c in own if c.status != "ok"]
    return Check("pipeline", overall(own), "; ".join(not_ok) or "every check ok")


def _services() -> HealthChecks:
    """Every service of the running system, as the pipeline worker sees it (`/health/{service}`)."""
    s = settings
    host = s.mqtt_host
    return HealthChecks(
        {
            "kafka": lambda: health.kafka_check(kafka),
            "mosquitto": lambda: health.mqtt_check("mosquitto", ingest_connection(s)),  # as the ingest logs in
            "mosquitto-tls": lambda: health.tcp_check("mosquitto-tls", host, s.mqtt_tls_port),
            "mosquitto-websockets": lambda: health.websocket_check("mosquitto-websockets", host, s.mqtt_ws_port),
            "postgres-params": lambda: health.postgres_check(
                "postgres-params", s.params_dsn, s.params_password, "SELECT current_setting('server_version')",
                describe=lambda v: f"PostgreSQL {v}",
            ),
            "postgres-timeseries": lambda: health.postgres_check(
                "postgres-timeseries", s.timeseries_dsn, s.timeseries_password,
                "SELECT current_setting('server_version')", describe=lambda v: f"PostgreSQL {v}",
            ),
            "pipeline": _pipeline_service,
            "ingest": lambda: health.worker_check("ingest", f"{s.ingest_url.rstrip('/')}/health"),
        },
        timeout_s=2.5,
    )  # fmt: skip


services = _services()
metrics.watch_lag(consumer_lag)
metrics.watch_loops(stages.restarts)
metrics.parameters.set_function(lambda: params.size)
metrics.parameters_synced.set_function(lambda: sync.synced_at or 0.0)
pages.register(app, metrics, health_checks, services)
views.register(app, settings, params)
liveness.register(app, stages.liveness, stages.status_writer)
alarms.register(app, settings)
commands.register(app, settings)

"""What both Faust apps share: settings at start-up, topic creation, common config."""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust

from f2stream import collector, logging_limits
from f2stream.errors import ERROR_EXIT, ConfigError, F2StreamError
from f2stream.kafka_client import faust_credentials
from f2stream.kafka_topics import PARAMETERS_TOPIC, ensure_topics
from f2stream.records import ParameterSet
from f2stream.settings import Settings

__all__ = ["F2App", "PipelineTopics", "load_settings"]

logger = logging.getLogger(__name__)


def load_settings() -> Settings:
    """Read the settings once at start; a bad setting ends the process with one line and exit status 2.

    Nothing has connected anywhere yet: every app and command loads its settings first.
    """
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"f2stream: bad setting {exc}", file=sys.stderr, flush=True)
        raise SystemExit(ERROR_EXIT) from None


class F2Worker(faust.Worker):
    """Faust's worker without the terminal spinner.

    With a log level of WARN or above, faust-streaming installs a spinner
    handler and sets the root logger to DEBUG, so every `logger.debug` call
    on the per-message path (aiokafka, faust.topics) builds a log record.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Configure the root logger as asked, and collapse repeated records on its handlers.

        While Kafka is down, aiokafka and faust repeat the same few lines
        thousands of times; the first of each kind and a summary per window
        are enough (f2stream.logging_limits).
        """
        self.spinner = None
        logging_limits.install(logger)


class F2App(faust.App):
    """A Faust app that creates the pipeline's topics before anything subscribes."""

    def __init__(self, app_id: str, settings: Settings, **options: Any) -> None:
        super().__init__(
            app_id,
            broker=settings.kafka_broker,
            broker_credentials=faust_credentials(settings),  # TLS and login of F2_KAFKA_SECURITY_PROTOCOL
            topic_partitions=settings.topic_partitions,
            # 0 (the cluster's default) is resolved in on_first_start, before Faust declares a topic.
            topic_replication_factor=settings.topic_replication or 1,
            datadir=str(settings.data_dir / app_id),
            producer_acks=-1,
            producer_linger=0.005,
            # aiokafka keeps one batch in flight per partition; with its 16 KB
            # default an agent waits each time ~45 records fill a batch.
            producer_max_batch_size=512 * 1024,
            consumer_auto_offset_reset="earliest",
            # A worker killed with -9 holds its place in the group until its
            # session times out; Faust's 60 s kept a restarted worker (and its
            # decode and sink loops, which start after the table) idle a minute
            # per kill. Heartbeats come from the consumer's own thread.
            broker_session_timeout=10.0,
            stream_wait_empty=True,
            Worker=F2Worker,
            web_bind="127.0.0.1",  # containers pass --web-bind 0.0.0.0
            **options,
        )
        self.settings = settings
        collector.tune_collector(settings.gc_young_threshold)

    def changelog_topics(self) -> tuple[str, ...]:
        """The changelog topics of this app's tables."""
        return tuple(table.changelog_topic.get_topic_name() for table in self.tables.values())

    async def on_first_start(self) -> None:
        """Create the pipeline topics and this app's table changelogs if missing.

        Faust's own topics (its leader topic) get the same replication factor.
        """
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
        await super().on_first_start()
        try:
            self.conf.topic_replication_factor = await ensure_topics(
                self.settings,
                compacted=self.changelog_topics(),
                single=(f"{self.conf.id}-__assignor-__leader",),  # Faust's leader topic, named as Faust does
            )
        except F2StreamError as exc:
            raise SystemExit(f"f2stream: {exc}") from None


class PipelineTopics:
    """The topics the Faust app itself consumes: the parameter sets that feed its table.

    raw_iot_data and decoded_iot_data are read by the stages' own consumers
    (f2stream.agents.stages), never through Faust's.
    """

    def __init__(self, app: faust.App) -> None:
        self.parameters = app.topic(PARAMETERS_TOPIC, key_type=bytes, value_type=ParameterSet, key_serializer="raw")

"""Kafka topics of the pipeline and their creation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from f2stream.errors import F2StreamError
from f2stream.kafka_client import diagnose, kafka_options, refusal, unreachable
from f2stream.settings import Settings

__all__ = [
    "ALARMS_GROUP",
    "ALARM_EVENTS_TOPIC",
    "ALARM_STATE_TOPIC",
    "DEAD_LETTER_TOPIC",
    "DECODED_TOPIC",
    "DECODE_GROUP",
    "INGEST_APP_ID",
    "LIVENESS_TOPIC",
    "PARAMETERS_TOPIC",
    "PIPELINE_APP_ID",
    "PIPELINE_TOPICS",
    "RAW_TOPIC",
    "SINK_GROUP",
    "STATUS_GROUP",
    "STATUS_TOPIC",
    "TopicSetupError",
    "ensure_topics",
]

logger = logging.getLogger(__name__)

RAW_TOPIC: Final = "raw_iot_data"
DECODED_TOPIC: Final = "decoded_iot_data"
DEAD_LETTER_TOPIC: Final = "iot_dead_letter"
#: Compacted: the latest parameter set of each device, keyed by device id.
PARAMETERS_TOPIC: Final = "device_parameters"
#: Liveness changes, JSON, keyed by device id (docs/architecture.md, "Device liveness").
STATUS_TOPIC: Final = "device_status"
#: Compacted: the liveness changelog, one record per device, partitioned as raw_iot_data.
LIVENESS_TOPIC: Final = "device_liveness"
#: Alarm transitions, JSON, keyed by device id, partitioned as raw_iot_data (docs/alarms.md).
ALARM_EVENTS_TOPIC: Final = "alarm_events"
#: Compacted: the alarm state changelog, one record per device, partitioned as raw_iot_data.
ALARM_STATE_TOPIC: Final = "alarm_state"
PIPELINE_TOPICS: Final = (
    RAW_TOPIC, DECODED_TOPIC, DEAD_LETTER_TOPIC, PARAMETERS_TOPIC, STATUS_TOPIC, LIVENESS_TOPIC,
    ALARM_EVENTS_TOPIC, ALARM_STATE_TOPIC,
)  # fmt: skip
_TOPIC_CONFIGS: Final[dict[str, dict[str, str]]] = {
    PARAMETERS_TOPIC: {"cleanup.policy": "compact"},
    # Compacted often: a restore reads the whole partition.
    LIVENESS_TOPIC: {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"},
    ALARM_STATE_TOPIC: {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"},
}
#: The Faust app ids (each its own consumer group and internal topics `<id>-...`).
PIPELINE_APP_ID: Final = "f2stream"
INGEST_APP_ID: Final = "f2stream-ingest"
#: The consumer groups of the pipeline's decode, sink and device-status stages.
DECODE_GROUP: Final = "f2stream-decode"
SINK_GROUP: Final = "f2stream-sink"
STATUS_GROUP: Final = "f2stream-status"
#: The consumer group of the pipeline's alarm loop (alarm_events into PostgreSQL).
ALARMS_GROUP: Final = "f2stream-alarms"
_TOPIC_ALREADY_EXISTS: Final = 36
_UNKNOWN_TOPIC: Final = 3
_CREATE_DENIED: Final = (29, 31)  # TopicAuthorizationFailed, ClusterAuthorizationFailed


class TopicSetupError(F2StreamError):
    """The pipeline's topics could not be created or have the wrong shape."""


async def ensure_topics(
    settings: Settings,
    *,
    compacted: tuple[str, ...] = (),
    single: tuple[str, ...] = (),
    wait_s: float = 60.0,
) -> int:
    """Create the pipeline's topics that do not exist yet (Faust creates only its own).

    `compacted` names more compacted topics to create with them: table
    changelogs, which Faust would create only after its consumer had
    fetched its metadata, so that the first table write finds the changelog
    unknown (PartitionsMismatch). `single` names topics of one partition:
    Faust's leader topic, which Faust creates just before its consumer
    joins the group; on a cluster the group's assignment could miss it
    (not yet in the leader's metadata), no worker then got the leader
    partition and nobody published parameters. Waits up to `wait_s` for
    Kafka to answer, and until the created topics have their leaders.

    Topics get `F2_TOPIC_REPLICATION` replicas; 0 asks the cluster for its
    `default.replication.factor` (aiokafka cannot send KIP-464's -1: its
    CreateTopics stops at v3). raw_iot_data gets `retention.ms` from
    `F2_RAW_RETENTION_HOURS` (the window that replay can repair) when it
    is created. A topic this client's principal may not see (Kafka's ACLs:
    TopicAuthorizationFailed) is left to the worker that uses it: the
    ingest worker's principal sees raw_iot_data and iot_dead_letter only.

    Returns:
        The replication factor used, for the topics Faust creates itself.

    Raises:
        TopicSetupError: Kafka did not answer, refused this client (login,
            TLS, ACLs), or refused to create a topic.
    """
    deadline = time.monotonic() + wait_s
    told = False
    refused: str | None = None
    while True:
        admin = AIOKafkaAdminClient(**kafka_options(settings), client_id="f2stream-admin")
        try:
            await admin.start()
            replication = settings.topic_replication or await _default_replication(admin)
            created = await _create_missing(
                admin,
                settings.topic_partitions,
                replication,
                compacted,
                single,
                {RAW_TOPIC: settings.raw_retention_ms},
            )
            await _wait_for_leaders(admin, created, deadline)
            return replication
        except KafkaConnectionError as exc:
            # The same refusal twice in a row, a second apart: not a broker that happened to be restarting.
            again, refused = refused, await diagnose(settings)
            if refused is not None and refused == again:
                raise TopicSetupError(refused) from exc
            if time.monotonic() > deadline:
                raise TopicSetupError(f"{unreachable(settings)} (waited {wait_s:.0f}s)") from exc
            if not told:
                logger.warning("%s; waiting up to %.0fs", unreachable(settings), wait_s)
                told = True
            await asyncio.sleep(1.0)
        except KafkaError as exc:
            line = refusal(settings, exc)
            if line is None and exc.retriable and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                continue
            raise TopicSetupError(line or f"setting up the topics failed: {exc}") from exc
        finally:
            await admin.close()


async def _default_replication(admin: AIOKafkaAdminClient) -> int:
    """The cluster's `default.replication.factor`, as one of its brokers reports it."""
    try:
        broker = (await admin.describe_cluster())["brokers"][0]["node_id"]
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(broker), {"default.replication.factor": None})]
        )
        code, message, _, _, entries = response.resources[0]
    except (KafkaError, IndexError, ValueError) as exc:
        raise TopicSetupError(
            f"reading the cluster's default.replication.factor failed: {exc}; set F2_TOPIC_REPLICATION"
        ) from exc
    values = {entry[0]: entry[1] for entry in entries}
    if code != 0 or not str(values.get("default.replication.factor", "")).isdigit():
        raise TopicSetupError(
            f"broker {broker} did not report default.replication.factor (error {code}: {message}); "
            "set F2_TOPIC_REPLICATION"
        )
    return int(values["default.replication.factor"])


async def _create_missing(
    admin: AIOKafkaAdminClient,
    partitions: int,
    replication: int,
    compacted: tuple[str, ...],
    single: tuple[str, ...] = (),
    retention_ms: Mapping[str, int] | None = None,
) -> list[str]:
    configs: dict[str, dict[str, str]] = {
        **_TOPIC_CONFIGS,
        **{name: {"cleanup.policy": "compact"} for name in compacted},
    }
    for name, ms in (retention_ms or {}).items():
        configs[name] = {**configs.get(name, {}), "retention.ms": str(ms)}
    wanted = [*PIPELINE_TOPICS, *compacted, *single]
    described = await admin.describe_topics(wanted)
    existing = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    hidden = {t["topic"] for t in described if t["error_code"] not in (0, _UNKNOWN_TOPIC)}
    if hidden:
        logger.info(
            "Topics this principal may not see, left to the workers that use them: %s", ", ".join(sorted(hidden))
        )
    for name, count in existing.items():
        if count != partitions and name not in single:
            logger.warning("Topic %s has %d partitions, F2_TOPIC_PARTITIONS says %d", name, count, partitions)
    missing = [
        NewTopic(name, 1 if name in single else partitions, replication, topic_configs=configs.get(name, {}))
        for name in wanted
        if name not in existing and name not in hidden
    ]
    if not missing:
        return []
    try:
        response = await admin.create_topics(missing)
    except KafkaError as exc:
        raise TopicSetupError(f"creating topics {[t.name for t in missing]} failed: {exc}") from exc
    for name, code, *rest in response.topic_errors:
        if code in _CREATE_DENIED:
            raise TopicSetupError(
                f"creating topic {name} was refused by Kafka's ACLs (error {code}): grant this principal Create on "
                "it, or create it as an admin (docs/operations.md, Kafka security)"
            )
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise TopicSetupError(f"creating topic {name} failed with Kafka error {code}: {rest[0] if rest else ''}")
        if code == 0:
            count = 1 if name in single else partitions
            logger.info("Created topic %s with %d partitions, %d replicas", name, count, replication)
    return [topic.name for topic in missing]


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], deadline: float) -> None:
    """Return once every partition of `topics` has a leader in the metadata (or the deadline passed)."""
    while topics and time.monotonic() < deadline:
        described = await admin.describe_topics(topics)
        if all(t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
               for t in described):  # fmt: skip
            return
        await asyncio.sleep(0.2)

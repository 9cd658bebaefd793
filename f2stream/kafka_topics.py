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

__all__ = [
    "DEAD_LETTER_TOPIC",
    "DECODED_TOPIC",
    "DECODE_GROUP",
    "LIVENESS_TOPIC",
    "PARAMETERS_TOPIC",
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
PIPELINE_TOPICS: Final = (RAW_TOPIC, DECODED_TOPIC, DEAD_LETTER_TOPIC, PARAMETERS_TOPIC, STATUS_TOPIC, LIVENESS_TOPIC)
_TOPIC_CONFIGS: Final[dict[str, dict[str, str]]] = {
    PARAMETERS_TOPIC: {"cleanup.policy": "compact"},
    # Compacted often: a restore reads the whole partition.
    LIVENESS_TOPIC: {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"},
}
#: The consumer groups of the pipeline's decode, sink and device-status stages.
DECODE_GROUP: Final = "f2stream-decode"
SINK_GROUP: Final = "f2stream-sink"
STATUS_GROUP: Final = "f2stream-status"
_TOPIC_ALREADY_EXISTS: Final = 36


class TopicSetupError(F2StreamError):
    """The pipeline's topics could not be created or have the wrong shape."""


async def ensure_topics(
    bootstrap: str,
    partitions: int,
    *,
    compacted: tuple[str, ...] = (),
    single: tuple[str, ...] = (),
    replication: int = 0,
    retention_ms: Mapping[str, int] | None = None,
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

    Topics get `replication` replicas; 0 asks the cluster for its
    `default.replication.factor` (aiokafka cannot send KIP-464's -1: its
    CreateTopics stops at v3). `retention_ms` sets `retention.ms` of the
    topics it names, when they are created (raw_iot_data's is the window
    that replay can repair).

    Returns:
        The replication factor used, for the topics Faust creates itself.

    Raises:
        TopicSetupError: Kafka did not answer, or refused to create a topic.
    """
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="f2stream-admin")
        try:
            await admin.start()
            replication = replication or await _default_replication(admin)
            created = await _create_missing(admin, partitions, replication, compacted, single, retention_ms or {})
            await _wait_for_leaders(admin, created, deadline)
            return replication
        except KafkaConnectionError as exc:
            if time.monotonic() > deadline:
                raise TopicSetupError(
                    f"Kafka at {bootstrap} did not answer within {wait_s:.0f}s: start it (make up) "
                    "or set F2_KAFKA_BROKER"
                ) from exc
            await asyncio.sleep(1.0)
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
    existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(wanted) if t["error_code"] == 0}
    for name, count in existing.items():
        if count != partitions and name not in single:
            logger.warning("Topic %s has %d partitions, F2_TOPIC_PARTITIONS says %d", name, count, partitions)
    missing = [
        NewTopic(name, 1 if name in single else partitions, replication, topic_configs=configs.get(name, {}))
        for name in wanted
        if name not in existing
    ]
    if not missing:
        return []
    try:
        response = await admin.create_topics(missing)
    except KafkaError as exc:
        raise TopicSetupError(f"creating topics {[t.name for t in missing]} failed: {exc}") from exc
    for name, code, *rest in response.topic_errors:
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

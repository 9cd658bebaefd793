"""Prometheus metrics of both workers: one registry, bounded labels (never a device id)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from f2stream.errors import REASONS
from f2stream.records import Rows

__all__ = ["DEVICE_WINDOW_S", "LATENCY_SAMPLES_PER_BATCH", "Metrics", "RecentDevices", "component_type"]

DEVICE_WINDOW_S = 300.0
# Latency is observed on an even sample of each committed batch: parsing two
# ISO times per row of a 5000-row batch would cost more than it tells.
LATENCY_SAMPLES_PER_BATCH = 32
# Distinct (component type, data point) label pairs of the value gauge;
# data points come from the parameters, so they are bounded by configuration:
# beyond this many the rest is counted under data_point="other".
_MAX_VALUE_SERIES = 200
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def component_type(component: str) -> str:
    """`strike-1` -> `strike`, `door-sensors` -> `door-sensors`: a bounded label."""
    head, _, tail = component.rpartition("-")
    return head if head and tail.isdigit() else component


class RecentDevices:
    """Device ids seen within a sliding window: a count for a gauge, never a label."""

    def __init__(self, window_s: float = DEVICE_WINDOW_S, max_devices: int = 100_000) -> None:
        self.window_s = window_s
        self.max_devices = max_devices
        self._seen: dict[bytes | str, float] = {}

    def note(self, device: bytes | str, now: float) -> None:
        """Remember that `device` was seen at `now` (time.monotonic())."""
        seen = self._seen
        seen[device] = now
        if len(seen) > self.max_devices:  # bogus ids must not grow memory without bound
            self.prune(now)

    def prune(self, now: float) -> int:
        """Forget devices older than the window; return how many remain."""
        cutoff = now - self.window_s
        stale = [device for device, at in self._seen.items() if at < cutoff]
        for device in stale:
            del self._seen[device]
        if len(self._seen) > self.max_devices:
            self._seen.clear()
        return len(self._seen)

    def count(self) -> int:
        """Devices seen within the window, now."""
        return self.prune(time.monotonic())


class _LagCollector(Collector):
    def __init__(self, lag: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        self.lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "f2_consumer_lag_messages",
            "Messages behind the end of each assigned partition (high water minus committed offset)",
            labels=["topic", "partition"],
        )
        for (topic, partition), lag in sorted(self.lag().items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


class _LoopCollector(Collector):
    def __init__(self, restarts: Callable[[], Mapping[str, int]]) -> None:
        self.restarts = restarts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "f2_loop_restarts", "Times a stage's loop died and a fresh consumer rejoined", labels=["loop"]
        )
        for loop, count in sorted(self.restarts().items()):
            family.add_metric([loop], count)
        yield family


class Metrics:
    """The project's own metrics; Faust's framework metrics join the same registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.mqtt_received = Counter(
            "f2_mqtt_messages_received_total", "MQTT messages received, by topic type", ["type"], registry=r
        )
        self.kafka_produced = Counter(
            "f2_raw_messages_produced_total", "MQTT messages acknowledged by Kafka on raw_iot_data", registry=r
        )
        self.mqtt_connected = Gauge("f2_mqtt_connected", "1 while the ingest MQTT session is up", registry=r)
        self.mqtt_reconnects = Counter(
            "f2_mqtt_reconnects_total", "MQTT connection attempts after the first", registry=r
        )
        self.mqtt_held_bytes = Gauge(
            "f2_mqtt_held_bytes",
            "Bytes of MQTT messages the ingest worker has read and not yet acknowledged (with a per-message estimate)",
            registry=r,
        )
        self.mqtt_read_pauses = Counter(
            "f2_mqtt_read_pauses_total",
            "Times the ingest worker stopped reading MQTT because it held F2_MQTT_MAX_HELD_MB",
            registry=r,
        )
        self.decoded_messages = Counter(
            "f2_messages_decoded_total", "Raw messages decoded into measurements", registry=r
        )
        self.measurements = Counter("f2_measurements_decoded_total", "Measurements produced by decoding", registry=r)
        self.dead_letters = Counter(
            "f2_dead_letters_total", "Messages sent to iot_dead_letter, by reason", ["reason"], registry=r
        )
        for reason in REASONS:
            self.dead_letters.labels(reason=reason)
        self.rows_written = Counter("f2_rows_written_total", "Rows inserted into iot_measurements", registry=r)
        self.rows_duplicate = Counter(
            "f2_rows_duplicate_total", "Rows already present (re-deliveries absorbed by the primary key)", registry=r
        )
        self.sink_batch_size = Histogram(
            "f2_sink_batch_rows",
            "Rows per sink batch",
            registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
        )
        self.sink_batch_seconds = Histogram(
            "f2_sink_batch_duration_seconds",
            "Time to commit one sink batch",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.parameters = Gauge("f2_parameters", "Devices in this worker's parameter table", registry=r)
        self.parameters_synced = Gauge(
            "f2_parameters_last_sync_timestamp_seconds",
            "Unix time of the last successful parameter load (0: never)",
            registry=r,
        )
        self.device_latency = Histogram(
            "f2_device_to_commit_latency_seconds",
            "Device timestamp to database commit, sampled per sink batch",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.receipt_latency = Histogram(
            "f2_receipt_to_commit_latency_seconds",
            "MQTT receipt by the ingest worker to database commit, sampled per sink batch",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.committed = Counter(
            "f2_measurements_committed_total",
            "Measurements in committed sink batches (new or already present), by component type",
            ["component_type"],
            registry=r,
        )
        self.value_mean = Gauge(
            "f2_measurement_value_mean",
            "Mean numeric value in the last committed batch holding it, by component type and data point",
            ["component_type", "data_point"],
            registry=r,
        )
        self._value_series: set[tuple[str, str]] = set()
        self.devices = RecentDevices()
        self.devices_seen = Gauge(
            "f2_devices_seen",
            f"Devices seen within the last {DEVICE_WINDOW_S:.0f}s (ingest: published; pipeline: rows committed)",
            registry=r,
        )
        self.devices_seen.set_function(self.devices.count)

    def watch_lag(self, lag: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        """Publish `f2_consumer_lag_messages{topic,partition}`, computed by `lag` at each scrape."""
        self.registry.register(_LagCollector(lag))

    def watch_loops(self, restarts: Callable[[], Mapping[str, int]]) -> None:
        """Publish `f2_loop_restarts_total{loop}`, read from `restarts` at each scrape."""
        self.registry.register(_LoopCollector(restarts))

    def observe_committed(self, batch: Rows, committed_at: float) -> None:
        """Latency samples, counts by component type and value sums of a committed batch.

        Per row this is a dict update or two; times are parsed only for
        `LATENCY_SAMPLES_PER_BATCH` evenly spaced rows.
        """
        if not len(batch):
            return
        times, devices, _, _, components, data_points, values, _, _, _, received, *_ = batch.columns
        step = max(1, len(batch) // LATENCY_SAMPLES_PER_BATCH)
        for device_time, received_at in zip(times[::step], received[::step], strict=True):
            try:
                self.device_latency.observe(max(0.0, committed_at - datetime.fromisoformat(device_time).timestamp()))
                self.receipt_latency.observe(max(0.0, committed_at - datetime.fromisoformat(received_at).timestamp()))
            except (TypeError, ValueError):  # not ISO: the database refused it already
                continue
        note, now = self.devices.note, time.monotonic()
        for device in set(devices):
            note(device, now)
        counts: dict[str, int] = {}
        sums: dict[tuple[str, str], list[float]] = {}
        for component, data_point, value in zip(components, data_points, values, strict=True):
            kind = component_type(component)
            counts[kind] = counts.get(kind, 0) + 1
            if value is not None:
                acc = sums.get((kind, data_point))
                if acc is None:
                    sums[(kind, data_point)] = [value, 1.0]
                else:
                    acc[0] += value
                    acc[1] += 1
        for kind, n in counts.items():
            self.committed.labels(component_type=kind).inc(n)
        for key, (total, size) in sums.items():
            self.value_mean.labels(*self._bounded(key)).set(total / size)

    def _bounded(self, key: tuple[str, str]) -> tuple[str, str]:
        if key in self._value_series:
            return key
        if len(self._value_series) < _MAX_VALUE_SERIES:
            self._value_series.add(key)
            return key
        return (key[0], "other")

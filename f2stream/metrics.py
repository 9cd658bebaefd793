"""Prometheus metrics of both workers: one registry, bounded labels (never a device id)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from f2stream.errors import REASONS

__all__ = ["Metrics"]


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
        self.mqtt_reconnects = Counter("f2_mqtt_reconnects_total", "MQTT (re)connection attempts", registry=r)
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
        self.parameters = Gauge("f2_parameters", "Device parameters held by the decoder", registry=r)

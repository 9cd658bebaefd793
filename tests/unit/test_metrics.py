"""Metrics: names and labels, per-batch observations, the devices window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from f2stream.errors import REASONS
from f2stream.metrics import LATENCY_SAMPLES_PER_BATCH, Metrics, RecentDevices, component_type
from f2stream.records import Measurement, Rows


def measurement(
    component: str, value: float | None, *, device: str = "f2-000000000001", age_s: float = 2.0
) -> Measurement:
    now = datetime.now(UTC)
    return Measurement(
        time=(now - timedelta(seconds=age_s)).isoformat(timespec="microseconds"),
        device_id=device,
        mode="access-control-mode",
        connector=1,
        component=component,
        data_point="voltage",
        value=value,
        text_value=None,
        unit="V",
        source_topic="stat/x",
        received_at=(now - timedelta(seconds=1)).isoformat(timespec="microseconds"),
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_component_type_is_a_bounded_label():
    assert component_type("strike-1") == "strike"
    assert component_type("motion-sensor-12") == "motion-sensor"
    assert component_type("door-sensors") == "door-sensors"
    assert component_type("exit-buttons") == "exit-buttons"


def test_a_committed_batch_feeds_latency_counts_values_and_devices():
    metrics = Metrics()
    batch = [
        measurement("strike-1", 12.0, device="f2-000000000001"),
        measurement("strike-2", 14.0, device="f2-000000000002"),
        measurement("reader-1", None, device="f2-000000000002"),
    ]
    metrics.observe_committed(Rows.of(batch), datetime.now(UTC).timestamp())
    assert sample(metrics, "f2_measurements_committed_total", component_type="strike") == 2
    assert sample(metrics, "f2_measurements_committed_total", component_type="reader") == 1
    assert sample(metrics, "f2_measurement_value_mean", component_type="strike", data_point="voltage") == 13.0
    assert sample(metrics, "f2_device_to_commit_latency_seconds_count") == 3
    device_sum = sample(metrics, "f2_device_to_commit_latency_seconds_sum")
    receipt_sum = sample(metrics, "f2_receipt_to_commit_latency_seconds_sum")
    assert device_sum is not None and 5.9 < device_sum < 7
    assert receipt_sum is not None and 2.9 < receipt_sum < 4
    assert sample(metrics, "f2_devices_seen") == 2


def test_latency_is_sampled_on_big_batches():
    metrics = Metrics()
    metrics.observe_committed(Rows.of([measurement("strike-1", 1.0)] * 5000), datetime.now(UTC).timestamp())
    count = sample(metrics, "f2_device_to_commit_latency_seconds_count")
    assert count is not None and LATENCY_SAMPLES_PER_BATCH <= count <= LATENCY_SAMPLES_PER_BATCH + 1
    assert sample(metrics, "f2_measurements_committed_total", component_type="strike") == 5000


def test_recent_devices_forget_after_the_window_and_stay_bounded():
    devices = RecentDevices(window_s=10, max_devices=3)
    devices.note("a", 0)
    devices.note("b", 5)
    assert devices.prune(9) == 2
    assert devices.prune(12) == 1
    for name in "cdefg":
        devices.note(name, 12)
    assert devices.prune(12) <= 3


def test_lag_is_published_per_partition():
    metrics = Metrics()
    metrics.watch_lag(lambda: {("raw_iot_data", 1): 7})
    assert sample(metrics, "f2_consumer_lag_messages", topic="raw_iot_data", partition="1") == 7


def test_every_dead_letter_reason_is_exposed_from_the_start_and_no_device_label_exists():
    metrics = Metrics()
    for reason in REASONS:
        assert sample(metrics, "f2_dead_letters_total", reason=reason) == 0
    for family in metrics.registry.collect():
        for s in family.samples:
            assert "device" not in s.labels, s
            if family.type == "counter":
                assert s.name.endswith(("_total", "_created")), s.name

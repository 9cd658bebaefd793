"""Alarm state at scale, in-process: memory of N devices' alarm state under 10 rules, per-message and tick cost.

`python -m bench.alarm_state --devices 100000` builds the pure state
(f2stream.alarms.AlarmState) for N devices with bench/alarm_rules.json's 10
fleet rules, as the decode stage would: one message of every component per
device (so that every rule holds a state), then a second round. It
measures RSS before and after, the cost of one observe per message, the
size of one device's changelog record, and a tick when nothing is due. The
state is what a worker adds for alarms; liveness is bench/liveness.py's.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.liveness import rss_mb
from f2stream.alarm_rules import parse_rule_file
from f2stream.alarms import AlarmEvent, AlarmState, RuleSet, encode_device
from f2stream.codec.message import decode_points
from f2stream.codec.model import Parameter, ParameterIndex
from f2stream.simulator import DEMO_PARAMETERS, device_ids, messages

RULES = Path(__file__).with_name("alarm_rules.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    args = parser.parse_args()
    n = args.devices
    names = device_ids(n, 1)
    rules = RuleSet(parse_rule_file(RULES.name, RULES.read_bytes()))
    index = ParameterIndex(
        Parameter.from_row({"device_id": d, "mode": m, "component_type": c, "component_number": num,
                            "encoding": e, "unit": u, "scale_factor": s})
        for d in names[:1] for m, c, num, e, u, s in DEMO_PARAMETERS
    )  # fmt: skip
    codec = index.codec(names[0])
    assert codec is not None
    # One round of messages (7 components) of the first device, decoded once, replayed for every device.
    sample = []
    for message in messages(names[:1], random.Random(7), lambda: datetime.now(UTC)):
        sample.append(decode_points(message.topic, message.payload, index))
        if len(sample) == 7:
            break
    state = AlarmState(lambda device: rules)
    events: list[AlarmEvent] = []
    before = rss_mb()
    started = time.perf_counter()
    offset = 0
    for rounds in range(2):
        if rounds == 1:
            first = time.perf_counter() - started
            after_first = rss_mb()
            started = time.perf_counter()
        for i, name in enumerate(names):
            for decoded in sample:
                info = decoded.info._replace(device_id=name)
                offset += 1
                state.observe(decoded._replace(info=info), i % 8, offset, decoded.time)
    steady = time.perf_counter() - started
    events += state.take_events()
    after = rss_mb()
    started = time.perf_counter()
    due = state.expire(time.time() - 3600, lambda p: float("inf"))
    idle_s = time.perf_counter() - started
    record = encode_device(state.devices[names[0]])
    print(json.dumps({
        "devices": n,
        "rules_per_device": len(rules),
        "rss_before_mb": round(before, 1),
        "state_mb": round(after - before, 1),
        "state_after_first_round_mb": round(after_first - before, 1),
        "bytes_per_device": round((after - before) * 1024 * 1024 / n),
        "first_round_us_per_message": round(first / (n * 7) * 1e6, 2),
        "observe_us_per_message": round(steady / (n * 7) * 1e6, 2),
        "changelog_record_bytes": len(record),
        "transitions": len(events),
        "tick_nothing_due_ms": round(idle_s * 1000, 3),
        "timer_entries": len(state._heap),  # noqa: SLF001  # the measure is the heap's size
    }, indent=2))  # fmt: skip
    assert not due


if __name__ == "__main__":
    main()

"""f2stream.verify: comparing a simulator manifest with what the database holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from f2stream.verify import Verdict, compare, read_manifest

D1, D2 = "f2-02f200000001", "f2-02f200000002"
T1, T2, T3 = "2025-01-31T12:00:00.000000+00:00", "2025-01-31T12:00:00.000001+00:00", "2025-01-31T12:00:00.000002+00:00"


def test_complete() -> None:
    expected = Counter({(D1, "strike-1", T1): 3, (D2, "sensor-3", T1): 1})
    verdict = compare(expected, Counter(expected))
    assert verdict == Verdict(messages=2, complete=2, missing=0, wrong_count=0, rows_expected=4, rows_found=4)
    assert verdict.ok is True


def test_missing_and_wrong_counts() -> None:
    expected = Counter(
        {(D1, "strike-1", T1): 3, (D1, "reader-1", T2): 3, (D1, "siren-1", T3): 3, (D2, "sensor-3", T1): 1}
    )
    found = Counter({(D1, "strike-1", T1): 3, (D1, "reader-1", T2): 2, (D1, "siren-1", T3): 4, (D2, "other", T1): 9})
    verdict = compare(expected, found)
    assert verdict == Verdict(messages=4, complete=1, missing=1, wrong_count=2, rows_expected=10, rows_found=9)
    assert verdict.ok is False
    assert str(verdict) == (
        "4 messages sent, 1 complete, 1 missing, 2 with a wrong row count; rows expected 10, found 9"
    )


def test_nothing_found() -> None:
    expected = Counter({(D1, "strike-1", T1): 3})
    assert compare(expected, Counter()) == Verdict(1, 0, 1, 0, 3, 0)


def test_nothing_expected_is_ok() -> None:
    verdict = compare(Counter(), Counter({(D1, "strike-1", T1): 3}))
    assert verdict == Verdict(0, 0, 0, 0, 0, 0)
    assert verdict.ok is True


def test_read_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    lines = [
        {"device_id": D1, "component": "strike-1", "time": T1, "points": 3},
        {"device_id": D2, "component": "sensor-3", "time": T1, "points": 1},
        {"device_id": D1, "component": "strike-1", "time": T1, "points": 3},
    ]
    path.write_bytes(
        b"\n".join(orjson.dumps(line) for line in lines[:1])
        + b"\n\n"
        + b"\n".join(orjson.dumps(line) for line in lines[1:])
    )
    assert read_manifest(path) == Counter({(D1, "strike-1", T1): 6, (D2, "sensor-3", T1): 1})


def test_empty_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b"")
    assert read_manifest(path) == Counter()

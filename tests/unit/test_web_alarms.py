"""The alarm views' parameters and next-page links."""

from __future__ import annotations

from typing import Any

import pytest

from f2stream.web.alarms import alarm_query, next_page
from f2stream.web.liveness import MAX_PAGE

DEVICE = "f2-e4fd45f654be"


def test_active_alarms_of_every_device_by_default() -> None:
    assert alarm_query({}) == ("active", None, "", 100)


def test_the_device_in_any_mac_spelling_and_the_paths_device_first() -> None:
    assert alarm_query({"device": "E4:FD:45:F6:54:BE", "state": "all", "after": "a", "limit": "7"}) == (
        "all", DEVICE, "a", 7,
    )  # fmt: skip
    assert alarm_query({"device": "f2-000000000001"}, "e4fd45f654be")[1] == DEVICE


@pytest.mark.parametrize(
    ("query", "device", "said"),
    [
        ({"state": "open"}, None, "state must be one of active, raised, acknowledged, cleared, all"),
        ({"device": "door-1"}, None, "is not a MAC address"),
        ({}, "door-1", "is not a MAC address"),
        ({"limit": "ten"}, None, "limit must be a whole number"),
        ({"limit": str(MAX_PAGE + 1)}, None, f"limit must be between 1 and {MAX_PAGE}"),
    ],
)
def test_a_bad_parameter_says_which(query: dict[str, str], device: str | None, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        alarm_query(query, device)


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"alarm_id": i} for i in ids]


def test_a_full_page_links_the_next_and_a_short_one_does_not() -> None:
    query = alarm_query({"device": DEVICE, "limit": "2"})
    page = rows(f"{DEVICE}:door-1-forced:0:5", f"{DEVICE}:door-1-forced:0:9")
    assert next_page("/alarms", query, page, with_device=True) == (
        f"/alarms?state=active&device={DEVICE}&after={DEVICE}%3Adoor-1-forced%3A0%3A9&limit=2"
    )
    assert next_page(f"/devices/{DEVICE}/alarms", query, page, with_device=False) == (
        f"/devices/{DEVICE}/alarms?state=active&after={DEVICE}%3Adoor-1-forced%3A0%3A9&limit=2"
    )
    assert next_page("/alarms", query, page[:1], with_device=True) is None

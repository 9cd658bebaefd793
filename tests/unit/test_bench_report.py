"""The bench report: every rate also as a share of the C-tool ceiling, tables that keep their columns."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import markdown, share

CEILING = {
    "messages": 300000,
    "clients": 8,
    "seconds": 7.5,
    "msg_per_s": 40000.0,
    "cpu_s": {"mosquitto_pub": 2.5, "mosquitto_sub": 2.2, "kcat": 1.1},
    "cpu_s_total": 5.8,
    "cpu_per_1000": {"mosquitto_pub": 8.3, "mosquitto_sub": 7.3, "kcat": 3.7, "mosquitto": 10.0, "kafka": 5.0},
    "cpu_per_1000_total": 34.3,
}


def run(path: str, offered: object, rate: float) -> dict[str, Any]:
    return {
        "path": path,
        "offered": offered,
        "publish_rate": rate + 10,
        "msg_per_s": rate,
        "rows_per_s": rate * 2.7,
        "receipt_to_commit_s": [0.016, 0.025, 0.04],
        "device_to_commit_s": [0.02, 0.03, 0.05],
        "cpu_per_1000": {"kafka": 0.03},
        "cpu_per_1000_total": 0.2,
        "lag_end": 0,
        "verify": {"ok": True, "messages": 10, "rows_found": 10},
    }


def results(ceiling: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "started": "2026-12-06T00:00:00+00:00",
        "runs": [
            {"path": "generator", "offered": "max", "msg_per_s": 98000.0, "cpu_per_1000": {"loadgen": 0.01}},
            run("bare", 2000.0, 1998.0),
            run("pipeline", 2000.0, 1996.0),
            run("pipeline", "max", 8598.0),
        ],
        "stages": {
            "ingest": {"messages": 289000, "seconds": 20.0, "msg_per_s": 14450.0, "cpu_per_1000": {"ingest": 0.06}},
            "sink": {
                "records": 300000,
                "rows": 810000,
                "seconds": 19.0,
                "records_per_s": 15808.0,
                "rows_per_s": 42579.0,
                "cpu_s_per_1000": 0.028,
            },
        },
        **({"ceiling": ceiling} if ceiling else {}),
    }


@pytest.mark.parametrize(
    ("rate", "ceiling", "shown"),
    [(8598.0, 40000.0, "21.5%"), (98000.0, 40000.0, "245.0%"), (0.0, 40000.0, "0.0%"), (None, 40000.0, "-"),
     (100.0, None, "-"), (100.0, 0.0, "-")],
)  # fmt: skip
def test_share_is_a_percentage_of_the_ceiling_or_a_dash(rate: float | None, ceiling: float | None, shown: str) -> None:
    assert share(rate, ceiling) == shown


def tables(text: str) -> list[list[str]]:
    """The Markdown tables of `text`, each as its lines."""
    found: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                found.append([])
            found[-1].append(line)
        previous = line
    return found


def test_every_rate_has_its_share_of_the_ceiling_next_to_it() -> None:
    text = markdown(results(CEILING))
    assert "## C-tool ceiling" in text
    assert "| 300000 | 8 | 7.5 | 40000.0 | 2.5 / 2.2 / 1.1 | 34.3 |" in text
    assert "| 2008.0 | 5.0% | 1998.0 | 5.0% |" in text  # bare at 2,000: acked and landed
    assert "| max | 8608.0 | 21.5% | 8598.0 | 21.5% | - |" in text  # no saturated bare run: no ratio to bare
    assert "| 14450.0 | 36.1% |" in text  # ingest alone
    assert "| 15808.0 | 39.5% |" in text  # sink alone
    assert "98000.0 msg/s acknowledged by Mosquitto (245.0% of the C ceiling" in text
    assert "| C-tool ceiling | max |" in text  # its CPU beside the runs'


def test_without_a_ceiling_the_shares_are_dashes_and_the_section_says_so() -> None:
    text = markdown(results(None))
    assert "Not measured in this run" in text
    assert "| 1998.0 | - |" in text


@pytest.mark.parametrize("ceiling", [CEILING, None], ids=["ceiling", "none"])
def test_every_table_row_has_as_many_cells_as_its_header(ceiling: dict[str, Any] | None) -> None:
    for table in tables(markdown(results(ceiling))):
        widths = {line.count("|") for line in table}
        assert len(widths) == 1, table

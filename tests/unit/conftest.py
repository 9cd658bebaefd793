"""Fixtures shared by the unit tests: the seed's parameter rows and indexes built from them."""

from __future__ import annotations

import pytest

from f2stream.codec.model import Parameter, ParameterIndex

DEVICE = "f2-e4fd45f654be"
COLUMNS = ("device_id", "mode", "component_type", "component_number", "encoding", "unit", "scale_factor")

#: The seed's rows, exactly as ARCHITECTURE.md lists them.
SEED_ROWS: tuple[tuple[str, str, str, str | None, str, str, float], ...] = (
    (DEVICE, "access-control-mode", "door-sensors", None, "boolean_map", "state", 1.0),
    (DEVICE, "access-control-mode", "strike", "1", "boolean", "state", 1.0),
    (DEVICE, "sensor-mode", "sensor", "3", "hex_to_float", "celsius", 0.1),
    (DEVICE, "alarm-mode", "motion-sensor", "1", "boolean", "presence", 1.0),
    (DEVICE, "access-control-mode", "reader", "1", "raw_string", "text", 1.0),
)

#: What a real controller also needs for the seed's example payloads.
EXTRA_ROWS: tuple[tuple[str, str, str, str | None, str, str, float], ...] = (
    (DEVICE, "access-control-mode", "exit-buttons", None, "boolean", "pressed", 1.0),
    (DEVICE, "alarm-mode", "siren", "1", "boolean", "state", 1.0),
)


def as_row(values: tuple[object, ...]) -> dict[str, object]:
    """A database row (column name to value) from a seed tuple."""
    return dict(zip(COLUMNS, values, strict=True))


@pytest.fixture
def seed_rows() -> list[dict[str, object]]:
    """The seed's five rows as database rows."""
    return [as_row(r) for r in SEED_ROWS]


@pytest.fixture
def seed_index(seed_rows: list[dict[str, object]]) -> ParameterIndex:
    """An index of the seed's five rows only."""
    return ParameterIndex(Parameter.from_row(r) for r in seed_rows)


@pytest.fixture
def full_index() -> ParameterIndex:
    """The seed's rows plus exit-buttons and siren: every example payload decodes."""
    return ParameterIndex(Parameter.from_row(as_row(r)) for r in SEED_ROWS + EXTRA_ROWS)

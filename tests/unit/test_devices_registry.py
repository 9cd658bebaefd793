"""f2stream.devices.registry: what an operator is told when the registry or the device is missing (fake connection)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from f2stream.devices.registry import RegistryError, fetch_device, list_devices, mark_revoked

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DEVICE = "f2-e4fd45f654be"
ROW = {
    "device_id": DEVICE, "serial_number": "SN", "cert_serial": "ab", "cert_sha256": "0" * 64, "issued_at": NOW,
    "expires_at": NOW, "status": "revoked", "revoked_at": NOW,
}  # fmt: skip


class Connection:
    """Answers every query with `row` (a dict), or raises `error`."""

    def __init__(self, row: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.row, self.error = row, error
        self.queries: list[tuple[str, tuple[Any, ...]]] = []

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        self.queries.append((sql, args))
        if self.error is not None:
            raise self.error
        return self.row

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        row = await self.fetchrow(sql, *args)
        return [] if row is None else [row]


async def test_revoking_returns_the_revoked_row() -> None:
    conn = Connection(ROW)
    record = await mark_revoked(conn, DEVICE, NOW)  # type: ignore[arg-type]
    assert (record.device_id, record.status, record.revoked_at) == (DEVICE, "revoked", NOW)
    assert conn.queries[0][1] == (DEVICE, NOW)


async def test_revoking_a_device_never_registered_says_where_to_look() -> None:
    with pytest.raises(
        RegistryError, match=r"device f2-e4fd45f654be is not registered: see `faust -A f2stream devices`"
    ):
        await mark_revoked(Connection(None), DEVICE, NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["fetch", "list", "revoke"])
async def test_a_missing_registry_says_run_migrate(call: str) -> None:
    conn: Any = Connection(error=asyncpg.UndefinedTableError('relation "device_registry" does not exist'))
    with pytest.raises(RegistryError, match=r"run `faust -A f2stream migrate`"):
        if call == "fetch":
            await fetch_device(conn, DEVICE)
        elif call == "list":
            await list_devices(conn)
        else:
            await mark_revoked(conn, DEVICE, NOW)


async def test_an_unknown_device_is_none_and_the_listing_keeps_every_column() -> None:
    assert await fetch_device(Connection(None), DEVICE) is None  # type: ignore[arg-type]
    (record,) = await list_devices(Connection(ROW))  # type: ignore[arg-type]
    assert record.cert_sha256 == "0" * 64 and record.serial_number == "SN"

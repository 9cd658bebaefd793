"""PostgreSQL connections: DSN from the settings, password from its secret."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from f2stream.settings import Secret

__all__ = ["connect", "create_pool", "describe_dsn"]


async def connect(dsn: str, password: Secret | None, *, timeout_s: float = 10.0) -> asyncpg.Connection:
    """Open one connection."""
    return await asyncpg.connect(dsn, password=_reveal(password), timeout=timeout_s)


async def create_pool(dsn: str, password: Secret | None, *, size: int = 2) -> asyncpg.Pool:
    """Open a small pool; connections are checked out per batch, never per message."""
    pool = await asyncpg.create_pool(dsn, password=_reveal(password), min_size=1, max_size=size, timeout=10.0)
    assert pool is not None
    return pool


def describe_dsn(dsn: str) -> str:
    """`host:port/database` for messages: never the user's password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def _reveal(password: Secret | None) -> str | None:
    return None if password is None else password.reveal()

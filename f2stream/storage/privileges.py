"""The pipeline worker's database rights: what its jobs need, what its roles hold beyond that.

The migrations' group roles (migrations/*/NNN_roles.sql) grant each job its
rights; the pipeline worker logs in as a member of f2_params_reader and
f2_params_sync (parameters database) and of f2_sink, f2_status and f2_reader
(time-series database). At start it asks the server what its roles hold: a
superuser, an owner of the tables, a role that may create in their schema or
holds more than :data:`PIPELINE_NEEDS` is said in one line, at WARNING, or
stops the worker when `F2_DB_STRICT_PRIVILEGES` is set. A right it lacks is
said at WARNING (its job would fail until it is granted).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import asyncpg

from f2stream.settings import Secret, Settings
from f2stream.storage.db import DB_ERRORS, connect, describe_dsn, failure

__all__ = [
    "PIPELINE_NEEDS",
    "TABLE_PRIVILEGES",
    "RoleRights",
    "check_pipeline_rights",
    "excess",
    "lacking",
    "read_rights",
]

logger = logging.getLogger(__name__)

Database = Literal["params", "timeseries"]

#: Every privilege a table can be granted (REFERENCES and TRIGGER included).
TABLE_PRIVILEGES: Final = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

_READ: Final = frozenset({"SELECT"})

#: What the pipeline worker does to each table: the parameter sync, liveness and the alarm
#: loop (rules, acknowledgements) read the parameters database and move the sync cursor; the
#: sink inserts measurements (ON CONFLICT DO NOTHING), the liveness writer and the alarm loop
#: upsert the current state and append its history, the web views and /health read.
PIPELINE_NEEDS: Final[Mapping[Database, Mapping[str, frozenset[str]]]] = {
    "params": {
        "device_parameters": _READ,
        "parameter_templates": _READ,
        "device_templates": _READ,
        "parameter_versions": _READ,
        "device_registry": _READ,
        "device_silence_timeouts": _READ,
        "template_silence_timeouts": _READ,
        "liveness_config_version": _READ,
        "alarm_rules": _READ,
        "alarm_acks": _READ,
        "alarm_config_version": _READ,
        "parameter_sync_state": frozenset({"SELECT", "INSERT", "UPDATE"}),
    },
    "timeseries": {
        "iot_measurements": frozenset({"SELECT", "INSERT"}),
        "device_status": frozenset({"SELECT", "INSERT", "UPDATE"}),
        "device_status_changes": frozenset({"SELECT", "INSERT"}),
        "alarms": frozenset({"SELECT", "INSERT", "UPDATE"}),
        "alarm_transitions": frozenset({"SELECT", "INSERT"}),
    },
}

_NAMES: Final[Mapping[Database, str]] = {"params": "parameters", "timeseries": "time-series"}

_ROLE = "SELECT current_user AS role, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
# Tables that do not exist (a database not migrated yet) are left out.
_TABLES = """
SELECT t.name, n.nspname AS schema,
       pg_has_role(c.relowner, 'USAGE') AS owned,
       has_schema_privilege(c.relnamespace, 'CREATE') AS schema_create,
       ARRAY(SELECT p FROM unnest($2::text[]) AS p WHERE has_table_privilege(c.oid, p)) AS held
FROM unnest($1::text[]) AS t(name)
JOIN pg_class c ON c.oid = to_regclass(t.name)
JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY array_position($1::text[], t.name)
"""


@dataclass(frozen=True, slots=True)
class RoleRights:
    """What the role a process logged in as holds in one database, as the server says."""

    role: str
    superuser: bool = False
    createrole: bool = False
    owned: tuple[str, ...] = ()
    """Tables it owns, or whose owner's rights it has (a member of the owner role)."""
    create_in: tuple[str, ...] = ()
    """Schemas of those tables in which it may create objects."""
    held: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """The privileges it holds on each table that exists, from any grant (its groups', PUBLIC's)."""


def excess(rights: RoleRights, needs: Mapping[str, frozenset[str]]) -> list[str]:
    """What `rights` hold beyond `needs`, as phrases for one line; empty when nothing.

    A superuser may do anything, an owner anything to its tables: those say
    it all, without listing the privileges that come with them.
    """
    if rights.superuser:
        return ["is a superuser"]
    found = []
    if rights.createrole:
        found.append("may create roles (CREATEROLE)")
    if rights.owned:
        every = len(rights.owned) > 1 and set(rights.owned) == set(rights.held)
        found.append("owns every table it uses" if every else f"owns {', '.join(rights.owned)}")
    if rights.create_in:
        found.append(f"may create in schema {', '.join(rights.create_in)}")
    for table, held in rights.held.items():
        extra = [p for p in TABLE_PRIVILEGES if p in held and p not in needs.get(table, frozenset())]
        if extra and table not in rights.owned:
            found.append(f"holds {', '.join(extra)} on {table}")
    return found


def lacking(rights: RoleRights, needs: Mapping[str, frozenset[str]]) -> list[str]:
    """The privileges of `needs` that `rights` lack on tables that exist, as phrases for one line."""
    found = []
    for table, held in rights.held.items():
        missing = [p for p in TABLE_PRIVILEGES if p in needs.get(table, frozenset()) and p not in held]
        if missing:
            found.append(f"{', '.join(missing)} on {table}")
    return found


async def read_rights(conn: asyncpg.Connection, tables: list[str]) -> RoleRights:
    """Ask the server what the connection's role holds on `tables` (and as a role)."""
    role = await conn.fetchrow(_ROLE)
    rows = await conn.fetch(_TABLES, tables, list(TABLE_PRIVILEGES))
    return RoleRights(
        role=role["role"],
        superuser=bool(role["rolsuper"]),
        createrole=bool(role["rolcreaterole"]),
        owned=tuple(r["name"] for r in rows if r["owned"]),
        create_in=tuple(dict.fromkeys(r["schema"] for r in rows if r["schema_create"])),
        held={r["name"]: frozenset(r["held"]) for r in rows},
    )


async def check_pipeline_rights(settings: Settings, *, timeout_s: float = 5.0) -> str | None:
    """The pipeline worker's rights in both databases: one line on what it holds beyond its needs, or None.

    What it lacks is logged at WARNING here; a database that does not answer
    is logged and left unchecked (an outage never stops the worker).
    """
    said = []
    databases: tuple[tuple[Database, str, Secret | None], ...] = (
        ("params", settings.params_dsn, settings.params_password),
        ("timeseries", settings.timeseries_dsn, settings.timeseries_password),
    )
    for database, dsn, password in databases:
        name, needs = _NAMES[database], PIPELINE_NEEDS[database]
        try:
            conn = await connect(dsn, password, timeout_s=timeout_s)
            try:
                rights = await read_rights(conn, list(needs))
            finally:
                await conn.close()
        except DB_ERRORS as exc:
            logger.warning("The rights of the pipeline worker's role in the %s database at %s were not checked "
                           "(%s); it starts anyway", name, describe_dsn(dsn), failure(exc))  # fmt: skip
            continue
        missing = lacking(rights, needs)
        if missing:
            logger.warning("The pipeline worker's role %s lacks %s in the %s database: its writes will fail until "
                           "granted (run `faust -A f2stream migrate` as the owner and make %s a member of the groups "
                           "in docs/operations.md, \"Database roles\")",
                           rights.role, "; ".join(missing), name, rights.role)  # fmt: skip
        extra = excess(rights, needs)
        if extra:
            said.append(f"in the {name} database {rights.role} {', '.join(extra)}")
    if not said:
        return None
    return (
        f"the pipeline worker holds database rights it does not need: {'; '.join(said)}; log it in as a role "
        "with only its grants (F2_PARAMS_USER, F2_TIMESERIES_USER and their _PASSWORD_FILE; docs/operations.md, "
        '"Database roles")'
    )

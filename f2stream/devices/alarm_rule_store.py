"""Alarm rules in the parameters database: loaded whole, after checking them against the parameters.

A rule watches a data point that some parameter must produce: a device's
rule one its own parameters or its template's produce, a template's rule
one of the template's, a fleet rule one of any device's or template's. A
parameter produces its `data_point`, else its `field`, else its component
type's main field (as the decoder names them, :mod:`f2stream.codec.message`);
a `boolean_map` parameter produces any boolean field, so any data point of
its component is accepted. Grants are checked the same way. The check and
the writes share one transaction: any problem and nothing is written.
`faust -A f2stream alarms` (:mod:`f2stream.commands.alarms`) uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import orjson

from f2stream.alarm_rules import SCOPES, Rule, RuleFileError, rule_as_mapping, rule_from_mapping, scope_text
from f2stream.codec.message import MAIN_FIELDS
from f2stream.codec.model import Parameter, effective_parameters

__all__ = [
    "Produced",
    "acknowledge",
    "check_rules",
    "list_rules",
    "load_rules",
    "parameter_problems",
    "produced_by",
]

# The columns a parameter row needs to say what it produces (Parameter.from_row reads them).
_PARAMETER_COLUMNS: Final = "mode, component_type, component_number, encoding, unit, scale_factor, data_point, field"
_DEVICE_ROWS = f"SELECT device_id, {_PARAMETER_COLUMNS} FROM device_parameters WHERE device_id = ANY($1::text[])"
_TEMPLATE_ROWS = f"SELECT template, {_PARAMETER_COLUMNS} FROM parameter_templates WHERE template = ANY($1::text[])"
_MEMBERSHIP = "SELECT device_id, template FROM device_templates WHERE device_id = ANY($1::text[])"
# Every distinct thing any device or template produces: small whatever the fleet's size.
_FLEET_ROWS = f"""
SELECT DISTINCT {_PARAMETER_COLUMNS.replace("unit, scale_factor", "NULL AS unit, 1.0::float8 AS scale_factor")}
FROM (SELECT {_PARAMETER_COLUMNS} FROM device_parameters
      UNION ALL SELECT {_PARAMETER_COLUMNS} FROM parameter_templates) p
"""
_UPSERT = """
INSERT INTO alarm_rules (scope, target, name, kind, severity, definition)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (scope, target, name) DO UPDATE SET
    kind = EXCLUDED.kind, severity = EXCLUDED.severity, definition = EXCLUDED.definition, updated_at = now()
"""
_LIST = "SELECT definition::text FROM alarm_rules ORDER BY array_position($1::text[], scope), target, name"
_ACK = """
INSERT INTO alarm_acks (alarm_id, device_id, acked_by, note) VALUES ($1, $2, $3, $4)
ON CONFLICT (alarm_id) DO NOTHING
"""


@dataclass
class Produced:
    """What one component type's parameters produce in one scope, by component number (None: every number)."""

    points: dict[str | None, set[str]] = field(default_factory=dict)
    #: Numbers with a `boolean_map` parameter: any data point may come from them.
    any_point: set[str | None] = field(default_factory=set)

    def add(self, parameter: Parameter) -> None:
        """Count what the parameter produces."""
        number = parameter.component_number
        if parameter.encoding == "boolean_map":
            self.any_point.add(number)
        name = parameter.data_point or parameter.field or MAIN_FIELDS.get(parameter.component_type) or "state"
        self.points.setdefault(number, set()).add(name)

    def produces(self, data_point: str, number: str | None) -> bool:
        """Whether the component (`number`; None: any of them) has the data point."""
        numbers = [n for n in self.points if number is None or n is None or n == number]
        return any(n in self.any_point or data_point in self.points[n] for n in numbers)

    def has(self, number: str | None) -> bool:
        """Whether any parameter applies to the component (`number`; None: any of them)."""
        return any(number is None or n is None or n == number for n in self.points)


def produced_by(parameters: Iterable[Parameter]) -> dict[str, Produced]:
    """What a set of parameters produces, by component type."""
    found: dict[str, Produced] = {}
    for parameter in parameters:
        found.setdefault(parameter.component_type, Produced()).add(parameter)
    return found


def check_rules(rules: Iterable[Rule], scopes: Mapping[tuple[str, str], Mapping[str, Produced]]) -> list[str]:
    """Every rule's data point (and grants') against what its scope's parameters produce; a line per problem.

    `scopes` maps (scope, target) to :func:`produced_by` of its parameters:
    a device's own with its template's, a template's, or (for the fleet)
    every device's and template's.
    """
    problems = []
    for rule in rules:
        produced = scopes.get((rule.scope, rule.target), {})
        where = f"rule {rule.name!r} ({scope_text(rule)})"
        if not produced:
            problems.append(f"{where}: {_owner(rule)} no parameters at all")
            continue
        watched = [(rule.component, rule.data_point, rule.component_number)]
        watched += [(g.component, g.data_point, rule.component_number) for g in rule.grants]
        for component, data_point, number in watched:
            of = component + ("" if number is None else f"-{number}")
            found = produced.get(component)
            if found is None or not found.has(number):
                problems.append(f"{where}: {_owner(rule)} no parameters for {of}")
            elif not found.produces(data_point, number):
                whose = "any device's or template's" if rule.scope == "fleet" else "its"
                problems.append(f"{where}: data point {data_point!r} of {of} is not produced by {whose} parameters")
    return problems


def _owner(rule: Rule) -> str:
    return "no device or template has" if rule.scope == "fleet" else f"{scope_text(rule)} has"


async def _scopes(conn: asyncpg.Connection, rules: list[Rule]) -> dict[tuple[str, str], dict[str, Produced]]:
    """What the parameters of each scope the rules name produce, read from the database."""
    devices = sorted({r.target for r in rules if r.scope == "device"})
    membership = {r["device_id"]: r["template"] for r in await conn.fetch(_MEMBERSHIP, devices)} if devices else {}
    templates = sorted({r.target for r in rules if r.scope == "template"} | set(membership.values()))
    by_template: dict[str, list[Parameter]] = {}
    for row in await conn.fetch(_TEMPLATE_ROWS, templates) if templates else []:
        by_template.setdefault(row["template"], []).append(_parameter(row, row["template"]))
    by_device: dict[str, list[Parameter]] = {}
    for row in await conn.fetch(_DEVICE_ROWS, devices) if devices else []:
        by_device.setdefault(row["device_id"], []).append(_parameter(row, row["device_id"]))
    scopes: dict[tuple[str, str], dict[str, Produced]] = {}
    for device in devices:
        inherited = by_template.get(membership.get(device, ""), [])
        scopes["device", device] = produced_by(effective_parameters(device, by_device.get(device, []), inherited))
    for template in templates:
        scopes["template", template] = produced_by(by_template.get(template, []))
    if any(r.scope == "fleet" for r in rules):
        scopes["fleet", ""] = produced_by(_parameter(r, "") for r in await conn.fetch(_FLEET_ROWS))
    return scopes


def _parameter(row: Mapping[str, Any], owner: str) -> Parameter:
    return Parameter.from_row({**dict(row), "device_id": owner})


async def parameter_problems(conn: asyncpg.Connection, rules: list[Rule]) -> list[str]:
    """:func:`check_rules` against the parameters in the database: a line per problem."""
    return check_rules(rules, await _scopes(conn, rules))


async def load_rules(conn: asyncpg.Connection, rules: list[Rule], *, replace: bool) -> int:
    """Check the rules against the parameters and write them, in one transaction; return how many.

    `replace` first deletes every rule of each scope (scope, target) the rules name.

    Raises:
        RuleFileError: every problem found, one line each; nothing was written.
    """
    async with conn.transaction():
        problems = await parameter_problems(conn, rules)
        if problems:
            raise RuleFileError(problems)
        if replace:
            named = sorted({(r.scope, r.target) for r in rules})
            await conn.execute(
                "DELETE FROM alarm_rules WHERE (scope, target) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [s for s, _ in named],
                [t for _, t in named],
            )
        await conn.executemany(
            _UPSERT,
            [(r.scope, r.target, r.name, r.kind, r.severity, orjson.dumps(rule_as_mapping(r)).decode()) for r in rules],
        )
    return len(rules)


async def list_rules(conn: asyncpg.Connection) -> list[Rule]:
    """Every rule in the database: the fleet's, then the templates', then the devices', by target and name."""
    return [rule_from_mapping(orjson.loads(r["definition"])) for r in await conn.fetch(_LIST, list(SCOPES))]


async def acknowledge(
    params_conn: asyncpg.Connection, alarm_id: str, device_id: str, by: str, note: str | None
) -> bool:
    """Record an operator's acknowledgement of an alarm; False when one is recorded already."""
    status = await params_conn.execute(_ACK, alarm_id, device_id, by, note)
    return bool(status == "INSERT 0 1")

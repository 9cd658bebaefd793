"""Alarm rules: what raises an alarm, read from a rule file or the parameters database, checked whole.

A rule watches one data point of one component type (the names the decoder
gives: `door-sensors`/`door_1`, `sensor`/`data`, ...) and belongs to the
fleet, a parameter template or one device; a device's rules are the fleet's,
overridden by name by its template's, overridden by name by its own (the
precedence of parameters). Kinds (docs/alarms.md):

* `threshold`: the value above `above` (or below `below`) for at least
  `for_s` seconds of device time; cleared when it is back at or beyond
  `clear` (hysteresis; by default the limit itself).
* `state`: the value equal to `equals` (a number, true/false, or a text
  compared without case) for at least `for_s` seconds; cleared when it
  is not.
* `door_held_open`: the door open (true) for longer than `for_s`, raised
  by a timer even when no further message arrives; cleared when it closes.
* `door_forced_open`: the door opens (false, then true) with no grant on
  the same controller within `window_s` seconds before; cleared when it
  closes. A grant is a data point of a component (`reader`/`card_id`: any
  value; `exit-buttons`/`button_pressed` equal to true; `strike`/`state`
  equal to "unlocked").

A rule file (`faust -A f2stream alarms rules load`) is checked whole:
:func:`parse_rule_file` reports every problem of every rule, one line each,
through the same checker (:func:`rule_from_mapping`) that reads the rules
back from the parameters database (`alarm_rules.definition`, written by
:func:`rule_as_mapping`).

Nothing here does I/O.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import orjson

from f2stream.codec.message import MAIN_FIELDS
from f2stream.codec.values import check_field_name
from f2stream.errors import BadMessage, F2StreamError
from f2stream.mqtt_topics import canonical_device_id

__all__ = [
    "KINDS",
    "SCOPES",
    "SEVERITIES",
    "Grant",
    "Kind",
    "Rule",
    "RuleFileError",
    "Scope",
    "Severity",
    "parse_rule_file",
    "rule_as_mapping",
    "rule_from_mapping",
    "scope_text",
]

Kind = Literal["threshold", "state", "door_held_open", "door_forced_open"]
Severity = Literal["critical", "major", "minor", "warning"]
Scope = Literal["fleet", "template", "device"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

#: A value a rule compares with: a number (true and false are 1.0 and 0.0) or a text.
Comparand = float | str


@dataclass(frozen=True, slots=True)
class Grant:
    """A data point that grants access on a controller: `equals` None means any value (a card read)."""

    component: str
    data_point: str
    equals: Comparand | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One alarm rule, checked (see the module's docstring for each kind's fields)."""

    name: str
    kind: Kind
    severity: Severity
    component: str
    data_point: str
    scope: Scope = "fleet"
    #: The template name or the device id; "" for the fleet.
    target: str = ""
    #: Only this component number (`strike-1`: "1"); None: every component of the type.
    component_number: str | None = None
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    equals: Comparand | None = None
    for_s: float = 0.0
    window_s: float = 0.0
    grants: tuple[Grant, ...] = ()
    description: str = ""


# --- Rule files and rows: checked whole ------------------------------------------------------------------------

_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TEMPLATE_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_NUMBER_RE: Final = re.compile(r"[1-9][0-9]?")
#: The fields every rule may have; each kind adds its own (`_KIND_FIELDS`).
_COMMON_FIELDS: Final = (
    "name", "kind", "severity", "device", "template", "component", "component_number", "data_point", "description",
)  # fmt: skip
_KIND_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "threshold": ("above", "below", "clear", "for_s"),
    "state": ("equals", "for_s"),
    "door_held_open": ("for_s",),
    "door_forced_open": ("window_s", "grants"),
}
_GRANT_FIELDS: Final = ("component", "data_point", "equals")
_ALL_FIELDS: Final = frozenset(_COMMON_FIELDS).union(*_KIND_FIELDS.values())


class RuleFileError(F2StreamError):
    """A rule file (or a set of rules) has problems; nothing was loaded.

    Attributes:
        problems: one line each, naming the rule and what is wrong.
        rules: the rules found good, which a caller may check further (against the parameters) to say
            every problem at once.
    """

    def __init__(self, problems: list[str], rules: list[Rule] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.rules = rules or []


def parse_rule_file(name: str, content: bytes) -> list[Rule]:
    """Read and check every rule of a .json (`{"rules": [...]}` or a list) or .toml (`[[rules]]`) file.

    Raises:
        RuleFileError: every problem of every rule, one line each (`rules.json rule 3 (door-1-forced): ...`).
    """
    items = _items_of(name, content)
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[tuple[str, str, str], int] = {}
    for number, item in enumerate(items, start=1):
        label = f"{name} rule {number}"
        if not isinstance(item, dict):
            problems.append(f"{label}: is {_kind_of(item)}, expected a table of fields")
            continue
        if isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        rule, found = _check(item)
        problems.extend(f"{label}: {p}" for p in found)
        if rule is None:
            continue
        key = (rule.scope, rule.target, rule.name)
        if key in seen:
            problems.append(f"{label}: {scope_text(rule)} already has a rule named {rule.name!r} (rule {seen[key]})")
            continue
        seen[key] = number
        rules.append(rule)
    if not items:
        problems.append(f"{name} holds no rules")
    if problems:
        raise RuleFileError(problems, rules)
    return rules


def rule_from_mapping(item: Mapping[str, Any]) -> Rule:
    """Build a rule from one item of a rule file or the `definition` of an `alarm_rules` row.

    Raises:
        ValueError: every problem of the rule, joined by "; ".
    """
    rule, problems = _check(item)
    if rule is None:
        raise ValueError("; ".join(problems))
    return rule


def rule_as_mapping(rule: Rule) -> dict[str, Any]:
    """A rule as a rule file's item: what `alarm_rules.definition` holds (`rule_from_mapping` reads it back).

    Fields at their defaults are left out.
    """
    item: dict[str, Any] = {"name": rule.name, "kind": rule.kind, "severity": rule.severity}
    if rule.scope != "fleet":
        item[rule.scope] = rule.target
    item["component"] = rule.component
    if rule.component_number is not None:
        item["component_number"] = rule.component_number
    item["data_point"] = rule.data_point
    for name in ("above", "below", "clear", "equals"):
        if getattr(rule, name) is not None:
            item[name] = getattr(rule, name)
    if rule.for_s or rule.kind == "door_held_open":
        item["for_s"] = rule.for_s
    if rule.kind == "door_forced_open":
        item["window_s"] = rule.window_s
        item["grants"] = [
            {"component": g.component, "data_point": g.data_point, **({} if g.equals is None else {"equals": g.equals})}
            for g in rule.grants
        ]
    if rule.description:
        item["description"] = rule.description
    return item


def scope_text(rule: Rule) -> str:
    """The rule's scope in words: `fleet`, `template NAME`, `device f2-...`."""
    return "fleet" if rule.scope == "fleet" else f"{rule.scope} {rule.target}"


def _items_of(name: str, content: bytes) -> list[Any]:
    """The file's rule items (not yet checked)."""
    lower = name.lower()
    if lower.endswith(".json"):
        try:
            document = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise RuleFileError([f"{name} is not JSON ({exc})"]) from exc
        if isinstance(document, list):
            return document
    elif lower.endswith(".toml"):
        try:
            document = tomllib.loads(content.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RuleFileError([f"{name} is not UTF-8 text ({exc.reason})"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise RuleFileError([f"{name} is not TOML ({exc})"]) from exc
    else:
        raise RuleFileError([f"{name}: give a .json or .toml file"])
    shape = "[[rules]] tables" if lower.endswith(".toml") else 'an object {"rules": [...]} or a list of rules'
    if not isinstance(document, dict) or not isinstance(document.get("rules", []), list):
        raise RuleFileError([f"{name} must hold {shape}"])
    unknown = sorted(set(document) - {"rules"})
    if unknown:
        raise RuleFileError([f"{name}: unknown top-level key {unknown[0]!r}; the rules go in {shape}"])
    return list(document.get("rules", []))


def _check(item: Mapping[str, Any]) -> tuple[Rule | None, list[str]]:
    """The rule an item describes, or None, and every problem found with it (a null field is an absent one)."""
    item = {k: v for k, v in item.items() if v is not None}
    problems = _unknown(item, _ALL_FIELDS)
    fields: dict[str, Any] = {}
    name = _text(
        item, "name", _NAME_RE, "a rule name (a-z, 0-9, _ and -, at most 64, a letter or digit first)", problems
    )
    if "name" not in item:
        problems.append("name is missing")
    kind = _one_of(item, "kind", KINDS, problems)
    severity = _one_of(item, "severity", SEVERITIES, problems)
    _scope(item, fields, problems)
    component = _component(item, "component", problems)
    data_point = _data_point(item, "data_point", problems)
    number = item.get("component_number")
    if number is not None:
        if isinstance(number, int) and not isinstance(number, bool):
            number = str(number)
        if isinstance(number, str) and _NUMBER_RE.fullmatch(number):
            fields["component_number"] = number
        else:
            problems.append(f"component_number {number!r} is not a component number from 1 to 99")
    description = _text(item, "description", None, "", problems)
    if description is not None:
        fields["description"] = description
    _values(item, fields, problems)
    if kind is not None:
        misplaced = sorted(k for k in item if k in _ALL_FIELDS and k not in _COMMON_FIELDS + _KIND_FIELDS[kind])
        problems.extend(f"field {k!r} does not apply to kind {kind}" for k in misplaced)
        _KIND_CHECKS[kind](item, fields, problems)
    if problems or name is None or kind is None or severity is None or component is None or data_point is None:
        return None, problems
    return Rule(name=name, kind=kind, severity=severity, component=component, data_point=data_point, **fields), []


def _scope(item: Mapping[str, Any], fields: dict[str, Any], problems: list[str]) -> None:
    """`device` or `template` (neither: the fleet) as scope and target."""
    device = _text(item, "device", None, "", problems)
    if device is not None:
        try:
            fields.update(scope="device", target=canonical_device_id(device))
        except ValueError as exc:
            problems.append(f"device: {exc}")
    template = _text(item, "template", _TEMPLATE_RE, "a template name (a-z, 0-9, _ . and -, at most 64)", problems)
    if template is not None:
        fields.update(scope="template", target=template)
    if "device" in item and "template" in item:
        problems.append("give device or template, not both (neither: the whole fleet)")


def _values(item: Mapping[str, Any], fields: dict[str, Any], problems: list[str]) -> None:
    """The limits, durations and comparand, each checked on its own."""
    for key in ("above", "below", "clear"):
        if key in item:
            fields[key] = _number(item[key], key, problems)
    for key in ("for_s", "window_s"):
        if key in item:
            seconds = _number(item[key], key, problems)
            if seconds is not None and seconds < 0:
                problems.append(f"{key} {item[key]!r} is negative: a duration is 0 or more seconds")
            elif seconds is not None:
                fields[key] = seconds
    if "equals" in item:
        fields["equals"] = _comparand(item["equals"], "equals", problems)


def _check_threshold(item: Mapping[str, Any], fields: dict[str, Any], problems: list[str]) -> None:
    above, below, clear = fields.get("above"), fields.get("below"), fields.get("clear")
    if ("above" in item) == ("below" in item):
        problems.append("a threshold rule needs exactly one limit: above or below")
    elif above is not None and clear is not None and clear > above:
        problems.append(f"clear {clear:g} is above the limit {above:g}: with above, clear is at or below it")
    elif below is not None and clear is not None and clear < below:
        problems.append(f"clear {clear:g} is below the limit {below:g}: with below, clear is at or above it")


def _check_state(item: Mapping[str, Any], fields: dict[str, Any], problems: list[str]) -> None:
    if "equals" not in item:
        problems.append("a state rule needs equals (a number, true/false or a text)")


def _check_held_open(item: Mapping[str, Any], fields: dict[str, Any], problems: list[str]) -> None:
    if "for_s" not in item:
        problems.append("a door_held_open rule needs for_s (seconds the door may stay open)")
    elif fields.get("for_s") == 0:
        problems.append("for_s must be more than 0 for door_held_open")


def _check_forced_open(item: Mapping[str, Any], fields: dict[str, Any], problems: list[str]) -> None:
    if "window_s" not in item:
        problems.append("a door_forced_open rule needs window_s (seconds a grant opens the door for)")
    elif fields.get("window_s") == 0:
        problems.append("window_s must be more than 0 for door_forced_open")
    grants = _grants(item.get("grants"), problems)
    if grants is not None:
        fields["grants"] = grants


#: What each kind requires beyond the common fields, and how its fields relate.
_KIND_CHECKS: Final[dict[str, Callable[[Mapping[str, Any], dict[str, Any], list[str]], None]]] = {
    "threshold": _check_threshold,
    "state": _check_state,
    "door_held_open": _check_held_open,
    "door_forced_open": _check_forced_open,
}


def _grants(value: object, problems: list[str]) -> tuple[Grant, ...] | None:
    if value is None:
        problems.append("a door_forced_open rule needs grants: at least one {component, data_point[, equals]}")
        return None
    if not isinstance(value, list) or not value:
        problems.append("grants must be a list of at least one {component, data_point[, equals]}")
        return None
    grants = []
    for number, entry in enumerate(value, start=1):
        found: list[str] = []
        if not isinstance(entry, dict):
            problems.append(f"grant {number} is {_kind_of(entry)}, expected {{component, data_point[, equals]}}")
            continue
        found.extend(_unknown(entry, frozenset(_GRANT_FIELDS)))
        component = _component(entry, "component", found)
        data_point = _data_point(entry, "data_point", found)
        equals = _comparand(entry["equals"], "equals", found) if "equals" in entry else None
        problems.extend(f"grant {number}: {p}" for p in found)
        if not found and component is not None and data_point is not None:
            grants.append(Grant(component, data_point, equals))
    return tuple(grants) if len(grants) == len(value) else None


def _unknown(item: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    """A line for each field not in `known`, with the known one it is most like (a typo is never ignored)."""
    found = []
    for key in sorted(str(k) for k in item if k not in known):
        like = difflib.get_close_matches(key, sorted(known), n=1)
        found.append(f"unknown field {key!r}" + (f" (did you mean {like[0]!r}?)" if like else ""))
    return found


def _text(
    item: Mapping[str, Any], key: str, pattern: re.Pattern[str] | None, what: str, problems: list[str]
) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{key} is {_kind_of(value)}, expected text")
    elif pattern is not None and not pattern.fullmatch(value):
        problems.append(f"{key} {value!r} is not {what}")
    else:
        return value
    return None


def _one_of(item: Mapping[str, Any], key: str, allowed: tuple[str, ...], problems: list[str]) -> Any:
    value = item.get(key)
    if value is None:
        problems.append(f"{key} is missing (one of {', '.join(allowed)})")
    elif value not in allowed:
        problems.append(f"unknown {key} {value!r} (one of {', '.join(allowed)})")
    else:
        return value
    return None


def _component(item: Mapping[str, Any], key: str, problems: list[str]) -> str | None:
    value = item.get(key)
    if value is None:
        problems.append(f"{key} is missing (one of {', '.join(MAIN_FIELDS)})")
    elif value not in MAIN_FIELDS:
        problems.append(f"unknown {key} {value!r} (one of {', '.join(MAIN_FIELDS)})")
    else:
        return str(value)
    return None


def _data_point(item: Mapping[str, Any], key: str, problems: list[str]) -> str | None:
    value = item.get(key)
    if value is None:
        problems.append(f"{key} is missing")
        return None
    if not isinstance(value, str):
        problems.append(f"{key} is {_kind_of(value)}, expected text")
        return None
    try:
        return check_field_name(value)
    except BadMessage as exc:
        problems.append(f"{key}: {exc.detail}")
        return None


def _number(value: object, key: str, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{key} is {_kind_of(value)}, expected a finite number")
        return None
    return float(value)


def _comparand(value: object, key: str, problems: list[str]) -> Comparand | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        if value.strip():
            return value
        problems.append(f"{key} is empty text")
        return None
    number = _number(value, key, problems)
    return number


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    return "a list" if isinstance(value, list) else "a table" if isinstance(value, dict) else type(value).__name__

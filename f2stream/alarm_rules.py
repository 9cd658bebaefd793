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

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = ["KINDS", "SCOPES", "SEVERITIES", "Grant", "Kind", "Rule", "Scope", "Severity"]

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

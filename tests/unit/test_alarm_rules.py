"""f2stream.alarm_rules: rule files and rows checked whole, every problem on its own line; the round trip."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f2stream.alarm_rules import (
    KINDS,
    SCOPES,
    SEVERITIES,
    Grant,
    Rule,
    RuleFileError,
    parse_rule_file,
    rule_as_mapping,
    rule_from_mapping,
)
from f2stream.codec.message import MAIN_FIELDS
from f2stream.codec.model import ParameterIndex
from f2stream.devices.alarm_rule_store import Produced, check_rules, produced_by

DEVICE = "f2-e4fd45f654be"

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300)

FORCED: dict[str, Any] = {
    "name": "door-1-forced",
    "kind": "door_forced_open",
    "severity": "critical",
    "device": "E4:FD:45:F6:54:BE",
    "component": "door-sensors",
    "data_point": "door_1",
    "window_s": 5,
    "grants": [
        {"component": "reader", "data_point": "card_id"},
        {"component": "exit-buttons", "data_point": "button_pressed", "equals": True},
        {"component": "strike", "data_point": "state", "equals": "unlocked"},
    ],
    "description": "door 1 opened without a card, a button or the strike",
}
HOT: dict[str, Any] = {
    "name": "cabinet-hot",
    "kind": "threshold",
    "severity": "major",
    "template": "cabinet.v2",
    "component": "sensor",
    "component_number": "3",
    "data_point": "data",
    "above": 40,
    "clear": 38.5,
    "for_s": 30,
}


def problems_of(name: str, content: bytes) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        parse_rule_file(name, content)
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def problems_of_rule(**fields: Any) -> list[str]:
    """The problems of one rule: HOT with `fields` changed (None: absent, as a JSON null is)."""
    return problems_of("rules.json", orjson.dumps([{**HOT, **fields}]))


# --- good files ----------------------------------------------------------------------------------------------


def test_a_json_file_with_every_kind() -> None:
    held = {"name": "door-1-held", "kind": "door_held_open", "severity": "minor", "component": "door-sensors",
            "data_point": "door_1", "for_s": 60}  # fmt: skip
    exit_stuck = {"name": "exit-stuck", "kind": "state", "severity": "warning", "component": "exit-buttons",
                  "data_point": "button_pressed", "equals": True, "for_s": 120}  # fmt: skip
    rules = parse_rule_file("rules.json", orjson.dumps({"rules": [FORCED, HOT, held, exit_stuck]}))
    assert rules == [
        Rule(name="door-1-forced", kind="door_forced_open", severity="critical", component="door-sensors",
             data_point="door_1", scope="device", target=DEVICE, window_s=5.0,
             grants=(Grant("reader", "card_id"), Grant("exit-buttons", "button_pressed", 1.0),
                     Grant("strike", "state", "unlocked")),
             description="door 1 opened without a card, a button or the strike"),
        Rule(name="cabinet-hot", kind="threshold", severity="major", component="sensor", data_point="data",
             scope="template", target="cabinet.v2", component_number="3", above=40.0, clear=38.5, for_s=30.0),
        Rule(name="door-1-held", kind="door_held_open", severity="minor", component="door-sensors",
             data_point="door_1", for_s=60.0),
        Rule(name="exit-stuck", kind="state", severity="warning", component="exit-buttons",
             data_point="button_pressed", equals=1.0, for_s=120.0),
    ]  # fmt: skip
    assert parse_rule_file("rules.json", orjson.dumps([FORCED, HOT])) == rules[:2]  # a bare list too


def test_a_toml_file() -> None:
    content = b"""
[[rules]]
name = "cabinet-hot"
kind = "threshold"
severity = "major"
template = "cabinet.v2"
component = "sensor"
component_number = 3
data_point = "data"
above = 40
clear = 38.5
for_s = 30

[[rules]]
name = "strike-open"
kind = "state"
severity = "warning"
component = "strike"
data_point = "state"
equals = "Unlocked"
"""
    hot, strike = parse_rule_file("rules.TOML", content)
    assert hot == rule_from_mapping(HOT)
    assert strike.equals == "Unlocked" and strike.scope == "fleet" and strike.target == ""


def test_below_with_clear_above_it() -> None:
    item = {k: v for k, v in HOT.items() if k != "above"} | {"below": 5, "clear": 7}
    (rule,) = parse_rule_file("r.json", orjson.dumps([item]))
    assert (rule.below, rule.clear, rule.above) == (5.0, 7.0, None)


# --- every problem, one line each ----------------------------------------------------------------------------


def test_every_problem_of_every_rule_is_said_with_the_rules_position_and_name() -> None:
    bad_kind = {**FORCED, "kind": "door_forcd"}
    no_limit = {k: v for k, v in HOT.items() if k not in ("above", "clear")} | {"name": "no-limit"}
    negative = {**FORCED, "name": "negative", "window_s": -5}
    problems = problems_of("rules.json", orjson.dumps({"rules": [HOT, bad_kind, no_limit, negative]}))
    assert problems == [
        "rules.json rule 2 (door-1-forced): unknown kind 'door_forcd' "
        "(one of threshold, state, door_held_open, door_forced_open)",
        "rules.json rule 3 (no-limit): a threshold rule needs exactly one limit: above or below",
        "rules.json rule 4 (negative): window_s -5 is negative: a duration is 0 or more seconds",
    ]


def test_several_problems_of_one_rule_are_each_said() -> None:
    problems = problems_of_rule(severity="big", component="door", data_point="", wndow_s=3)
    assert problems == [
        "rules.json rule 1 (cabinet-hot): unknown field 'wndow_s' (did you mean 'window_s'?)",
        "rules.json rule 1 (cabinet-hot): unknown severity 'big' (one of critical, major, minor, warning)",
        "rules.json rule 1 (cabinet-hot): unknown component 'door' (one of strike, door-sensors, reader, "
        "exit-buttons, siren, motion-sensor, sensor)",
        "rules.json rule 1 (cabinet-hot): data_point: field name '' must be 1 to 64 characters without NUL",
    ]


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"kind": None}, "kind is missing (one of threshold, state, door_held_open, door_forced_open)"),
        ({"severity": None}, "severity is missing (one of critical, major, minor, warning)"),
        ({"component": None}, "component is missing"),
        ({"data_point": None}, "data_point is missing"),
        ({"data_point": 7}, "data_point is the number 7, expected text"),
        ({"below": 3}, "a threshold rule needs exactly one limit: above or below"),
        ({"clear": 41}, "clear 41 is above the limit 40: with above, clear is at or below it"),
        ({"above": "40"}, "above is the text '40', expected a finite number"),
        ({"above": True}, "above is true, expected a finite number"),
        ({"for_s": -0.5}, "for_s -0.5 is negative: a duration is 0 or more seconds"),
        ({"name": "Cabinet Hot"}, "name 'Cabinet Hot' is not a rule name"),
        ({"name": "x" * 65}, "is not a rule name"),
        ({"template": "Cabinet/2"}, "template 'Cabinet/2' is not a template name"),
        ({"template": None, "device": "f2-nothex"}, "device: 'f2-nothex' is not a MAC address"),
        ({"device": DEVICE}, "give device or template, not both (neither: the whole fleet)"),
        ({"component_number": "0"}, "component_number '0' is not a component number from 1 to 99"),
        ({"equals": 3}, "field 'equals' does not apply to kind threshold"),
        ({"window_s": 3}, "field 'window_s' does not apply to kind threshold"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"description": 5}, "description is the number 5, expected text"),
    ],
)
def test_a_problem_of_a_threshold_rule(fields: dict[str, Any], said: str) -> None:
    problems = problems_of_rule(**fields)
    assert any(said in p for p in problems), problems
    assert all(p.startswith("rules.json rule 1") for p in problems)


def test_below_needs_clear_at_or_above_it() -> None:
    item = {k: v for k, v in HOT.items() if k != "above"} | {"below": 5, "clear": 4}
    assert problems_of("r.json", orjson.dumps([item])) == [
        "r.json rule 1 (cabinet-hot): clear 4 is below the limit 5: with below, clear is at or above it"
    ]


#: HOT made a rule of another kind: its limits gone.
_NOT_THRESHOLD: dict[str, Any] = {"clear": None, "above": None, "for_s": None}
_STATE: dict[str, Any] = {**_NOT_THRESHOLD, "kind": "state"}
_HELD: dict[str, Any] = {**_NOT_THRESHOLD, "kind": "door_held_open"}
_FORCED: dict[str, Any] = {
    **_NOT_THRESHOLD,
    "kind": "door_forced_open",
    "window_s": 5,
    "grants": [{"component": "reader", "data_point": "card_id"}],
}


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ({**_STATE, "for_s": 5}, "a state rule needs equals"),
        ({**_STATE, "equals": ""}, "equals is empty text"),
        ({**_STATE, "equals": [1]}, "equals is a list, expected a finite"),
        (_HELD, "needs for_s"),
        ({**_HELD, "for_s": 0}, "for_s must be more than 0"),
        ({**_FORCED, "window_s": None}, "needs window_s"),
        ({**_FORCED, "window_s": 0}, "window_s must be more than 0"),
        ({**_FORCED, "grants": None}, "needs grants"),
        ({**_FORCED, "grants": []}, "grants must be a list of at least one"),
        (
            {**_FORCED, "grants": [{"component": "reader", "data_point": "card_id", "eqals": 1}]},
            "grant 1: unknown field 'eqals' (did you mean 'equals'?)",
        ),
        (
            {**_FORCED, "grants": [{"component": "card-reader", "data_point": "card_id"}]},
            "grant 1: unknown component 'card-reader'",
        ),
        ({**_FORCED, "grants": ["reader"]}, "grant 1 is the text 'reader', expected"),
    ],
)
def test_a_problem_of_another_kind(item: dict[str, Any], said: str) -> None:
    problems = problems_of_rule(**item)
    assert any(said in p for p in problems), problems


def test_the_same_name_in_the_same_scope_twice() -> None:
    other_scope = {**HOT, "template": "cabinet.v3"}
    problems = problems_of("r.json", orjson.dumps([HOT, other_scope, {**HOT, "above": 50}]))
    assert problems == ["r.json rule 3 (cabinet-hot): template cabinet.v2 already has a rule named 'cabinet-hot' "
                        "(rule 1)"]  # fmt: skip


def test_a_mac_spelling_is_the_same_device() -> None:
    spelled = {**FORCED, "device": "e4fd.45f6.54be"}
    problems = problems_of("r.json", orjson.dumps([FORCED, spelled]))
    assert problems == [f"r.json rule 2 (door-1-forced): device {DEVICE} already has a rule named 'door-1-forced' "
                        "(rule 1)"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("r.yaml", b"rules: []", "r.yaml: give a .json or .toml file"),
        ("r.json", b"{", "r.json is not JSON"),
        ("r.json", b'{"rules": {}}', "r.json must hold an object"),
        ("r.json", b'{"rule": []}', "r.json: unknown top-level key 'rule'"),
        ("r.json", b"[]", "r.json holds no rules"),
        ("r.json", b"[3]", "r.json rule 1: is the number 3, expected a table of fields"),
        ("r.toml", b"[[rules]\n", "r.toml is not TOML"),
        ("r.toml", b"\xff", "r.toml is not UTF-8 text"),
        ("r.toml", b"[[rule]]\nname = 'x'\n", "r.toml: unknown top-level key 'rule'; the rules go in [[rules]] tables"),
        ("r.toml", b"", "r.toml holds no rules"),
    ],
)
def test_a_file_that_is_not_a_rule_file(name: str, content: bytes, said: str) -> None:
    (problem,) = problems_of(name, content)
    assert problem.startswith(said), problem


def test_rule_from_mapping_raises_value_error_with_every_reason() -> None:
    with pytest.raises(ValueError, match=r"unknown kind 'x' .*; unknown severity 'y'"):
        rule_from_mapping({**HOT, "kind": "x", "severity": "y"})
    assert rule_from_mapping(HOT).target == "cabinet.v2"


# --- the round trip: what is stored as jsonb reads back as the same rule ------------------------------------

_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
_numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
_seconds = st.floats(min_value=0, max_value=1e7, allow_nan=False)
_comparands = st.one_of(_numbers, st.text(min_size=1, max_size=20).filter(str.strip))
_points = st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s)
_components = st.sampled_from(sorted(MAIN_FIELDS))
_grants = st.builds(Grant, _components, _points, st.none() | _comparands)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(KINDS))
    scope = draw(st.sampled_from(SCOPES))
    target = {
        "fleet": "",
        "template": draw(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)),
        "device": "f2-" + draw(st.from_regex(r"[0-9a-f]{12}", fullmatch=True)),
    }[scope]
    fields: dict[str, Any] = {}
    if kind == "threshold":
        limit, margin = draw(_numbers), draw(st.none() | st.floats(min_value=0, max_value=100))
        side = draw(st.sampled_from(["above", "below"]))
        fields[side] = limit
        if margin is not None:
            fields["clear"] = limit - margin if side == "above" else limit + margin
        fields["for_s"] = draw(_seconds)
    elif kind == "state":
        fields.update(equals=draw(_comparands), for_s=draw(_seconds))
    elif kind == "door_held_open":
        fields["for_s"] = draw(st.floats(min_value=0.001, max_value=1e6))
    else:
        fields["window_s"] = draw(st.floats(min_value=0.001, max_value=1e6))
        fields["grants"] = tuple(draw(st.lists(_grants, min_size=1, max_size=3)))
    return Rule(
        name=draw(_names),
        kind=kind,
        severity=draw(st.sampled_from(SEVERITIES)),
        component=draw(_components),
        data_point=draw(_points),
        scope=scope,
        target=target,
        component_number=draw(st.none() | st.integers(1, 99).map(str)),
        description=draw(st.text(max_size=40)),
        **fields,
    )


@PROPERTY
@given(rules())
def test_a_rule_as_mapping_reads_back_as_the_same_rule_through_json(rule: Rule) -> None:
    stored = orjson.loads(orjson.dumps(rule_as_mapping(rule)))
    assert rule_from_mapping(stored) == rule
    assert rule_as_mapping(rule_from_mapping(stored)) == stored


def test_the_mapping_is_the_file_format() -> None:
    rule = rule_from_mapping(FORCED)
    assert rule_as_mapping(rule) == {
        **FORCED,
        "device": DEVICE,
        "window_s": 5.0,
        "grants": [
            {"component": "reader", "data_point": "card_id"},
            {"component": "exit-buttons", "data_point": "button_pressed", "equals": 1.0},
            {"component": "strike", "data_point": "state", "equals": "unlocked"},
        ],
    }


# --- data points against the parameters (f2stream.devices.alarm_rule_store, pure part) ----------------------


def seed_produced(index: ParameterIndex) -> dict[str, Produced]:
    codec = index.codec(DEVICE)
    assert codec is not None
    return produced_by(codec.parameters)


def test_what_the_seed_parameters_produce(full_index: ParameterIndex) -> None:
    produced = seed_produced(full_index)
    assert produced["door-sensors"].produces("door_7", None)  # boolean_map: any boolean field
    assert produced["strike"].produces("state", "1") and not produced["strike"].produces("state", "2")
    assert produced["sensor"].produces("data", None) and not produced["sensor"].produces("temperature", "3")
    assert produced["reader"].produces("card_id", "1")
    assert produced["exit-buttons"].produces("button_pressed", None)


def test_check_rules_says_each_data_point_no_parameter_produces(full_index: ParameterIndex) -> None:
    scopes: dict[tuple[str, str], dict[str, Produced]] = {("device", DEVICE): seed_produced(full_index)}
    forced = rule_from_mapping(FORCED)
    hot = rule_from_mapping({**HOT, "template": None, "device": DEVICE, "data_point": "temperature"})
    siren = rule_from_mapping({**HOT, "template": None, "device": DEVICE, "component": "siren",
                               "component_number": "2", "data_point": "state"})  # fmt: skip
    empty = rule_from_mapping({**HOT, "template": "empty"})
    assert check_rules([forced, hot, siren, empty], scopes) == [
        f"rule 'cabinet-hot' (device {DEVICE}): data point 'temperature' of sensor-3 is not produced by its parameters",
        f"rule 'cabinet-hot' (device {DEVICE}): device {DEVICE} has no parameters for siren-2",
        "rule 'cabinet-hot' (template empty): template empty has no parameters at all",
    ]
    bad_grant = rule_from_mapping({**FORCED, "grants": [{"component": "reader", "data_point": "pin"}]})
    assert check_rules([bad_grant], scopes) == [
        f"rule 'door-1-forced' (device {DEVICE}): data point 'pin' of reader is not produced by its parameters"
    ]

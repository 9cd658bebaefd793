"""`faust -A f2stream alarms`: alarm rules and alarms without writing SQL.

    alarms rules load FILE [--replace]   rules from a .json or .toml file, checked whole, all or nothing
    alarms rules list                    every rule, one JSON line each (the file's format)
    alarms list [--state S] [--device D] [--limit N]
                                         alarms by id (state: active, raised, acknowledged, cleared, all)
    alarms ack ALARM_ID [--by NAME] [--note TEXT]
                                         record an operator's acknowledgement of a raised alarm

A rule file is checked whole, its data points against the parameters of
each rule's scope, before anything is written (:mod:`f2stream.alarm_rules`,
:mod:`f2stream.devices.alarm_rule_store`); each problem is one line on
stderr. `--replace` first deletes every rule of the scopes the file names.
The alarms are the pipeline's, in the time-series database; an
acknowledgement is recorded in the parameters database, and the worker
that owns the device emits the alarm's `acknowledged` transition.
"""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg
import faust
import orjson
from faust.cli import argument, option

from f2stream.alarm_rules import Rule, RuleFileError, parse_rule_file, rule_as_mapping
from f2stream.commands.base import ERROR_EXIT, CommandError, connect_database, device_id_of, one_line_errors
from f2stream.devices.alarm_rule_store import acknowledge, list_rules, load_rules, parameter_problems
from f2stream.settings import Settings
from f2stream.storage.alarms import LIST_STATES, list_alarms

__all__ = ["Request", "format_alarms", "register", "request_of"]

_ACTIONS: Final = ("rules load FILE", "rules list", "list", "ack ALARM_ID")
_DEFAULT_LIMIT: Final = 100
_MAX_LIMIT: Final = 10_000
_MAX_BY: Final = 100
_MAX_NOTE: Final = 1000
_ALARM = "SELECT device_id, state, acknowledged_by FROM alarms WHERE alarm_id = $1"


@dataclass(frozen=True, slots=True)
class Request:
    """What was asked, checked: one of the actions with its arguments."""

    action: str
    """`rules load`, `rules list`, `list` or `ack`."""
    rules: tuple[Rule, ...] = ()
    #: The rule file's problems: its good rules are still checked against the parameters, to say all at once.
    problems: tuple[str, ...] = ()
    replace: bool = False
    state: str = "active"
    device: str | None = None
    limit: int = _DEFAULT_LIMIT
    alarm_id: str = ""
    by: str = ""
    note: str | None = None


def register(app: faust.App, settings: Settings) -> None:
    """Attach the `alarms` command."""

    @app.command(
        argument("words", nargs=-1),
        option("--replace", is_flag=True, default=False, help="rules load: first delete the rules of its scopes."),
        option("--state", default=None, help=f"list: {', '.join(LIST_STATES)} (default active)."),
        option("--device", default=None, help="list: only this device (any MAC spelling)."),
        option("--limit", default=None, help=f"list: at most this many (default {_DEFAULT_LIMIT})."),
        option("--by", default=None, help="ack: who acknowledges (default: the OS user name)."),
        option("--note", default=None, help="ack: a note kept with the acknowledgement."),
    )
    @one_line_errors
    async def alarms(self: Any, words: tuple[str, ...], **options: Any) -> None:
        """Alarm rules and alarms: rules load FILE, rules list, list, ack ALARM_ID."""
        try:
            request = request_of(words, **options)
            await _run(settings, request)
        except RuleFileError as exc:
            for problem in exc.problems:
                print(f"f2stream: {' '.join(problem.splitlines())}", file=sys.stderr, flush=True)
            raise SystemExit(ERROR_EXIT) from None


def request_of(
    words: tuple[str, ...],
    *,
    replace: bool = False,
    state: str | None = None,
    device: str | None = None,
    limit: str | None = None,
    by: str | None = None,
    note: str | None = None,
) -> Request:
    """Check the arguments (and read and check a rule file) before touching a database.

    A rule file's problems are kept in the request: its good rules are checked against the parameters
    before they are said, all together.

    Raises:
        CommandError: a bad argument, in one line.
        RuleFileError: the rule file cannot be read.
    """
    action = " ".join(words[:2]) if words[:1] == ("rules",) else " ".join(words[:1])
    rest = words[len(action.split()) :]
    expected = {"rules load": 1, "rules list": 0, "list": 0, "ack": 1}
    if action not in expected or len(rest) != expected[action]:
        raise CommandError(f"give one of: {'; '.join(f'alarms {a}' for a in _ACTIONS)} (not {' '.join(words)!r})")
    given = {"--replace": replace, "--state": state, "--device": device, "--limit": limit, "--by": by, "--note": note}
    allowed = {"rules load": {"--replace"}, "list": {"--state", "--device", "--limit"}, "ack": {"--by", "--note"}}
    for name, value in given.items():
        if value not in (None, False) and name not in allowed.get(action, set()):
            raise CommandError(f"{name} does not apply to `alarms {action}`")
    if action == "rules load":
        try:
            return Request(action, rules=tuple(_read_rules(Path(rest[0]))), replace=replace)
        except RuleFileError as exc:
            return Request(action, rules=tuple(exc.rules), problems=tuple(exc.problems))
    if action == "list":
        if state is not None and state not in LIST_STATES:
            raise CommandError(f"--state must be one of {', '.join(LIST_STATES)}, not {state!r}")
        return Request(
            action,
            state=state or "active",
            device=None if device is None else device_id_of(device),
            limit=_DEFAULT_LIMIT if limit is None else _limit(limit),
        )
    if action == "ack":
        return Request(action, alarm_id=_alarm_id(rest[0]), by=_by(by), note=_note(note))
    return Request(action)


def _read_rules(path: Path) -> list[Rule]:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise RuleFileError([f"cannot read {path}: {exc.strerror}"]) from exc
    return parse_rule_file(path.name, content)


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIMIT:
        raise CommandError(f"--limit must be a whole number from 1 to {_MAX_LIMIT}, not {text!r}")
    return limit


def _alarm_id(text: str) -> str:
    if not text.strip() or len(text) > 300 or not text.isprintable():
        raise CommandError(f"{text[:80]!r} is not an alarm id (see `faust -A f2stream alarms list`)")
    return text.strip()


def _by(name: str | None) -> str:
    if name is None:
        try:
            name = getpass.getuser()
        except (KeyError, OSError) as exc:
            raise CommandError("cannot tell the OS user name: give --by NAME") from exc
    name = name.strip()
    if not name or len(name) > _MAX_BY or not name.isprintable():
        raise CommandError(f"--by must be a name of 1 to {_MAX_BY} printable characters")
    return name


def _note(note: str | None) -> str | None:
    if note is not None and (len(note) > _MAX_NOTE or not note.replace("\n", " ").isprintable()):
        raise CommandError(f"--note must be at most {_MAX_NOTE} printable characters")
    return note


async def _run(settings: Settings, request: Request) -> None:
    if request.action.startswith("rules"):
        conn = await connect_database(settings, "params")
        try:
            await _rules(conn, request)
        except asyncpg.UndefinedTableError as exc:
            raise CommandError("the alarm_rules table does not exist: run `faust -A f2stream migrate`") from exc
        finally:
            await conn.close()
    elif request.action == "list":
        conn = await connect_database(settings, "timeseries")
        try:
            rows = await list_alarms(conn, state=request.state, device=request.device, after=None, limit=request.limit)
        except asyncpg.UndefinedTableError as exc:
            raise _no_alarms_table() from exc
        finally:
            await conn.close()
        for line in format_alarms(rows):
            print(line, flush=True)
    else:
        await _acknowledge(settings, request)


async def _rules(conn: asyncpg.Connection, request: Request) -> None:
    if request.action == "rules list":
        for rule in await list_rules(conn):
            print(orjson.dumps(rule_as_mapping(rule)).decode(), flush=True)
        return
    if request.problems:
        raise RuleFileError([*request.problems, *await parameter_problems(conn, list(request.rules))])
    count = await load_rules(conn, list(request.rules), replace=request.replace)
    scopes = len({(r.scope, r.target) for r in request.rules})
    replaced = "; every other rule of those scopes deleted" if request.replace else ""
    print(f"alarms: {count} rules of {scopes} scopes loaded{replaced}; the pipeline applies them live", flush=True)


async def _acknowledge(settings: Settings, request: Request) -> None:
    conn = await connect_database(settings, "timeseries")
    try:
        alarm = await conn.fetchrow(_ALARM, request.alarm_id)
    except asyncpg.UndefinedTableError as exc:
        raise _no_alarms_table() from exc
    finally:
        await conn.close()
    if alarm is None:
        raise CommandError(f"no such alarm {request.alarm_id!r} (see `faust -A f2stream alarms list --state all`)")
    if alarm["state"] == "acknowledged":
        raise CommandError(f"alarm {request.alarm_id} is already acknowledged (by {alarm['acknowledged_by']})")
    if alarm["state"] != "raised":
        raise CommandError(f"alarm {request.alarm_id} is already {alarm['state']}")
    conn = await connect_database(settings, "params")
    try:
        recorded = await acknowledge(conn, request.alarm_id, alarm["device_id"], request.by, request.note)
    except asyncpg.UndefinedTableError as exc:
        raise CommandError("the alarm_acks table does not exist: run `faust -A f2stream migrate`") from exc
    finally:
        await conn.close()
    if not recorded:
        raise CommandError(
            f"an acknowledgement of alarm {request.alarm_id} is already recorded; the pipeline emits it shortly"
        )
    print(
        f"alarms: acknowledgement of {request.alarm_id} by {request.by} recorded; the pipeline worker that owns "
        f"{alarm['device_id']} emits its acknowledged transition",
        flush=True,
    )


def _no_alarms_table() -> CommandError:
    return CommandError("the alarms table does not exist in the time-series database: run `faust -A f2stream migrate`")


def format_alarms(rows: list[dict[str, Any]]) -> list[str]:
    """The `alarms list` table: a header, then one line per alarm (times as `list_alarms` gives them, UTC)."""
    lines = [f"{'raised (UTC)':<32} {'state':<12} {'severity':<8} {'data point = value':<24} alarm id"]
    for r in rows:
        value = r.get("text_value") if r.get("value") is None else f"{r['value']:g}"
        reading = f"{r['data_point']} = {'-' if value is None else value}"
        done = ""
        if r.get("acknowledged_by"):
            done += f"  acknowledged by {r['acknowledged_by']} at {r.get('acknowledged_at')}"
        if r.get("cleared_at"):
            done += f"  cleared at {r['cleared_at']}"
        lines.append(
            f"{r['raised_at'] or '-':<32} {r['state']:<12} {r['severity']:<8} {reading:<24} {r['alarm_id']}{done}"
        )
    return lines

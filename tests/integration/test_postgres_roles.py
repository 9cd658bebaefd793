"""Database roles with the least rights (issue 25), on real PostgreSQL: what each role may do, and is refused.

The migrations make the group roles (params/006_roles, timeseries/008_roles)
and grant each one job's rights; the stack makes the login roles f2_pipeline
(the pipeline worker) and f2_repairer (replay, redrive) members of the groups
they need. The secure stack's pipeline worker refuses to start as the owner
(F2_DB_STRICT_PRIVILEGES=1); the plain stack's says so at WARNING.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from harness import Stack, Workers, db_login, principal

from bench.stack import free_ports
from f2stream.settings import Settings
from f2stream.storage.db import connect, failure
from f2stream.storage.migrate import load_migrations
from f2stream.storage.privileges import check_pipeline_rights

DEVICE = "f2-02f2000099a1"


def settings_of(stack: Stack, login: str | None) -> Settings:
    """The stack's settings, logged in as the owner (None) or as one of its processes (PIPELINE, REPAIR)."""
    return Settings.from_env({**stack.env, **(db_login(stack, login) if login else {})})


async def timeseries(stack: Stack, login: str | None) -> asyncpg.Connection:
    settings = settings_of(stack, login)
    return await connect(settings.timeseries_dsn, settings.timeseries_password)


async def params(stack: Stack, login: str | None) -> asyncpg.Connection:
    settings = settings_of(stack, login)
    return await connect(settings.params_dsn, settings.params_password)


async def superuser(stack: Stack, dsn: str) -> asyncpg.Connection:
    """The cluster's superuser, on the stack's socket (pg_hba trusts the server owner there)."""
    user = "postgres" if os.geteuid() == 0 else getpass.getuser()
    parts = urlsplit(dsn)
    return await asyncpg.connect(
        host=stack.env["F2_STACK_SOCKET_DIR"], port=parts.port, user=user, database=parts.path.lstrip("/")
    )


async def rows_of(conn: asyncpg.Connection, device: str) -> list[tuple[object, ...]]:
    return [
        tuple(r) for r in await conn.fetch("SELECT * FROM iot_measurements WHERE device_id = $1 ORDER BY 1", device)
    ]


_INSERT = """
INSERT INTO iot_measurements (time, device_id, mode, connector, component, data_point, value, unit, source_topic,
                              received_at)
VALUES ($1, $2, 'sensor-mode', 4, 'sensor-3', 'celsius', 20.5, 'celsius', 'stat/x', now())
ON CONFLICT DO NOTHING
"""

# What neither the sink nor the repair may do to iot_measurements (the owner's), and the line each refusal says.
_OWNERS_ONLY = [
    ("TRUNCATE iot_measurements", "permission denied for table iot_measurements"),
    ("ALTER TABLE iot_measurements ADD COLUMN note text", "must be owner of table iot_measurements"),
    ("DROP TABLE iot_measurements", "must be owner of table iot_measurements"),
    ("CREATE INDEX ON iot_measurements (value)", "must be owner of table iot_measurements"),
    ("CREATE TABLE iot_measurements_copy (LIKE iot_measurements)", "permission denied for schema public"),
    ("GRANT DELETE ON iot_measurements TO PUBLIC", "no privileges were granted"),  # a WARNING, not an error
]


async def refused(conn: asyncpg.Connection, statement: str, *args: object) -> str:
    """The one line a statement the server refuses for want of a privilege ends in."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as caught:
        await conn.execute(statement, *args)
    return failure(caught.value)


async def test_the_sinks_role_inserts_and_reads_but_may_not_delete_truncate_or_change_the_table(
    secure_stack: Stack,
) -> None:
    stack = secure_stack
    owner, sink = await timeseries(stack, None), await timeseries(stack, "PIPELINE")
    try:
        assert await sink.fetchval("SELECT current_user") == "f2_pipeline"
        moment = datetime.now(UTC).replace(microsecond=123456)
        assert await sink.execute(_INSERT, moment, DEVICE) == "INSERT 0 1"
        assert await sink.execute(_INSERT, moment, DEVICE) == "INSERT 0 0"  # a re-delivery lands once
        before = await rows_of(owner, DEVICE)
        assert len(before) == 1 and await rows_of(sink, DEVICE) == before  # it reads what it wrote
        line = await refused(sink, "DELETE FROM iot_measurements WHERE device_id = $1", DEVICE)
        assert line == (
            "InsufficientPrivilegeError: permission denied for table iot_measurements; the role lacks a privilege: "
            "run `faust -A f2stream migrate` as the owner, or GRANT it"
        )
        assert "permission denied for table iot_measurements" in await refused(
            sink, "UPDATE iot_measurements SET value = 0 WHERE device_id = $1", DEVICE
        )
        for statement, said in _OWNERS_ONLY:
            if statement.startswith("GRANT"):
                continue  # a role without the grant option is warned, not refused: below
            assert said in await refused(sink, statement), statement
        warned: list[str] = []
        sink.add_log_listener(lambda _conn, message: warned.append(str(message)))
        await sink.execute("GRANT DELETE ON iot_measurements TO PUBLIC")
        assert any("no privileges were granted" in w for w in warned), warned
        # The liveness writer's tables: its upsert and its history, never a DELETE.
        assert "permission denied for table device_status" in await refused(sink, "DELETE FROM device_status")
        assert "permission denied for table device_status_changes" in await refused(
            sink, "TRUNCATE device_status_changes"
        )
        # The alarm loop's tables (docs/alarms.md): the same rights, the same refusals.
        assert "permission denied for table alarms" in await refused(sink, "DELETE FROM alarms")
        assert "permission denied for table alarm_transitions" in await refused(
            sink, "UPDATE alarm_transitions SET reason = ''"
        )
        # Nothing written: the row, the table and its columns as they were; DELETE still not PUBLIC's.
        assert await rows_of(owner, DEVICE) == before
        assert await owner.fetchval("SELECT to_regclass('iot_measurements_copy')") is None
        columns = "SELECT array_agg(column_name::text) FROM information_schema.columns WHERE table_name = $1"
        assert "note" not in await owner.fetchval(columns, "iot_measurements")
        assert not await owner.fetchval("SELECT has_table_privilege('public', 'iot_measurements', 'DELETE')")
    finally:
        await owner.execute("DELETE FROM iot_measurements WHERE device_id = $1", DEVICE)
        await sink.close()
        await owner.close()


async def test_the_pipelines_role_reads_parameters_and_may_not_change_them(secure_stack: Stack) -> None:
    stack = secure_stack
    conn = await params(stack, "PIPELINE")
    try:
        for table in ("device_parameters", "parameter_templates", "device_templates", "parameter_versions",
                      "device_registry", "device_silence_timeouts", "template_silence_timeouts",
                      "liveness_config_version", "parameter_sync_state", "alarm_rules", "alarm_acks",
                      "alarm_config_version"):  # fmt: skip
            await conn.fetch(f"SELECT * FROM {table} LIMIT 1")  # our own table names
        for statement in (
            "DELETE FROM device_parameters",
            "UPDATE device_registry SET status = 'revoked'",
            "INSERT INTO device_silence_timeouts (device_id, timeout_s) VALUES ('f2-02f2000099a1', 5)",
            "TRUNCATE parameter_versions",
            "DELETE FROM parameter_sync_state",
            "DELETE FROM alarm_rules",
            "INSERT INTO alarm_acks (alarm_id, device_id, acked_by) VALUES ('x', 'f2-02f2000099a1', 'pipeline')",
        ):
            assert "permission denied for table" in await refused(conn, statement), statement
    finally:
        await conn.close()


async def test_the_repair_role_corrects_rows_but_may_not_truncate_or_change_the_table(secure_stack: Stack) -> None:
    stack = secure_stack
    owner, repair = await timeseries(stack, None), await timeseries(stack, "REPAIR")
    device = "f2-02f2000099a2"
    try:
        assert await repair.fetchval("SELECT current_user") == "f2_repairer"
        moment = datetime.now(UTC).replace(microsecond=654321)
        assert await repair.execute(_INSERT, moment, device) == "INSERT 0 1"
        assert await repair.execute("UPDATE iot_measurements SET value = 21 WHERE device_id = $1", device) == "UPDATE 1"
        assert await repair.execute("DELETE FROM iot_measurements WHERE device_id = $1", device) == "DELETE 1"
        await repair.execute(_INSERT, moment, device)
        before = await rows_of(owner, device)
        for statement, said in _OWNERS_ONLY[:-1]:
            assert said in await refused(repair, statement), statement
        assert "permission denied for table device_status" in await refused(repair, "DELETE FROM device_status")
        assert await rows_of(owner, device) == before
    finally:
        await owner.execute("DELETE FROM iot_measurements WHERE device_id = $1", device)
        await repair.close()
        await owner.close()
    conn = await params(stack, "REPAIR")
    try:
        await conn.fetch("SELECT * FROM device_parameters LIMIT 1")
        assert "permission denied for table parameter_sync_state" in await refused(
            conn, "UPDATE parameter_sync_state SET last_version = 0"
        )
    finally:
        await conn.close()


async def test_the_check_names_what_the_owner_holds_and_nothing_for_the_pipelines_role(secure_stack: Stack) -> None:
    owner = await check_pipeline_rights(settings_of(secure_stack, None))
    assert owner is not None
    assert owner.startswith(
        "the pipeline worker holds database rights it does not need: in the parameters database f2 owns every "
        "table it uses, may create in schema public; in the time-series database f2 owns every table it uses, "
        "may create in schema public; log it in as a role with only its grants"
    ), owner
    assert await check_pipeline_rights(settings_of(secure_stack, "PIPELINE")) is None
    assert await check_pipeline_rights(settings_of(secure_stack, "REPAIR")) is not None  # DELETE, UPDATE: not its job


def test_the_pipeline_worker_refuses_to_start_as_the_owner_on_the_secure_stack(
    secure_stack: Stack, tmp_path: Path
) -> None:
    assert secure_stack.env["F2_DB_STRICT_PRIVILEGES"] == "1"
    result = secure_stack.faust(
        "worker", "-l", "info", "--web-port", str(free_ports(1)[0]),
        F2_DATA_DIR=str(tmp_path), **principal(secure_stack, "PIPELINE"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    said = [line for line in (result.stdout + result.stderr).splitlines() if "holds database rights" in line]
    assert len(said) == 1, result.stderr[-3000:]
    assert (
        "f2stream: the pipeline worker holds database rights it does not need: in the parameters database f2 "
        in (said[0])
    )
    assert said[0].rstrip().endswith("it refuses to start (F2_DB_STRICT_PRIVILEGES=1)"), said[0]
    # It stopped before anything was made: no consumer joined, no topic or data was written by it.
    assert "Joined group" not in result.stdout + result.stderr
    assert not any(tmp_path.iterdir())


def test_the_pipeline_worker_on_the_plain_stack_says_at_warning_that_it_runs_as_the_owner(
    stack: Stack, workers: Workers
) -> None:
    log = workers.pipeline.log_since_start()  # once per start: the session's worker may have been restarted
    said = [line for line in log.splitlines() if "holds database rights it does not need" in line]
    assert len(said) == 1, said
    assert "[WARNING]" in said[0] and said[0].rstrip().endswith("(F2_DB_STRICT_PRIVILEGES=1 would refuse to start)")
    assert workers.pipeline.process is not None and workers.pipeline.process.poll() is None  # it runs on


async def test_the_roles_migrations_create_missing_roles_as_an_owner_with_createrole_and_run_again(
    secure_stack: Stack,
) -> None:
    """As on a managed service: the owner is no superuser; with CREATEROLE it makes the roles, without it it says so.

    In one transaction, rolled back: the live stack's roles are renamed away for its length only.
    """
    sql = {m.name: m.sql for m in load_migrations("timeseries")}["roles"]
    conn = await superuser(secure_stack, secure_stack.env["F2_TIMESERIES_DSN"])
    try:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        transaction = conn.transaction()
        await transaction.start()
        try:
            for role in ("f2_sink", "f2_status", "f2_reader", "f2_repair"):
                await conn.execute(f"ALTER ROLE {role} RENAME TO {role}_kept")
            await conn.execute("ALTER ROLE f2 CREATEROLE")
            await conn.execute("SET ROLE f2")
            await conn.execute(sql)
            await conn.execute(sql)  # again: nothing to create, the same grants
            created = await conn.fetch(
                "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('f2_sink', 'f2_status', 'f2_reader', "
                "'f2_repair') ORDER BY rolname"
            )
            assert [(r[0], r[1]) for r in created] == [
                ("f2_reader", False), ("f2_repair", False), ("f2_sink", False), ("f2_status", False),
            ]  # fmt: skip
            grants = {
                (role, privilege): await conn.fetchval(
                    "SELECT has_table_privilege($1, 'iot_measurements', $2)", role, privilege
                )
                for role in ("f2_sink", "f2_reader", "f2_repair")
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
            }
            assert {k for k, granted in grants.items() if granted} == {
                ("f2_sink", "SELECT"), ("f2_sink", "INSERT"), ("f2_reader", "SELECT"),
                ("f2_repair", "SELECT"), ("f2_repair", "INSERT"), ("f2_repair", "UPDATE"), ("f2_repair", "DELETE"),
            }  # fmt: skip
            await conn.execute("RESET ROLE")
            # Without CREATEROLE, a missing role is one message that says what to do.
            await conn.execute("ALTER ROLE f2_repair RENAME TO f2_repair_made")
            await conn.execute("ALTER ROLE f2 NOCREATEROLE")
            await conn.execute("SET ROLE f2")
            with pytest.raises(asyncpg.RaiseError) as caught:
                await conn.execute(sql)
            assert str(caught.value) == (
                "role f2_repair does not exist and f2 may not create it: give f2 CREATEROLE, or have an administrator "
                "run CREATE ROLE f2_repair NOLOGIN; then run migrate again"
            )
        finally:
            await transaction.rollback()
        assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'f2\\_%\\_kept'") == 0
        assert not await conn.fetchval("SELECT rolcreaterole FROM pg_roles WHERE rolname = 'f2'")
    finally:
        await conn.close()


async def test_replay_runs_as_the_repair_role_and_is_refused_in_one_line_as_the_pipelines(
    secure_stack: Stack, secure_workers: Workers, device_numbers: int
) -> None:
    stack = secure_stack
    manifest = stack.var_dir / f"manifest-roles-{device_numbers}.jsonl"
    simulated = stack.faust(
        "simulate", "--devices", "1", "--first-device", str(device_numbers), "--rate", "100", "--count", "60",
        "--register-params", "--manifest", str(manifest),
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    verified = stack.faust("verify", "--manifest", str(manifest), "--timeout-s", "90")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
    device = f"f2-02f2{device_numbers:08x}"
    owner = await params(stack, None)
    try:
        assert await owner.fetchval("SELECT count(*) FROM device_parameters WHERE device_id = $1", device) > 0, device
        await owner.execute("UPDATE device_parameters SET unit = 'state-fixed' WHERE device_id = $1 AND unit = 'state'",
                            device)  # fmt: skip
    finally:
        await owner.close()
    as_pipeline = stack.faust("replay", "--device", device, "--since", "1h", timeout=300, **db_login(stack, "PIPELINE"))
    assert as_pipeline.returncode == 2, as_pipeline.stdout + as_pipeline.stderr[-3000:]
    ours = [line for line in as_pipeline.stderr.splitlines() if line.startswith("f2stream: ")]
    assert len(ours) == 1, as_pipeline.stderr[-3000:]
    assert ours[0].startswith("f2stream: replay stopped: InsufficientPrivilegeError: permission denied for table "
                              "iot_measurements"), ours[0]  # fmt: skip
    as_repair = stack.faust("replay", "--device", device, "--since", "1h", timeout=300, **db_login(stack, "REPAIR"))
    assert as_repair.returncode == 0, as_repair.stdout + as_repair.stderr[-3000:]
    conn = await timeseries(stack, None)
    try:
        units = {r[0]: r[1] for r in await conn.fetch("SELECT unit, count(*) FROM iot_measurements "
                                                      "WHERE device_id = $1 GROUP BY unit", device)}  # fmt: skip
    finally:
        await conn.close()
    assert "state" not in units and units.get("state-fixed", 0) > 0, units  # every row corrected in place

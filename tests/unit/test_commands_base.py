"""f2stream.commands.base: one line and exit status 2 for a project error; one line for a database out of reach."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from f2stream.commands import base
from f2stream.commands.base import CommandError, connect_database, device_id_of, one_line_errors
from f2stream.errors import F2StreamError
from f2stream.settings import Secret, Settings


async def test_a_project_error_is_one_line_on_stderr_and_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    @one_line_errors
    async def command() -> None:
        raise CommandError("the registry does not exist:\nrun `faust -A f2stream migrate`")

    with pytest.raises(SystemExit) as stopped:
        await command()
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "f2stream: the registry does not exist: run `faust -A f2stream migrate`\n"


async def test_a_command_that_succeeds_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    @one_line_errors
    async def command(word: str) -> None:
        print(word)

    await command("done")
    assert capsys.readouterr() == ("done\n", "")


async def test_an_error_that_is_not_the_projects_passes_through() -> None:
    @one_line_errors
    async def command() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await command()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_refused_connection_names_the_database_and_says_start_it() -> None:
    settings = Settings(params_dsn=f"postgresql://f2@127.0.0.1:{free_port()}/f2_params")
    with pytest.raises(CommandError) as caught:
        await connect_database(settings, "params")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot connect to the parameters database at 127.0.0.1:")
    assert "/f2_params (" in message
    assert message.endswith("start it (make up) or set F2_PARAMS_DSN")
    assert isinstance(caught.value, F2StreamError)


async def test_a_refused_password_names_the_database_and_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(dsn: str, password: Secret | None) -> asyncpg.Connection:
        raise asyncpg.InvalidPasswordError('password authentication failed for user "f2"')

    monkeypatch.setattr(base, "connect", refuse)
    settings = Settings(
        timeseries_dsn="postgresql://f2@db.example:5433/f2_timeseries", timeseries_password=Secret("s3cr3t-pw")
    )
    with pytest.raises(CommandError) as caught:
        await connect_database(settings, "timeseries")
    message = str(caught.value)
    assert "\n" not in message and "s3cr3t-pw" not in message
    assert message.startswith("cannot connect to the time-series database at db.example:5433/f2_timeseries (")
    assert "the password was refused" in message
    assert message.endswith("its settings are F2_TIMESERIES_DSN and F2_TIMESERIES_PASSWORD(_FILE)")


@pytest.mark.parametrize(
    "error", [TimeoutError(), OSError("unreachable"), asyncpg.InterfaceError("closed"), asyncpg.PostgresError("x")]
)
async def test_every_database_error_becomes_a_command_error(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    async def fail(dsn: str, password: Secret | None) -> asyncpg.Connection:
        raise error

    monkeypatch.setattr(base, "connect", fail)
    with pytest.raises(CommandError) as caught:
        await connect_database(Settings(), "params")
    assert caught.value.__cause__ is error


def test_device_ids_from_any_usual_mac_spelling() -> None:
    assert device_id_of("E4-FD-45-F6-54-BE") == "f2-e4fd45f654be"
    with pytest.raises(CommandError):
        device_id_of("not a mac")

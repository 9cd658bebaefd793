"""f2stream.settings: settings from an explicit environment, secrets from files, masking."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from f2stream.errors import ConfigError
from f2stream.settings import Secret, Settings

SECRETS = ("MQTT_PASSWORD", "SIM_MQTT_PASSWORD", "PARAMS_PASSWORD", "TIMESERIES_PASSWORD")


def secret_file(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.kafka_broker == "kafka://localhost:9092"
    assert settings.kafka_bootstrap == "localhost:9092"
    assert (settings.mqtt_host, settings.mqtt_port, settings.mqtt_tls_port) == ("localhost", 1883, 8883)
    assert settings.mqtt_username == "f2-ingest"
    assert settings.params_dsn == "postgresql://f2@localhost:5432/f2_params"
    assert settings.timeseries_dsn == "postgresql://f2@localhost:5433/f2_timeseries"
    assert settings.pki_dir == Path("var/pki")
    assert settings.topic_partitions == 8
    assert (
        settings.mqtt_password,
        settings.sim_mqtt_password,
        settings.params_password,
        settings.timeseries_password,
    ) == (
        None,
        None,
        None,
        None,
    )


def test_variables_outside_the_prefix_are_ignored() -> None:
    assert Settings.from_env({"MQTT_PORT": "1", "f2_mqtt_port": "2", "F2_UNKNOWN": "x"}) == Settings()


def test_conversions() -> None:
    settings = Settings.from_env(
        {
            "F2_MQTT_PORT": "1884",
            "F2_MQTT_HOST": "broker.example",
            "F2_PARAMS_REFRESH_S": "2.5",
            "F2_PKI_DIR": "/srv/pki",
            "F2_SINK_BATCH_SIZE": "10",
            "F2_KAFKA_BROKER": "kafka://a:9092;kafka://b:9093",
        }
    )
    assert settings.mqtt_port == 1884
    assert type(settings.mqtt_port) is int
    assert settings.mqtt_host == "broker.example"
    assert settings.params_refresh_s == 2.5
    assert settings.pki_dir == Path("/srv/pki")
    assert settings.sink_batch_size == 10
    assert settings.kafka_bootstrap == "a:9092,b:9093"


@pytest.mark.parametrize(
    ("env", "setting", "message"),
    [
        ({"F2_MQTT_PORT": "abc"}, "F2_MQTT_PORT", "F2_MQTT_PORT: 'abc' is not a valid int"),
        ({"F2_PARAMS_REFRESH_S": "soon"}, "F2_PARAMS_REFRESH_S", "F2_PARAMS_REFRESH_S: 'soon' is not a valid float"),
        ({"F2_TOPIC_PARTITIONS": "0"}, "F2_TOPIC_PARTITIONS", "F2_TOPIC_PARTITIONS: is 0, must be at least 1"),
        (
            {"F2_SINK_BATCH_WINDOW_MS": "-5"},
            "F2_SINK_BATCH_WINDOW_MS",
            "F2_SINK_BATCH_WINDOW_MS: is -5, must be at least 1",
        ),
        (
            {"F2_KAFKA_BROKER": "localhost:9092"},
            "F2_KAFKA_BROKER",
            "F2_KAFKA_BROKER: 'localhost:9092' must look like kafka://host:9092",
        ),
        (
            {"F2_PARAMS_DSN": "mysql://f2@h/db"},
            "F2_PARAMS_DSN",
            "F2_PARAMS_DSN: must look like postgresql://user@host:5432/database",
        ),
    ],
)
def test_bad_values(env: dict[str, str], setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting
    assert str(caught.value) == message


@pytest.mark.parametrize("name", SECRETS)
def test_secret_from_file_is_stripped(tmp_path: Path, name: str) -> None:
    path = secret_file(tmp_path, name.lower(), "  s3cret-value\n\n")
    settings = Settings.from_env({f"F2_{name}_FILE": str(path)})
    secret = getattr(settings, name.lower())
    assert isinstance(secret, Secret)
    assert secret.reveal() == "s3cret-value"


def test_secret_from_variable(tmp_path: Path) -> None:
    assert Settings.from_env({"F2_MQTT_PASSWORD": "plain"}).mqtt_password == Secret("plain")


def test_the_file_wins_over_the_variable(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "pw", "from-file\n")
    settings = Settings.from_env({"F2_MQTT_PASSWORD": "from-var", "F2_MQTT_PASSWORD_FILE": str(path)})
    assert settings.mqtt_password == Secret("from-file")


def test_missing_secret_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"F2_TIMESERIES_PASSWORD_FILE": str(missing)})
    assert caught.value.setting == "F2_TIMESERIES_PASSWORD_FILE"
    assert str(caught.value) == f"F2_TIMESERIES_PASSWORD_FILE: cannot read {missing}: No such file or directory"
    assert isinstance(caught.value.__cause__, OSError)


def test_secret_file_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = secret_file(tmp_path, "pw", "s3cret-value", mode=0o644)
    with caplog.at_level(logging.WARNING, logger="f2stream.settings"):
        settings = Settings.from_env({"F2_PARAMS_PASSWORD_FILE": str(path)})
    assert settings.params_password == Secret("s3cret-value")
    assert [r.getMessage() for r in caplog.records] == [
        f"F2_PARAMS_PASSWORD_FILE {path} is readable by others; run chmod 600 on it"
    ]
    assert "s3cret-value" not in caplog.text


def test_owner_only_secret_file_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = secret_file(tmp_path, "pw", "s3cret-value")
    with caplog.at_level(logging.WARNING, logger="f2stream.settings"):
        Settings.from_env({"F2_PARAMS_PASSWORD_FILE": str(path)})
    assert caplog.records == []


@pytest.mark.parametrize(
    ("name", "dsn"),
    [
        ("F2_PARAMS_DSN", "postgresql://f2:hunter2@localhost:5432/f2_params"),
        ("F2_TIMESERIES_DSN", "postgres://f2:hunter2@localhost:5433/f2_timeseries"),
    ],
)
def test_dsn_with_a_password_is_refused(name: str, dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: dsn})
    assert caught.value.setting == name
    assert "holds a password; put it in the _PASSWORD or _PASSWORD_FILE setting instead" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_secrets_are_masked_in_repr_and_str(tmp_path: Path) -> None:
    env = {f"F2_{name}_FILE": str(secret_file(tmp_path, name, f"s3cret-{i}\n")) for i, name in enumerate(SECRETS)}
    settings = Settings.from_env(env)
    for text in (
        repr(settings),
        str(settings),
        f"{settings}",
        repr(settings.mqtt_password),
        str(settings.params_password),
    ):
        assert "s3cret" not in text
    assert repr(settings).count("Secret('********')") == 4
    assert [getattr(settings, n.lower()).reveal() for n in SECRETS] == [f"s3cret-{i}" for i in range(4)]


def test_repr_shows_ordinary_settings() -> None:
    text = repr(Settings.from_env({"F2_MQTT_HOST": "broker.example"}))
    assert text.startswith("Settings(kafka_broker='kafka://localhost:9092', ")
    assert "mqtt_host='broker.example'" in text
    assert "mqtt_password=None" in text


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.mqtt_port = 1  # type: ignore[misc]


def test_secret_equality_and_hash() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))


def test_every_field_converts_by_its_type() -> None:
    from f2stream import settings as module

    assert module._convert("F2_X", "5", int) == 5
    assert module._convert("F2_X", "0.5", float) == 0.5
    assert module._convert("F2_X", "var/x", Path) == Path("var/x")
    assert module._convert("F2_X", "false", bool) is False
    assert module._convert("F2_X", " ON ", bool) is True
    with pytest.raises(ConfigError, match="'maybe' is not a valid bool"):
        module._convert("F2_X", "maybe", bool)
    assert not module._UNKNOWN


def test_topic_replication_defaults_to_the_clusters_own() -> None:
    assert Settings.from_env({}).topic_replication == 0
    assert Settings.from_env({"F2_TOPIC_REPLICATION": "3"}).topic_replication == 3


def test_negative_topic_replication_is_refused() -> None:
    with pytest.raises(ConfigError, match="F2_TOPIC_REPLICATION"):
        Settings.from_env({"F2_TOPIC_REPLICATION": "-1"})

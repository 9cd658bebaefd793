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


# --- Kafka security ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate it issued (f2stream.pki), with their keys."""
    from f2stream.pki import init_pki

    root = tmp_path_factory.mktemp("pki")
    init_pki(root)
    return root


def test_kafka_security_defaults_to_plaintext() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert (settings.kafka_tls, settings.kafka_sasl) == (False, False)
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert (settings.kafka_username, settings.kafka_password) == ("", None)
    assert (settings.kafka_ca_file, settings.kafka_cert_file, settings.kafka_key_file) == (None, None, None)
    assert settings.kafka_check_hostname is True


def test_sasl_ssl_with_a_password_file_and_a_ca(tmp_path: Path, pki: Path) -> None:
    settings = Settings.from_env(
        {
            "F2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "F2_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "F2_KAFKA_USERNAME": "f2-pipeline",
            "F2_KAFKA_PASSWORD_FILE": str(secret_file(tmp_path, "kafka", "s3cret-kafka\n")),
            "F2_KAFKA_CA_FILE": str(pki / "ca.crt"),
        }
    )
    assert (settings.kafka_tls, settings.kafka_sasl) == (True, True)
    assert settings.kafka_password == Secret("s3cret-kafka")
    assert settings.kafka_ca_file == pki / "ca.crt"
    assert "s3cret" not in repr(settings)
    assert "kafka_password=Secret('********')" in repr(settings)


def test_mtls_with_a_certificate_and_its_key(pki: Path) -> None:
    settings = Settings.from_env(
        {
            "F2_KAFKA_SECURITY_PROTOCOL": "SSL",
            "F2_KAFKA_CERT_FILE": str(pki / "server.crt"),
            "F2_KAFKA_KEY_FILE": str(pki / "server.key"),
            "F2_KAFKA_CHECK_HOSTNAME": "false",
        }
    )
    assert (settings.kafka_cert_file, settings.kafka_key_file) == (pki / "server.crt", pki / "server.key")
    assert settings.kafka_check_hostname is False


def test_an_empty_file_setting_is_unset() -> None:
    assert Settings.from_env({"F2_KAFKA_CA_FILE": ""}).kafka_ca_file is None


SASL_SSL = {"F2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "F2_KAFKA_USERNAME": "f2-tools", "F2_KAFKA_PASSWORD": "pw"}


@pytest.mark.parametrize(
    ("env", "setting", "message"),
    [
        (
            {"F2_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "F2_KAFKA_SECURITY_PROTOCOL",
            "'TLS' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            {**SASL_SSL, "F2_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"},
            "F2_KAFKA_SASL_MECHANISM",
            "'SCRAM-SHA-1' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        (
            {"F2_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "F2_KAFKA_PASSWORD": "pw"},
            "F2_KAFKA_USERNAME",
            "SASL_SSL logs in with a user name and a password: set F2_KAFKA_USERNAME and F2_KAFKA_PASSWORD",
        ),
        (
            {"F2_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "F2_KAFKA_USERNAME": "f2-tools"},
            "F2_KAFKA_PASSWORD",
            "SASL_PLAINTEXT logs in with a user name and a password",
        ),
        (
            {"F2_KAFKA_USERNAME": "f2-tools", "F2_KAFKA_PASSWORD": "pw"},
            "F2_KAFKA_USERNAME",
            "is set, but F2_KAFKA_SECURITY_PROTOCOL=PLAINTEXT sends no login: set it to SASL_SSL",
        ),
        (
            {"F2_KAFKA_CA_FILE": "/etc/ssl/certs/ca-certificates.crt"},
            "F2_KAFKA_CA_FILE",
            "is set, but F2_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no TLS: set it to SSL or SASL_SSL",
        ),
        (
            {**SASL_SSL, "F2_KAFKA_CA_FILE": "/nonexistent/ca.crt"},
            "F2_KAFKA_CA_FILE",
            "cannot read /nonexistent/ca.crt: No such file or directory",
        ),
        (
            {**SASL_SSL, "F2_KAFKA_CA_FILE": "/"},
            "F2_KAFKA_CA_FILE",
            "cannot read /: Is a directory",
        ),
        (
            {"F2_KAFKA_SECURITY_PROTOCOL": "SSL", "F2_KAFKA_CERT_FILE": "/nonexistent/client.crt"},
            "F2_KAFKA_KEY_FILE",
            "is needed too: a client certificate goes with its private key (mTLS)",
        ),
        (
            {"F2_KAFKA_SECURITY_PROTOCOL": "SSL", "F2_KAFKA_KEY_FILE": "/nonexistent/client.key"},
            "F2_KAFKA_CERT_FILE",
            "is needed too",
        ),
        (
            {"F2_KAFKA_SECURITY_PROTOCOL": "SSL", "F2_KAFKA_KEY_PASSWORD": "pw"},
            "F2_KAFKA_KEY_PASSWORD",
            "is set, but there is no F2_KAFKA_KEY_FILE to decrypt",
        ),
    ],
)
def test_bad_kafka_security(env: dict[str, str], setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_ca_file_that_holds_no_certificate_is_refused(tmp_path: Path) -> None:
    junk = secret_file(tmp_path, "ca.crt", "not a certificate\n")
    with pytest.raises(ConfigError, match=r"^F2_KAFKA_CA_FILE: .*ca.crt holds no PEM certificate"):
        Settings.from_env({**SASL_SSL, "F2_KAFKA_CA_FILE": str(junk)})


def test_a_key_that_is_not_the_certificates_is_refused(pki: Path) -> None:
    env = {
        "F2_KAFKA_SECURITY_PROTOCOL": "SSL",
        "F2_KAFKA_CERT_FILE": str(pki / "server.crt"),
        "F2_KAFKA_KEY_FILE": str(pki / "ca.key"),  # the CA's key: another key pair
    }
    with pytest.raises(ConfigError, match=r"^F2_KAFKA_KEY_FILE: .* are not a PEM certificate and its private key"):
        Settings.from_env(env)


def test_an_encrypted_key_needs_its_password(tmp_path: Path, pki: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((pki / "server.key").read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pw"),
    )
    (tmp_path / "enc.key").write_bytes(encrypted)
    env = {
        "F2_KAFKA_SECURITY_PROTOCOL": "SSL",
        "F2_KAFKA_CERT_FILE": str(pki / "server.crt"),
        "F2_KAFKA_KEY_FILE": str(tmp_path / "enc.key"),
    }
    with pytest.raises(ConfigError, match="an encrypted key needs F2_KAFKA_KEY_PASSWORD"):
        Settings.from_env(env)  # never a prompt on the terminal
    settings = Settings.from_env({**env, "F2_KAFKA_KEY_PASSWORD": "key-pw"})
    assert settings.kafka_key_password == Secret("key-pw")


def test_insecure_combinations_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="f2stream.settings"):
        Settings.from_env(
            {**SASL_SSL, "F2_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "F2_KAFKA_SASL_MECHANISM": "PLAIN"}
        )
        Settings.from_env({**SASL_SSL, "F2_KAFKA_CHECK_HOSTNAME": "no"})
    messages = [r.getMessage() for r in caplog.records]
    assert any("sends the Kafka password in clear text" in m for m in messages)
    assert any("not matched to its host name" in m for m in messages)
    assert "pw" not in " ".join(messages).split()


def test_a_bad_setting_at_start_is_one_line_and_exit_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from f2stream.appbase import load_settings

    monkeypatch.setenv("F2_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.delenv("F2_KAFKA_USERNAME", raising=False)
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("f2stream: bad setting F2_KAFKA_USERNAME: SASL_SSL logs in with a user name")
    assert err.count("\n") == 1


def test_a_dsn_with_tls_to_a_verified_server(pki: Path) -> None:
    dsn = f"postgresql://f2@db.example:5432/f2_params?sslmode=verify-full&sslrootcert={pki / 'ca.crt'}"
    assert Settings.from_env({"F2_PARAMS_DSN": dsn}).params_dsn == dsn


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=verify", "F2_TIMESERIES_DSN: sslmode='verify' is not one of disable, allow, prefer, require"),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            "F2_TIMESERIES_DSN sslrootcert: cannot read /nonexistent/ca.crt: No such file or directory",
        ),
        ("sslcert=/nonexistent/c.crt", "F2_TIMESERIES_DSN sslcert: cannot read /nonexistent/c.crt"),
    ],
)
def test_bad_tls_parameters_of_a_dsn(query: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"F2_TIMESERIES_DSN": f"postgresql://f2@localhost:5433/f2_timeseries?{query}"})
    assert str(caught.value).startswith(message)


# --- the ingest's MQTT session over TLS ------------------------------------


def test_mqtt_tls_with_a_client_certificate(pki: Path) -> None:
    settings = Settings.from_env(
        {
            "F2_MQTT_TLS": "1",
            "F2_MQTT_TLS_PORT": "18883",
            "F2_MQTT_CA_FILE": str(pki / "ca.crt"),
            "F2_MQTT_CERT_FILE": str(pki / "server.crt"),
            "F2_MQTT_KEY_FILE": str(pki / "server.key"),
        }
    )
    assert settings.mqtt_tls is True
    assert settings.mqtt_ingest_port == 18883
    assert Settings.from_env({"F2_MQTT_TLS_PORT": "18883"}).mqtt_ingest_port == 1883  # without TLS: the password port


@pytest.mark.parametrize(
    ("env", "setting", "message"),
    [
        ({"F2_MQTT_CA_FILE": "@pki/ca.crt"}, "F2_MQTT_CA_FILE", "is set, but F2_MQTT_TLS is off: set F2_MQTT_TLS=1"),
        (
            {"F2_MQTT_TLS": "1", "F2_MQTT_CERT_FILE": "@pki/server.crt"},
            "F2_MQTT_KEY_FILE",
            "is needed too: a client certificate goes with its private key",
        ),
        (
            {"F2_MQTT_TLS": "1", "F2_MQTT_CA_FILE": "@pki/ca.crt"},
            "F2_MQTT_TLS",
            "the ingest logs in with a client certificate or a password",
        ),
        (
            {"F2_MQTT_TLS": "1", "F2_MQTT_PASSWORD": "pw", "F2_MQTT_CA_FILE": "/nonexistent/ca.crt"},
            "F2_MQTT_CA_FILE",
            "cannot read /nonexistent/ca.crt",
        ),
        (
            {"F2_MQTT_TLS": "1", "F2_MQTT_CERT_FILE": "@pki/server.crt", "F2_MQTT_KEY_FILE": "@pki/ca.key"},
            "F2_MQTT_KEY_FILE",
            "are not a PEM certificate and its private key",
        ),
        ({"F2_MQTT_TLS": "maybe"}, "F2_MQTT_TLS", "'maybe' is not a valid bool"),
    ],
)
def test_bad_mqtt_tls_settings(pki: Path, env: dict[str, str], setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value.replace("@pki", str(pki)) for name, value in env.items()})
    assert caught.value.setting == setting
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_login_role_replaces_the_dsns_user() -> None:
    settings = Settings.from_env(
        {
            "F2_PARAMS_DSN": "postgresql://f2@db.example:5432/f2_params?sslmode=verify-full&sslrootcert=system",
            "F2_PARAMS_USER": "f2_pipeline",
            "F2_TIMESERIES_DSN": "postgresql://db.example/f2_timeseries",
            "F2_TIMESERIES_USER": "team 1@tsdb",
        }
    )
    assert settings.params_dsn == (
        "postgresql://f2_pipeline@db.example:5432/f2_params?sslmode=verify-full&sslrootcert=system"
    )
    assert settings.timeseries_dsn == "postgresql://team%201%40tsdb@db.example/f2_timeseries"
    # Settings made again from the same values log in as the same role (the rewrite is idempotent).
    assert dataclasses.replace(settings).params_dsn == settings.params_dsn


def test_without_a_login_role_the_dsns_user_logs_in() -> None:
    settings = Settings.from_env({"F2_PARAMS_USER": "", "F2_DB_STRICT_PRIVILEGES": "1"})
    assert settings.params_dsn == "postgresql://f2@localhost:5432/f2_params"
    assert settings.db_strict_privileges is True
    assert Settings().db_strict_privileges is False

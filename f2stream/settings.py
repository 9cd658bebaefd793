"""Settings: read once at start from the environment, frozen, validated, secrets masked.

Every secret can also come from a file named by the same variable with
`_FILE` appended (Docker-secrets style). No code below start-up reads the
environment: the settings object is passed down.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final, get_type_hints
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from f2stream.collector import YOUNG_THRESHOLD
from f2stream.errors import ConfigError

__all__ = ["KAFKA_SASL_MECHANISMS", "KAFKA_SECURITY_PROTOCOLS", "Secret", "Settings", "dsn_with_user"]

logger = logging.getLogger(__name__)

#: What `F2_KAFKA_SECURITY_PROTOCOL` may say (Kafka's own names).
KAFKA_SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: What `F2_KAFKA_SASL_MECHANISM` may say.
KAFKA_SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class Secret:
    """A secret value that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the workers and commands need, from `F2_*` variables."""

    kafka_broker: str = "kafka://localhost:9092"
    # Kafka security (docs/operations.md, "Kafka security"): TLS with the CA (none: the system's),
    # a client certificate for mTLS, a SASL login; one of KAFKA_SECURITY_PROTOCOLS.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: Secret | None = None
    kafka_ca_file: Path | None = None
    kafka_cert_file: Path | None = None
    kafka_key_file: Path | None = None
    kafka_key_password: Secret | None = None
    # False: TLS still verifies the chain, but not that the certificate names the host dialled.
    kafka_check_hostname: bool = True
    topic_partitions: int = 8
    # Replicas of each topic the workers create; 0: the cluster's default.replication.factor.
    topic_replication: int = 0
    # How long raw_iot_data keeps messages: the window replay can repair (set when the topic is created).
    raw_retention_hours: float = 168.0
    # Where replay and redrive leave their metrics for node exporter's textfile collector.
    metrics_textfile_dir: Path = Path("var/metrics")
    mqtt_host: str = "localhost"
    mqtt_port: int = 1883
    mqtt_tls_port: int = 8883
    mqtt_ws_port: int = 9001
    mqtt_username: str = "f2-ingest"
    mqtt_password: Secret | None = None
    # The ingest's session over TLS, to F2_MQTT_TLS_PORT: the broker verified against the CA (none: the
    # system's), logged in with a client certificate, a password, or both (docs/operations.md, "MQTT").
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    mqtt_client_id: str = "f2stream-ingest"
    # Empty: a plain subscription, which Mosquitto keeps across its restarts.
    # Set it (the same on every ingest worker) to share the messages among several.
    mqtt_share_group: str = ""
    mqtt_max_inflight: int = 1000
    # MB of MQTT messages the ingest worker holds, read and not yet acknowledged, before it stops reading.
    mqtt_max_held_mb: int = 32
    sim_mqtt_username: str = "f2-simulator"
    sim_mqtt_password: Secret | None = None
    mqtt_admin_username: str = "f2-admin"
    mqtt_admin_password: Secret | None = None
    mqtt_pid_file: str = ""
    params_dsn: str = "postgresql://f2@localhost:5432/f2_params"
    params_password: Secret | None = None
    params_refresh_s: float = 30.0
    timeseries_dsn: str = "postgresql://f2@localhost:5433/f2_timeseries"
    timeseries_password: Secret | None = None
    # The role this process logs in as, in place of the DSN's user: one DSN per database, each
    # process its own role (docs/operations.md, "Database roles"). Empty: the DSN's user.
    params_user: str = ""
    timeseries_user: str = ""
    # True: the pipeline worker refuses to start when its roles hold rights it does not need
    # (superuser, owner of the tables, DELETE on iot_measurements...); False: it says so at WARNING.
    db_strict_privileges: bool = False
    sink_batch_size: int = 5000
    sink_batch_window_ms: int = 200
    data_dir: Path = Path("var/data/faust")
    pki_dir: Path = Path("var/pki")
    pki_hosts: str = ""
    # Where the pipeline worker finds the ingest worker's web views (its /health/ingest).
    ingest_url: str = "http://127.0.0.1:6067"
    # Liveness: a device with no message for this long is silent (overridable per device or template).
    liveness_timeout_s: float = 600.0
    # How often the silence deadlines are checked, and the liveness changelog checkpointed.
    liveness_tick_s: float = 1.0
    liveness_checkpoint_s: float = 30.0
    # False: no liveness tracking at all (measuring its cost).
    liveness_enabled: bool = True
    # Alarms (docs/alarms.md): how often the held-open and duration timers are checked, and the
    # alarm state changelog checkpointed. False: no alarm evaluation at all (measuring its cost).
    alarms_tick_s: float = 0.5
    alarms_checkpoint_s: float = 30.0
    alarms_enabled: bool = True
    # Net allocations of container objects between two young garbage collections (f2stream.collector):
    # Python's 700 made the pipeline worker spend a fifth of its CPU in the collector. 0: Python's thresholds.
    gc_young_threshold: int = YOUNG_THRESHOLD

    def __post_init__(self) -> None:
        # The login goes into the DSN itself, so that every connection (pools, checks, commands) uses it.
        for dsn_field, user in (("params_dsn", self.params_user), ("timeseries_dsn", self.timeseries_user)):
            if user:
                object.__setattr__(self, dsn_field, dsn_with_user(getattr(self, dsn_field), user))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `F2_*` variables (default: the process environment).

        Raises:
            ConfigError: a value is invalid or a secret file cannot be read.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field, kind in _FIELD_TYPES.items():
            name = "F2_" + field.upper()
            if kind == _SECRET:
                secret = _read_secret(env, name)
                if secret is not None:
                    values[field] = secret
            elif name in env:
                values[field] = _convert(name, env[name], kind)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check values that make sense only together.

        Raises:
            ConfigError: naming the setting and what to change.
        """
        if urlsplit(self.kafka_broker).scheme not in ("kafka", "aiokafka"):
            raise ConfigError("F2_KAFKA_BROKER", f"{self.kafka_broker!r} must look like kafka://host:9092")
        for name, dsn in (("F2_PARAMS_DSN", self.params_dsn), ("F2_TIMESERIES_DSN", self.timeseries_dsn)):
            parts = urlsplit(dsn)
            if parts.scheme not in ("postgresql", "postgres"):
                raise ConfigError(name, "must look like postgresql://user@host:5432/database")
            if parts.password:
                raise ConfigError(name, "holds a password; put it in the _PASSWORD or _PASSWORD_FILE setting instead")
            _check_dsn_tls(name, parts.query)
        for name, number in (
            ("F2_TOPIC_PARTITIONS", self.topic_partitions),
            ("F2_MQTT_MAX_INFLIGHT", self.mqtt_max_inflight),
            ("F2_MQTT_MAX_HELD_MB", self.mqtt_max_held_mb),
            ("F2_SINK_BATCH_SIZE", self.sink_batch_size),
            ("F2_SINK_BATCH_WINDOW_MS", self.sink_batch_window_ms),
        ):
            if number < 1:
                raise ConfigError(name, f"is {number}, must be at least 1")
        if self.gc_young_threshold < 0:
            raise ConfigError("F2_GC_YOUNG_THRESHOLD", f"is {self.gc_young_threshold}: 0 (Python's thresholds) or more")
        if self.raw_retention_hours <= 0:
            raise ConfigError("F2_RAW_RETENTION_HOURS", f"is {self.raw_retention_hours}, must be more than 0")
        for name, seconds in (
            ("F2_LIVENESS_TIMEOUT_S", self.liveness_timeout_s),
            ("F2_LIVENESS_TICK_S", self.liveness_tick_s),
            ("F2_LIVENESS_CHECKPOINT_S", self.liveness_checkpoint_s),
            ("F2_ALARMS_TICK_S", self.alarms_tick_s),
            ("F2_ALARMS_CHECKPOINT_S", self.alarms_checkpoint_s),
        ):
            if not seconds > 0:
                raise ConfigError(name, f"is {seconds}, must be a positive number of seconds")
        if self.topic_replication < 0:
            raise ConfigError(
                "F2_TOPIC_REPLICATION", f"is {self.topic_replication}: 0 (the cluster's default) or a replica count"
            )
        self._validate_kafka_security()
        self._validate_mqtt_tls()

    def _validate_kafka_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(
                "F2_KAFKA_SECURITY_PROTOCOL", f"{protocol!r} is not one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(
                "F2_KAFKA_SASL_MECHANISM", f"{mechanism!r} is not one of {', '.join(KAFKA_SASL_MECHANISMS)}"
            )
        if self.kafka_sasl:
            if not self.kafka_username or self.kafka_password is None:
                raise ConfigError(
                    "F2_KAFKA_USERNAME" if not self.kafka_username else "F2_KAFKA_PASSWORD",
                    f"{protocol} logs in with a user name and a password: set F2_KAFKA_USERNAME and "
                    "F2_KAFKA_PASSWORD or F2_KAFKA_PASSWORD_FILE",
                )
            if protocol == "SASL_PLAINTEXT" and mechanism == "PLAIN":
                logger.warning("F2_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with PLAIN sends the Kafka password "
                               "in clear text: use SASL_SSL")  # fmt: skip
        elif self.kafka_username or self.kafka_password is not None:
            raise ConfigError(
                "F2_KAFKA_USERNAME" if self.kafka_username else "F2_KAFKA_PASSWORD",
                f"is set, but F2_KAFKA_SECURITY_PROTOCOL={protocol} sends no login: set it to SASL_SSL",
            )
        self._validate_kafka_tls()

    def _validate_kafka_tls(self) -> None:
        if self.kafka_tls and self.kafka_key_password is not None and self.kafka_key_file is None:
            raise ConfigError("F2_KAFKA_KEY_PASSWORD", "is set, but there is no F2_KAFKA_KEY_FILE to decrypt")
        _check_tls_settings(
            "F2_KAFKA", self.kafka_tls,
            f"F2_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} uses no TLS: set it to SSL or SASL_SSL",
            self.kafka_ca_file, self.kafka_cert_file, self.kafka_key_file, self.kafka_key_password,
        )  # fmt: skip
        if self.kafka_tls and not self.kafka_check_hostname:
            logger.warning("F2_KAFKA_CHECK_HOSTNAME=false: the Kafka broker's certificate is not matched "
                           "to its host name")  # fmt: skip

    def _validate_mqtt_tls(self) -> None:
        _check_tls_settings(
            "F2_MQTT", self.mqtt_tls, "F2_MQTT_TLS is off: set F2_MQTT_TLS=1",
            self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file, None,
        )  # fmt: skip
        if self.mqtt_tls and self.mqtt_cert_file is None and self.mqtt_password is None:
            raise ConfigError(
                "F2_MQTT_TLS",
                "the ingest logs in with a client certificate or a password: set F2_MQTT_CERT_FILE and "
                "F2_MQTT_KEY_FILE, or F2_MQTT_PASSWORD or F2_MQTT_PASSWORD_FILE",
            )

    @property
    def mqtt_ingest_port(self) -> int:
        """The port of the ingest's session: the TLS listener with F2_MQTT_TLS, else the service listener."""
        return self.mqtt_tls_port if self.mqtt_tls else self.mqtt_port

    @property
    def kafka_tls(self) -> bool:
        """True when Kafka connections use TLS (SSL or SASL_SSL)."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_sasl(self) -> bool:
        """True when Kafka connections log in with SASL."""
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def raw_retention_ms(self) -> int:
        """`retention.ms` of raw_iot_data."""
        return int(self.raw_retention_hours * 3600 * 1000)

    @property
    def kafka_bootstrap(self) -> str:
        """`host:port` for clients that take no URL scheme."""
        return ",".join(url.split("://", 1)[-1] for url in self.kafka_broker.split(";"))

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Settings({shown})"


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


#: How a setting's text becomes its value, by the field's type.
_CONVERTERS: dict[object, Callable[[str], object]] = {
    str: str,
    int: int,
    float: float,
    Path: Path,
    bool: _boolean,
    Path | None: lambda text: Path(text) if text else None,  # empty: unset
}
_SECRET = Secret | None
_FIELD_TYPES = get_type_hints(Settings)
_UNKNOWN = {name: kind for name, kind in _FIELD_TYPES.items() if kind != _SECRET and kind not in _CONVERTERS}
if _UNKNOWN:  # a new field of a type nobody converts fails at import, never as a silent str
    raise TypeError(f"Settings fields of types without a converter: {_UNKNOWN}")


def _convert(name: str, text: str, kind: object) -> object:
    try:
        return _CONVERTERS[kind](text)
    except ValueError as exc:
        what = getattr(kind, "__name__", str(kind))
        raise ConfigError(name, f"{text!r} is not a valid {what}") from exc


def dsn_with_user(dsn: str, user: str) -> str:
    """`dsn` logging in as `user` (percent-encoded), whatever user it named."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{hosts}"))


#: libpq's sslmode values (asyncpg takes the same).
_SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _check_dsn_tls(name: str, query: str) -> None:
    """A DSN's TLS parameters (`?sslmode=verify-full&sslrootcert=/path`): a known mode, readable files."""
    params = parse_qs(query)
    for mode in params.get("sslmode", []):
        if mode not in _SSLMODES:
            raise ConfigError(name, f"sslmode={mode!r} is not one of {', '.join(_SSLMODES)}")
    for key in ("sslrootcert", "sslcert", "sslkey"):
        for value in params.get(key, []):
            if value != "system":  # libpq 16's word for the system's CAs
                _check_readable(f"{name} {key}", Path(value))


def _check_readable(name: str, path: Path) -> None:
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path}: {exc.strerror}") from exc


def _check_tls_settings(
    prefix: str,
    enabled: bool,
    enable_hint: str,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    key_password: Secret | None,
) -> None:
    """One client's TLS files (`prefix`: F2_KAFKA, F2_MQTT): none without TLS; with it, a certificate with its key,
    each file readable and loaded as the client will load it.

    `enable_hint` says how to switch TLS on, for files given without it.
    """
    files = {f"{prefix}_CA_FILE": ca_file, f"{prefix}_CERT_FILE": cert_file, f"{prefix}_KEY_FILE": key_file}
    if not enabled:
        given = [name for name, path in files.items() if path is not None]
        if given:
            raise ConfigError(given[0], f"is set, but {enable_hint}")
        return
    if (cert_file is None) != (key_file is None):
        missing = f"{prefix}_KEY_FILE" if key_file is None else f"{prefix}_CERT_FILE"
        raise ConfigError(missing, "is needed too: a client certificate goes with its private key (mTLS)")
    for name, path in files.items():
        if path is not None:
            _check_readable(name, path)
    _check_tls_files(prefix, ca_file, cert_file, key_file, key_password)


def _check_tls_files(
    prefix: str, ca_file: Path | None, cert_file: Path | None, key_file: Path | None, key_password: Secret | None
) -> None:
    """Load the CA, certificate and key as the clients will: a bad file fails here, not at connection.

    `prefix` names the settings (`F2_KAFKA`: F2_KAFKA_CA_FILE, ...). Only
    Kafka's key may be encrypted (F2_KAFKA_KEY_PASSWORD).
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{prefix}_CA_FILE", f"{ca_file} holds no PEM certificate ({exc.__class__.__name__})"
            ) from exc
    if cert_file is not None and key_file is not None:
        try:
            # A callable, never None: OpenSSL would prompt on the terminal for an encrypted key.
            context.load_cert_chain(cert_file, key_file, lambda: key_password.reveal() if key_password else "")
        except (ssl.SSLError, ValueError) as exc:
            encrypted = "; an encrypted key needs F2_KAFKA_KEY_PASSWORD" if prefix == "F2_KAFKA" else ""
            raise ConfigError(
                f"{prefix}_KEY_FILE",
                f"{cert_file} and {key_file} are not a PEM certificate and its private key "
                f"({getattr(exc, 'reason', None) or exc.__class__.__name__}){encrypted}",
            ) from exc


def _read_secret(env: Mapping[str, str], name: str) -> Secret | None:
    path_text = env.get(name + "_FILE")
    if path_text:
        path = Path(path_text)
        try:
            mode = path.stat().st_mode
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(name + "_FILE", f"cannot read {path}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("%s_FILE %s is readable by others; run chmod 600 on it", name, path)
        return Secret(value)
    if name in env:
        return Secret(env[name])
    return None

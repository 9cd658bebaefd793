"""The one place that turns settings into Kafka connection options: every client of the project takes them here.

aiokafka's consumers, producers, admin clients and bare clients get
:func:`kafka_options` (`bootstrap_servers` and the security options); the
Faust apps get :func:`faust_credentials` with their broker URL. A client
built any other way would connect without TLS or login:
tests/unit/test_kafka_client.py fails on any Kafka client in the sources
that is not given these options.

Failures are told apart here too (:func:`diagnose`, :func:`refusal`), so
that a worker or a command says in one line whether Kafka is down, refused
the login, refused the TLS handshake, or refused an operation by its ACLs.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context

from f2stream.settings import Secret, Settings

__all__ = [
    "KafkaOptions",
    "describe",
    "diagnose",
    "faust_credentials",
    "kafka_options",
    "refusal",
    "ssl_context",
    "unreachable",
]

#: What :func:`kafka_options` returns: keyword arguments of any aiokafka client.
KafkaOptions = Mapping[str, Any]

# Kafka's error codes: TopicAuthorizationFailed 29, GroupAuthorizationFailed 30, ClusterAuthorizationFailed 31,
# TransactionalIdAuthorizationFailed 53, DelegationTokenAuthorizationFailed 65; UnsupportedSaslMechanism 33,
# SaslAuthenticationFailed 58.
_AUTHORIZATION = frozenset({29, 30, 31, 53, 65})
_UNSUPPORTED_SASL_MECHANISM = 33
_SASL_AUTHENTICATION_FAILED = 58


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: `bootstrap_servers` and how to connect securely.

    `security_protocol` always; with TLS an `ssl_context` (the CA of
    `F2_KAFKA_CA_FILE`, else the system's; the client certificate for
    mTLS); with SASL the mechanism, user name and password.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_tls:
        options["ssl_context"] = ssl_context(settings)
    if settings.kafka_sasl:
        assert settings.kafka_password is not None  # validated: SASL has a password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        options["sasl_plain_password"] = settings.kafka_password.reveal()
    return options


def faust_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """`broker_credentials` of a Faust app: the same login and TLS as :func:`kafka_options` (None: PLAINTEXT)."""
    context = ssl_context(settings) if settings.kafka_tls else None
    if settings.kafka_sasl:
        assert settings.kafka_password is not None  # validated: SASL has a password
        return faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_password.reveal(),
            ssl_context=context,  # with one: SASL_SSL, without: SASL_PLAINTEXT
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of every Kafka connection of the process (one per distinct setting, shared).

    Certificates are read once: a renewed client certificate is taken up
    when the worker restarts (docs/operations.md, "Kafka security").
    """
    return _context(
        settings.kafka_ca_file,
        settings.kafka_cert_file,
        settings.kafka_key_file,
        settings.kafka_key_password,
        settings.kafka_check_hostname,
    )


@functools.cache
def _context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, key_password: Secret | None, check: bool
) -> ssl.SSLContext:
    context: ssl.SSLContext = create_ssl_context(
        cafile=ca_file,
        certfile=cert_file,
        keyfile=key_file,
        # A callable, never None: OpenSSL would prompt on the terminal for an encrypted key.
        password=lambda: key_password.reveal() if key_password else "",
    )
    context.check_hostname = check
    return context


def describe(settings: Settings) -> str:
    """Where and how the clients connect, for messages: `127.0.0.1:9092 (SASL_SSL, SCRAM-SHA-512 as f2-tools)`."""
    how = settings.kafka_security_protocol
    if settings.kafka_sasl:
        how += f", {settings.kafka_sasl_mechanism} as {settings.kafka_username}"
    elif settings.kafka_cert_file is not None:
        how += f", client certificate {settings.kafka_cert_file}"
    return f"{settings.kafka_bootstrap} ({how})"


def unreachable(settings: Settings) -> str:
    """The line for a Kafka that nobody answers for."""
    return f"Kafka at {describe(settings)} does not answer: start it (make up) or set F2_KAFKA_BROKER"


async def diagnose(settings: Settings, *, timeout_s: float = 10.0) -> str | None:
    """Why Kafka refuses this client, in one line that says what to do; None when nobody answers at all.

    aiokafka's clients fail with "Unable to bootstrap" whatever happened
    (the cause is only logged): this opens a connection to each bootstrap
    server in turn, as the clients do, and names the first refusal: the
    login, the certificate, the TLS handshake, or a listener that closes
    the connection of a client without TLS. A refusal does not go away by
    retrying. None: no server answered (down, or starting: retry), or
    one let us in after all (a passing failure).
    """
    options = {k: v for k, v in kafka_options(settings).items() if k != "bootstrap_servers"}
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, int(port), client_id="f2stream-diagnose", request_timeout_ms=int(timeout_s * 1000), **options
                ),
                timeout_s,
            )
        except Exception as exc:  # noqa: BLE001  # OSError, ssl.SSLError and KafkaError alike: each is told apart
            line = refusal(settings, exc)
            if line is not None:
                return line
            if isinstance(exc, KafkaConnectionError) and "closed" in str(exc) and not settings.kafka_tls:
                return (
                    f"Kafka at {describe(settings)} closed the connection at once: its listener wants TLS or "
                    "another protocol: check F2_KAFKA_SECURITY_PROTOCOL and F2_KAFKA_BROKER"
                )
            continue
        conn.close()
        return None
    return None


def refusal(settings: Settings, exc: BaseException) -> str | None:
    """What to tell the operator when Kafka refused rather than failed: a login, TLS or an ACL; None otherwise.

    A refusal never goes away by retrying: the caller stops with this line.
    """
    where = describe(settings)
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:  # the cause may sit deeper in the chain
        seen.add(id(error))
        line = _refusal(settings, where, error)
        if line is not None:
            return line
        error = error.__cause__ or error.__context__
    return None


def _refusal(settings: Settings, where: str, error: BaseException) -> str | None:
    if isinstance(error, ssl.SSLCertVerificationError):
        why = getattr(error, "verify_message", None) or error
        return (
            f"Kafka at {where}: its TLS certificate is not trusted ({why}): "
            "set F2_KAFKA_CA_FILE to the CA that issued it (or F2_KAFKA_BROKER to the name it was issued for)"
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"Kafka at {where}: the TLS handshake failed ({error.reason or error}): "
            "check F2_KAFKA_SECURITY_PROTOCOL and the client certificate"
        )
    code = getattr(error, "errno", None) if isinstance(error, KafkaError) else None
    if isinstance(error, TopicAuthorizationFailedError | GroupAuthorizationFailedError) or code in _AUTHORIZATION:
        who = settings.kafka_username or "this client's principal"
        return f"Kafka at {where} refused by its ACLs ({error.__class__.__name__}: {error}): grant {who} what it needs"
    if code == _SASL_AUTHENTICATION_FAILED:
        return (
            f"Kafka at {where} refused the login: wrong user name or password: "
            "check F2_KAFKA_USERNAME, F2_KAFKA_PASSWORD(_FILE) and F2_KAFKA_SASL_MECHANISM"
        )
    if code == _UNSUPPORTED_SASL_MECHANISM:
        return f"Kafka at {where} does not offer {settings.kafka_sasl_mechanism}: set F2_KAFKA_SASL_MECHANISM"
    return None

"""The project's exceptions: one root, and a few flat classes built from data."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "ERROR_EXIT",
    "REASONS",
    "BadMessage",
    "ConfigError",
    "F2StreamError",
    "Reason",
]

#: Why a message could not be decoded: the dead-letter reason and the metric label.
Reason = Literal[
    "bad_topic",
    "bad_json",
    "bad_payload",
    "bad_timestamp",
    "unknown_device",
    "no_parameter",
    "bad_value",
    "bad_frame",
    "bad_crc",
    "sink_rejected",
    "bad_record",
    "decoder_error",
    "too_large",
    "handler_error",
]
REASONS: tuple[str, ...] = get_args(Reason)

#: Exit status of a process that stopped with a one-line error (a bad setting, a command that cannot go on).
ERROR_EXIT = 2


class F2StreamError(Exception):
    """Root of every error f2stream raises on purpose."""


class ConfigError(F2StreamError):
    """A setting is missing or invalid; raised once, at start-up."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting = setting
        self.detail = detail


class BadMessage(F2StreamError):
    """A message that cannot be decoded: it goes to the dead-letter topic.

    Attributes:
        reason: machine-readable cause, one of :data:`Reason`.
        detail: what is wrong, for a human.
        topic: the MQTT topic the message came in on, when known.
    """

    def __init__(self, reason: Reason, detail: str, topic: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail
        self.topic = topic

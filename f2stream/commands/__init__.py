"""The operator commands of `faust -A f2stream`, one module per command group.

The modules here parse options, open what the command needs and print; the
work itself is library code that imports no click (:mod:`f2stream.storage.migrate`,
:mod:`f2stream.simulator`, :mod:`f2stream.verify`,
:mod:`f2stream.devices.parameter_file`, :mod:`f2stream.devices.enrolment`).
:mod:`f2stream.commands.base` holds what they share.
"""

from __future__ import annotations

import faust

from f2stream.commands import alarms, devices, kafka_acls, migrate, params, pki, repair, simulate, tail, verify
from f2stream.settings import Settings

__all__ = ["register"]


def register(app: faust.App, settings: Settings) -> None:
    """Attach every command to the pipeline app."""
    for group in (migrate, tail, simulate, verify, params, pki, devices, repair, kafka_acls, alarms):
        group.register(app, settings)

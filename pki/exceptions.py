"""Errors of the device PKI."""

from __future__ import annotations

from f2stream.errors import F2StreamError

__all__ = ["DeviceExistsError", "PkiError"]


class PkiError(F2StreamError):
    """The PKI folder is missing, incomplete or unreadable; the message says what to run."""


class DeviceExistsError(PkiError):
    """A device already has a certificate; re-issuing it needs an explicit `--force`."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id} already has a certificate: pass --force to issue a new one")
        self.device_id = device_id

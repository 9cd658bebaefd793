"""Device PKI: the CA, the broker's certificate, device certificates and revocation."""

from f2stream.pki.authority import (
    CA_DAYS,
    DEVICE_DAYS,
    CertificateInfo,
    InitResult,
    PkiPaths,
    describe,
    init_pki,
    issue_device_certificate,
    issue_service_certificate,
    load_ca,
    revoke_in_crl,
)
from f2stream.pki.exceptions import DeviceExistsError, PkiError

__all__ = [
    "CA_DAYS",
    "DEVICE_DAYS",
    "CertificateInfo",
    "DeviceExistsError",
    "InitResult",
    "PkiError",
    "PkiPaths",
    "describe",
    "init_pki",
    "issue_device_certificate",
    "issue_service_certificate",
    "load_ca",
    "revoke_in_crl",
]

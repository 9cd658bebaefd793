"""The certificate authority: CA, broker certificate, device certificates, CRL.

Everything lives under one folder (`F2_PKI_DIR`), written with owner-only
permissions (0700 folders, 0600 files) by atomic replacement:

    ca.crt ca.key server.crt server.key crl.pem devices/<device id>/device.crt, device.key
    services/<name>.crt, <name>.key (a service's own certificate: the Kafka broker, a Kafka client)

Only the `cryptography` package is used, never an openssl subprocess. Keys
are ECDSA P-256; certificates are SHA-256 signed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from f2stream.pki.exceptions import DeviceExistsError, PkiError

__all__ = [
    "CA_DAYS",
    "DEVICE_DAYS",
    "CertificateInfo",
    "InitResult",
    "PkiPaths",
    "describe",
    "init_pki",
    "issue_device_certificate",
    "issue_service_certificate",
    "load_ca",
    "revoke_in_crl",
]

CA_DAYS = 3650
SERVER_DAYS = 825
DEVICE_DAYS = 365
# A CRL past its nextUpdate makes OpenSSL refuse every client: keep it far away
# and re-sign it on every change.
CRL_DAYS = 3650
_BACKDATE = timedelta(minutes=5)  # tolerate clock skew between hosts


@dataclass(frozen=True, slots=True)
class PkiPaths:
    """The files of a PKI folder."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    def device_cert(self, device_id: str) -> Path:
        return self.devices / device_id / "device.crt"

    def device_key(self, device_id: str) -> Path:
        return self.devices / device_id / "device.key"

    @property
    def services(self) -> Path:
        return self.root / "services"

    def service_cert(self, name: str) -> Path:
        return self.services / f"{name}.crt"

    def service_key(self, name: str) -> Path:
        return self.services / f"{name}.key"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the registry records about an issued certificate."""

    common_name: str
    serial: str  # hex
    fingerprint_sha256: str  # hex, lowercase, no colons
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class InitResult:
    """What `init_pki` did."""

    ca_created: bool
    server: CertificateInfo
    hosts: tuple[str, ...]


def describe(cert: x509.Certificate) -> CertificateInfo:
    """The registry's view of a certificate."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertificateInfo(
        common_name=str(names[0].value) if names else "",
        serial=f"{cert.serial_number:x}",
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def init_pki(root: Path, hosts: Sequence[str] = (), *, now: datetime | None = None) -> InitResult:
    """Create the CA once, then (re)issue the broker certificate and an empty CRL if missing.

    An existing CA is never replaced. The server certificate is re-issued when
    it is missing, signed by another CA, about to expire, or lacks a host name.

    Args:
        root: the PKI folder (`F2_PKI_DIR`).
        hosts: extra DNS names or IP addresses of the broker; localhost and
            127.0.0.1 are always included.
        now: the current time (tests).
    """
    now = now or datetime.now(UTC)
    paths = PkiPaths(root)
    _ensure_dir(root)
    _ensure_dir(paths.devices)
    ca_created = False
    if paths.ca_cert.exists() or paths.ca_key.exists():
        ca_cert, ca_key = load_ca(paths)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "f2stream device CA")])
        ca_cert = (
            _builder(name, name, ca_key.public_key(), now, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(paths.ca_key, _key_pem(ca_key))
        _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
        ca_created = True
    all_hosts = tuple(dict.fromkeys(["localhost", "127.0.0.1", *(h.strip() for h in hosts if h.strip())]))
    server = _current_server(paths, ca_cert, all_hosts, now)
    if server is None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "f2stream mqtt broker")])
        cert = (
            _builder(subject, ca_cert.subject, key.public_key(), now, SERVER_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in all_hosts]), critical=False)
            .add_extension(_aki(ca_cert), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(paths.server_key, _key_pem(key))
        _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM))
        server = cert
    if not paths.crl.exists():
        _write_crl(paths, ca_cert, ca_key, [], now)
    return InitResult(ca_created=ca_created, server=describe(server), hosts=all_hosts)


def load_ca(paths: PkiPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key.

    Raises:
        PkiError: a file is missing or unreadable.
    """
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"no CA in {paths.root} ({exc.filename} missing): run `faust -A f2stream pki init`") from exc
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read the CA in {paths.root}: {exc.__class__.__name__}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{paths.ca_key} is not an EC key")
    return cert, key


def issue_device_certificate(
    root: Path,
    device_id: str,
    *,
    force: bool = False,
    days: int = DEVICE_DAYS,
    now: datetime | None = None,
) -> CertificateInfo:
    """Issue a client certificate whose CN is the device id; the key stays in the PKI folder.

    Raises:
        DeviceExistsError: the device has a certificate and `force` is false.
        PkiError: no CA yet.
    """
    now = now or datetime.now(UTC)
    paths = PkiPaths(root)
    ca_cert, ca_key = load_ca(paths)
    cert_path = paths.device_cert(device_id)
    if cert_path.exists() and not force:
        raise DeviceExistsError(device_id)
    _ensure_dir(paths.devices)
    _ensure_dir(cert_path.parent)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.device_key(device_id), _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return describe(cert)


def issue_service_certificate(
    root: Path, name: str, hosts: Sequence[str] = (), *, force: bool = False, now: datetime | None = None
) -> tuple[CertificateInfo, bool]:
    """A service's certificate, CN `name`: for TLS clients (mTLS) and, with `hosts`, for servers too.

    A Kafka broker presents one certificate on its listeners and to the
    other brokers and controllers it connects to, so it gets both uses.
    Kafka maps the CN to its principal (`User:<name>`, with the local
    stack's `ssl.principal.mapping.rules`). Kept while it is still right
    (this CA, not about to expire, every host named), else issued anew;
    `force` issues a new one anyway (rotation: same CN, same principal).

    Returns:
        The certificate and whether it was issued now.

    Raises:
        PkiError: no CA yet, or a name that is not a plain file name.
    """
    if not name or "/" in name or name.startswith("."):
        raise PkiError(f"{name!r} is not a service name: letters, digits, '-' and '.'")
    now = now or datetime.now(UTC)
    paths = PkiPaths(root)
    ca_cert, ca_key = load_ca(paths)
    cert_path, key_path = paths.service_cert(name), paths.service_key(name)
    all_hosts = tuple(dict.fromkeys(h.strip() for h in hosts if h.strip()))
    current = None if force else _current(cert_path, key_path, ca_cert, all_hosts, now)
    if current is not None:
        return describe(current), False
    _ensure_dir(paths.services)
    uses = [ExtendedKeyUsageOID.CLIENT_AUTH, *([ExtendedKeyUsageOID.SERVER_AUTH] if all_hosts else [])]
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_cert.subject, key.public_key(), now,
                 SERVER_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(uses), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )  # fmt: skip
    if all_hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in all_hosts]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return describe(cert), True


def revoke_in_crl(root: Path, serial_hex: str, *, now: datetime | None = None) -> int:
    """Add a certificate serial to crl.pem (kept if already there); return how many entries it holds."""
    now = now or datetime.now(UTC)
    paths = PkiPaths(root)
    ca_cert, ca_key = load_ca(paths)
    entries: dict[int, datetime] = {}
    if paths.crl.exists():
        old = x509.load_pem_x509_crl(paths.crl.read_bytes())
        entries = {r.serial_number: r.revocation_date_utc for r in old}
    entries.setdefault(int(serial_hex, 16), now)
    _write_crl(paths, ca_cert, ca_key, sorted(entries.items()), now)
    return len(entries)


# --------------------------------------------------------------------------- helpers


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
    )


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _current_server(
    paths: PkiPaths, ca_cert: x509.Certificate, hosts: tuple[str, ...], now: datetime
) -> x509.Certificate | None:
    """The existing server certificate when it is still right, else None."""
    return _current(paths.server_cert, paths.server_key, ca_cert, hosts, now)


def _current(
    cert_path: Path, key_path: Path, ca_cert: x509.Certificate, hosts: tuple[str, ...], now: datetime
) -> x509.Certificate | None:
    """The certificate at `cert_path` when it is still right (this CA, 30 days left, every host), else None."""
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - now < timedelta(days=30):
        return None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return None
    if not hosts:
        return cert
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    present = {str(n.value) for n in san}
    return cert if all(str(_general_name(h).value) in present for h in hosts) else None


def _write_crl(
    paths: PkiPaths,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    entries: Sequence[tuple[int, datetime]],
    now: datetime,
) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + timedelta(days=CRL_DAYS))
    )
    for serial, when in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write(paths.crl, crl.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ensure_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _write(path: Path, data: bytes) -> None:
    """Write owner-only (0600) by atomic rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

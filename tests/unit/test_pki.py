"""The PKI without a broker: CA once, server SANs, device certificates, CRL, permissions."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from f2stream.pki import (
    DeviceExistsError,
    PkiError,
    PkiPaths,
    init_pki,
    issue_device_certificate,
    issue_service_certificate,
    revoke_in_crl,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_creates_the_ca_once_and_a_server_certificate_for_every_host(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    first = init_pki(root, ["mosquitto", "10.0.0.5", " "])
    paths = PkiPaths(root)
    assert first.ca_created
    ca_bytes = paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()
    server = load(paths.server_cert)
    server.verify_directly_issued_by(load(paths.ca_cert))
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "mosquitto"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    }
    again = init_pki(root, ["mosquitto", "10.0.0.5"])
    assert not again.ca_created
    assert (paths.ca_cert.read_bytes(), paths.ca_key.read_bytes()) == ca_bytes
    assert again.server == first.server  # still right: kept
    third = init_pki(root, ["broker.example"])  # a new host name: a new server certificate, same CA
    assert third.server.serial != first.server.serial
    assert paths.ca_cert.read_bytes() == ca_bytes[0]


def test_files_are_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    init_pki(root)
    issue_device_certificate(root, "f2-e4fd45f654be")
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
    assert not list(root.rglob("*.tmp"))


def test_device_certificate_names_the_device_and_is_never_silently_replaced(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    init_pki(root)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    info = issue_device_certificate(root, "f2-e4fd45f654be", days=10, now=now)
    cert = load(PkiPaths(root).device_cert("f2-e4fd45f654be"))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "f2-e4fd45f654be"
    assert info.common_name == "f2-e4fd45f654be"
    assert info.not_after == now + timedelta(days=10)
    assert info.serial == f"{cert.serial_number:x}" and len(info.fingerprint_sha256) == 64
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(load(PkiPaths(root).ca_cert))
    with pytest.raises(DeviceExistsError, match="--force"):
        issue_device_certificate(root, "f2-e4fd45f654be")
    assert issue_device_certificate(root, "f2-e4fd45f654be", force=True).serial != info.serial


def test_no_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="pki init"):
        issue_device_certificate(tmp_path / "none", "f2-e4fd45f654be")


def test_crl_accumulates_revoked_serials(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    init_pki(root)
    crl = x509.load_pem_x509_crl(PkiPaths(root).crl.read_bytes())
    assert len(crl) == 0
    a = issue_device_certificate(root, "f2-000000000001")
    b = issue_device_certificate(root, "f2-000000000002")
    assert revoke_in_crl(root, a.serial) == 1
    assert revoke_in_crl(root, b.serial) == 2
    assert revoke_in_crl(root, a.serial) == 2  # idempotent
    crl = x509.load_pem_x509_crl(PkiPaths(root).crl.read_bytes())
    assert {r.serial_number for r in crl} == {int(a.serial, 16), int(b.serial, 16)}
    assert crl.is_signature_valid(load(PkiPaths(root).ca_cert).public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None and crl.next_update_utc > datetime.now(UTC) + timedelta(days=365)


def test_a_service_certificate_serves_and_authenticates_and_is_kept_while_right(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    init_pki(root)
    paths = PkiPaths(root)
    info, issued = issue_service_certificate(root, "f2-kafka-broker", ["127.0.0.1", "localhost"])
    assert issued
    cert = load(paths.service_cert("f2-kafka-broker"))
    cert.verify_directly_issued_by(load(paths.ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "f2-kafka-broker"
    uses = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert uses == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert issue_service_certificate(root, "f2-kafka-broker", ["127.0.0.1"]) == (info, False)
    assert issue_service_certificate(root, "f2-kafka-broker", ["kafka.example"])[1]  # a new host: issued anew
    renewed, issued = issue_service_certificate(root, "f2-kafka-broker", ["kafka.example"], force=True)
    assert issued and renewed.common_name == "f2-kafka-broker"  # rotation: same CN, a new key
    for path in (paths.services, paths.service_cert("f2-kafka-broker"), paths.service_key("f2-kafka-broker")):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)


def test_a_client_only_service_certificate_has_no_server_use(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    init_pki(root)
    issue_service_certificate(root, "f2-tools")
    cert = load(PkiPaths(root).service_cert("f2-tools"))
    assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.CLIENT_AUTH
    }
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize("name", ["", "../ca", ".hidden"])
def test_a_service_name_must_be_a_plain_file_name(tmp_path: Path, name: str) -> None:
    init_pki(tmp_path)
    with pytest.raises(PkiError, match="is not a service name"):
        issue_service_certificate(tmp_path, name)

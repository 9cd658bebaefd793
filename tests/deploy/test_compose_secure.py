"""Static checks of the secure container stack (docker-compose.secure.yml over docker-compose.yml).

What issue 25 promises, checked as far as a machine without Docker allows:
Kafka's listeners all on TLS (SASL_SSL with SCRAM for clients, mTLS between
broker and controller), its ACL principals those of f2stream/kafka_acls.py,
each Kafka client its own principal; both PostgreSQL servers on TLS only;
the ingest's MQTT session over TLS; the certificates the `pki` service
issues naming every host they are reached at; and every f2stream
service's settings valid (`Settings.from_env`) against a PKI and secrets
made here as the pki service and init-secrets.sh make them. The one-shot
scripts (deploy/compose/kafka/setup.sh, deploy/compose/postgres/entrypoint.sh)
run here against stand-ins for the images' programs, and setup.sh once
more with Kafka's own StorageTool (the local stack's jars, the image's
version) where deploy/stack.sh has resolved them.

Not checked here (needs Docker): that the images start with these files,
that Kafka accepts the config and the logins, that PostgreSQL serves TLS.
The same settings are tested for real on the local secure stack
(tests/integration/test_kafka_security.py, test_postgres_tls.py).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from compose_model import (
    REPO,
    SECURE_FILE,
    env_of,
    faust_commands,
    interpolate,
    is_f2stream_service,
    load,
    model,
    published_ports,
    run_init_secrets,
    secret_names,
    services,
    volume_read_only,
    volume_source,
    volume_target,
)
from cryptography import x509
from cryptography.x509.oid import NameOID

from f2stream.kafka_acls import Principals
from f2stream.pki import init_pki, issue_service_certificate
from f2stream.settings import Settings

KAFKA_DIR = REPO / "deploy" / "compose" / "kafka"
KAFKA_SETUP = KAFKA_DIR / "setup.sh"
BROKER_TEMPLATE = KAFKA_DIR / "server.properties"
POSTGRES_DIR = REPO / "deploy" / "compose" / "postgres"
PG_ENTRYPOINT = POSTGRES_DIR / "entrypoint.sh"
PG_HBA = POSTGRES_DIR / "pg_hba.conf"

#: The Kafka principal each Kafka client service logs in as.
PRINCIPALS = Principals()
KAFKA_ADMIN = "f2-kafka-admin"
EXPECTED_KAFKA_LOGINS = {
    "ingest": PRINCIPALS.ingest,
    "pipeline": PRINCIPALS.pipeline,
    "tools": PRINCIPALS.tools,
    "repair": PRINCIPALS.tools,  # replay and redrive: f2_repairer in the databases
    "kafka-acls": KAFKA_ADMIN,
}
TLS_PROTOCOLS = {"SSL", "SASL_SSL"}
POSTGRES_SERVICES = ("params-db", "timescaledb")


# --------------------------------------------------------------------------- helpers


def missing_root() -> None:
    """The script tests chown to another user: root only (CI runs as root)."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("this test must run as root (CI=true)")
        pytest.skip("this test must run as root (it chowns files to another user)")


@pytest.fixture(scope="module")
def secure() -> dict:
    """docker-compose.yml with docker-compose.secure.yml merged over it."""
    return model("secure")


def properties(text: str) -> dict[str, str]:
    """A Java properties file's key=value lines (no continuation lines: ours have none)."""
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def mount(svc: dict, source: str) -> str:
    """Where a service mounts a volume (or a ./path), '' if it does not."""
    for vol in svc.get("volumes") or []:
        if volume_source(vol) == source:
            return volume_target(vol)
    return ""


def script_default(script: Path, var: str) -> str:
    """The default of `VAR=${ENV:-default}` in a shell script."""
    m = re.search(rf"^{var}=\$\{{\w+:-([^}}]*)\}}$", script.read_text(), re.MULTILINE)
    assert m, f"{script.name}: no {var}=${{...:-default}} line"
    return m.group(1)


def broker_config(secure: dict) -> dict[str, str]:
    """The broker's server.properties as kafka-setup writes it (the template, its conf dir filled in)."""
    kafka = services(secure)["kafka"]
    text = BROKER_TEMPLATE.read_text().replace("@CONF_DIR@", mount(kafka, "kafka-secure-conf"))
    return properties(text.replace("@DATA_DIR@", mount(kafka, "kafka-secure-data")))


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` as {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def protocol_map(config: dict[str, str]) -> dict[str, str]:
    return dict(item.split(":", 1) for item in config["listener.security.protocol.map"].split(","))


def scram_users() -> dict[str, str]:
    """setup.sh's SCRAM users: {user name: secret holding its password}."""
    m = re.search(r'^USERS="([^"]*)"', KAFKA_SETUP.read_text(), re.MULTILINE)
    assert m, 'setup.sh: no USERS="..." line'
    return dict(pair.split(":", 1) for pair in m.group(1).split())


def pki_issues(secure: dict) -> list[list[str]]:
    """The `faust -A f2stream pki ...` commands of the pki service, arguments from `pki` on."""
    commands = faust_commands(services(secure)["pki"]["command"])
    assert all(cmd[:4] == ["faust", "-A", "f2stream", "pki"] for cmd in commands), commands
    return [cmd[3:] for cmd in commands]


def issued_hosts(secure: dict) -> dict[str, list[str]]:
    """{certificate name: the hosts it is issued for} of every `pki issue`."""
    out = {}
    for words in pki_issues(secure):
        if words[1] == "issue":
            out[words[2]] = [words[i + 1] for i, w in enumerate(words) if w == "--host"]
    return out


def kafka_clients(secure: dict) -> dict[str, dict[str, str]]:
    """Every f2stream service that talks to Kafka, with its environment."""
    return {
        name: env_of(svc)
        for name, svc in services(secure).items()
        if is_f2stream_service(svc) and "F2_KAFKA_BROKER" in env_of(svc)
    }


def certificate_names(path: Path) -> tuple[str, set[str]]:
    """A certificate's CN and the DNS names and addresses of its subjectAltName."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cn, set()
    return cn, {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


@pytest.fixture(scope="module")
def made_here(secure: dict) -> Iterator[tuple[Path, Path]]:
    """(secrets folder, PKI folder) made as init-secrets.sh and the pki service's commands make them."""
    with tempfile.TemporaryDirectory(prefix="f2-compose-secure-") as tmp:
        secrets, pki = Path(tmp) / "secrets", Path(tmp) / "pki"
        r = run_init_secrets(secrets)
        assert r.returncode == 0, r.stderr
        env = {k: interpolate(v) for k, v in env_of(services(secure)["pki"]).items()}
        for words in pki_issues(secure):
            if words[1] == "init":  # as `pki init` does: F2_MQTT_HOST and F2_PKI_HOSTS
                init_pki(pki, (env.get("F2_MQTT_HOST", "localhost"), *env.get("F2_PKI_HOSTS", "").split(",")))
            else:
                issue_service_certificate(pki, words[2], issued_hosts(secure)[words[2]])
        yield secrets, pki


def container_env(svc: dict, secrets: Path, pki: Path) -> dict[str, str]:
    """A service's F2_* settings with its container paths mapped to the folders made here."""
    env = {k: interpolate(v) for k, v in env_of(svc).items() if k.startswith("F2_")}
    mapping = {"/run/secrets/": f"{secrets}/"}
    for vol in svc.get("volumes") or []:
        if volume_source(vol) == "pki-data":
            mapping[volume_target(vol).rstrip("/") + "/"] = f"{pki}/"

    def here(value: str) -> str:
        for container, local in mapping.items():
            value = value.replace(container, local)
        return value

    return {key: here(value) for key, value in env.items()}


# --------------------------------------------------------------------------- the override itself


def test_override_only_completes_services(secure):
    """A service the override adds is a whole service; one it names exists in the base (no typo'd new one)."""
    override = load(SECURE_FILE)
    base = load(REPO / "docker-compose.yml")
    added = set(override["services"]) - set(base["services"])
    assert added == {"kafka-setup", "kafka-acls", "tools"}, f"unexpected new services {added}"
    for name in added:
        svc = services(secure)[name]
        assert "image" in svc, f"{name}: no image"
        assert "command" in svc or "entrypoint" in svc, f"{name}: runs nothing"
    assert services(secure)["kafka-setup"]["image"] == services(secure)["kafka"]["image"]


def test_only_pki_and_the_simulator_write_the_pki_volume(secure):
    """The others mount the certificates read-only (the simulator registers devices: it issues theirs)."""
    for name, svc in services(secure).items():
        for vol in svc.get("volumes") or []:
            if volume_source(vol) == "pki-data" and name not in ("pki", "simulator"):
                assert volume_read_only(vol), f"{name}: mount pki-data read-only ({vol})"


def waits_for_pki(secure: dict, name: str, seen: frozenset[str] = frozenset()) -> bool:
    """True when `name` starts only after pki completed: directly, or through a service that does."""
    for dep, spec in (services(secure)[name].get("depends_on") or {}).items():
        if dep == "pki":
            if (spec or {}).get("condition") == "service_completed_successfully":
                return True
        elif dep not in seen and waits_for_pki(secure, dep, seen | {name}):
            return True
    return False


def test_everything_that_reads_certificates_waits_for_pki(secure):
    for name, svc in services(secure).items():
        if mount(svc, "pki-data") and name != "pki":
            assert waits_for_pki(secure, name), f"{name} mounts the certificates: it must wait for pki to complete"


# --------------------------------------------------------------------------- Kafka: the broker


def test_every_kafka_listener_is_encrypted_and_authenticated(secure):
    config = broker_config(secure)
    protocols = protocol_map(config)
    bound = listeners(config["listeners"])
    assert set(bound) == set(protocols), "every listener needs a protocol, and no more"
    for name, protocol in protocols.items():
        assert protocol in TLS_PROTOCOLS, f"listener {name} is {protocol}: SSL or SASL_SSL only"
        if protocol == "SSL":  # without SASL, only a client certificate says who it is
            assert config.get(f"listener.name.{name.lower()}.ssl.client.auth") == "required", (
                f"listener {name}: SSL without a required client certificate lets anyone in"
            )
        else:
            for mechanism in config["sasl.enabled.mechanisms"].split(","):
                key = f"listener.name.{name.lower()}.{mechanism.lower()}.sasl.jaas.config"
                assert "ScramLoginModule required" in config.get(key, ""), f"{key} missing"
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert config["ssl.keystore.type"] == config["ssl.truststore.type"] == "PEM"
    assert protocols[config["inter.broker.listener.name"]] == "SSL", "replication on mTLS"
    for controller in config["controller.listener.names"].split(","):
        assert protocols[controller] == "SSL", "the controller quorum on mTLS"
    for name in listeners(config["advertised.listeners"]):
        assert name in protocols


def test_no_plaintext_kafka_listener_is_published(secure):
    config = broker_config(secure)
    protocols = protocol_map(config)
    by_port = {port: name for name, (_, port) in listeners(config["listeners"]).items()}
    advertised = listeners(config["advertised.listeners"])
    published = published_ports(services(secure)["kafka"])
    assert published, "kafka publishes nothing"
    for host_port, container_port in published:
        name = by_port.get(container_port)
        assert name, f"host port {host_port} -> {container_port}: no listener there"
        assert protocols[name] == "SASL_SSL", f"published listener {name} is {protocols[name]}"
        # a host client is sent back to what it dialled: localhost:<published port>
        assert advertised[name] == ("localhost", host_port), f"{name} advertises {advertised[name]}"


def test_nothing_is_allowed_without_an_acl_and_the_super_users_are_ours(secure):
    config = broker_config(secure)
    assert config["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert config["allow.everyone.if.no.acl.found"] == "false"
    supers = set(config["super.users"].split(";"))
    acls_user = env_of(services(secure)["kafka-acls"])["F2_KAFKA_USERNAME"]
    assert supers == {"User:f2-kafka-broker", f"User:{acls_user}"}
    # the broker's certificate (its principal, by ssl.principal.mapping.rules) is issued by pki
    assert "f2-kafka-broker" in issued_hosts(secure)
    assert config["ssl.principal.mapping.rules"].startswith("RULE:^CN=([^,]+)$/$1/")


def test_the_broker_certificate_names_every_host_it_is_dialled_at(secure):
    config = broker_config(secure)
    hosts = set(issued_hosts(secure)["f2-kafka-broker"])
    dialled = {host for host, _ in listeners(config["advertised.listeners"]).values()}
    dialled |= {voter.split("@", 1)[1].rsplit(":", 1)[0] for voter in config["controller.quorum.voters"].split(",")}
    for env in kafka_clients(secure).values():
        dialled |= {urlsplit(url).hostname or "" for url in env["F2_KAFKA_BROKER"].split(";")}
    assert dialled <= hosts, f"pki issue f2-kafka-broker lacks --host {sorted(dialled - hosts)}"


def test_kafka_runs_the_config_kafka_setup_writes(secure):
    s = services(secure)
    kafka, setup = s["kafka"], s["kafka-setup"]
    conf = mount(kafka, "kafka-secure-conf")
    assert conf and mount(setup, "kafka-secure-conf") == script_default(KAFKA_SETUP, "CONF") == conf
    assert mount(kafka, "kafka-secure-data") == mount(setup, "kafka-secure-data") == script_default(KAFKA_SETUP, "DATA")
    assert mount(kafka, "kafka-data") == "", "the secure broker keeps its data apart from the plain one"
    assert broker_config(secure)["log.dirs"] == script_default(KAFKA_SETUP, "DATA")
    assert kafka["entrypoint"] == ["/opt/kafka/bin/kafka-server-start.sh"]
    assert kafka["command"] == [f"{conf}/server.properties"]
    assert kafka["depends_on"]["kafka-setup"]["condition"] == "service_completed_successfully"
    assert setup["depends_on"]["pki"]["condition"] == "service_completed_successfully"
    assert setup["entrypoint"] == ["/bin/sh", f"{mount(setup, './deploy/compose/kafka')}/setup.sh"]
    assert script_default(KAFKA_SETUP, "TEMPLATE") == f"{mount(setup, './deploy/compose/kafka')}/server.properties"
    assert script_default(KAFKA_SETUP, "PKI") == mount(setup, "pki-data")
    assert str(setup.get("user")) == "0", "kafka-setup reads owner-only files: it runs as root"
    # the healthcheck logs in on the BROKER listener with the client config kafka-setup writes
    test = " ".join(kafka["healthcheck"]["test"])
    port = listeners(broker_config(secure)["advertised.listeners"])[broker_config(secure)["inter.broker.listener.name"]]
    assert f"--bootstrap-server {port[0]}:{port[1]}" in test
    assert f"--command-config {conf}/client.properties" in test


# --------------------------------------------------------------------------- Kafka: principals


def test_scram_users_are_the_acl_principals_and_the_admin(secure):
    users = scram_users()
    assert set(users) == {PRINCIPALS.ingest, PRINCIPALS.pipeline, PRINCIPALS.tools, KAFKA_ADMIN}
    assert {f.name for f in fields(Principals)} == {"ingest", "pipeline", "tools"}, "a new principal needs a user"
    assert set(secret_names(services(secure)["kafka-setup"])) == set(users.values())


def test_every_kafka_client_logs_in_as_its_own_principal(secure):
    clients = kafka_clients(secure)
    assert set(clients) == set(EXPECTED_KAFKA_LOGINS), f"Kafka clients: {sorted(clients)}"
    mechanisms = broker_config(secure)["sasl.enabled.mechanisms"].split(",")
    users = scram_users()
    for name, env in clients.items():
        assert env.get("F2_KAFKA_SECURITY_PROTOCOL") == "SASL_SSL", f"{name}: not SASL_SSL"
        assert env.get("F2_KAFKA_SASL_MECHANISM") in mechanisms, f"{name}: mechanism"
        user = env.get("F2_KAFKA_USERNAME")
        assert user == EXPECTED_KAFKA_LOGINS[name], f"{name} logs in as {user}, not {EXPECTED_KAFKA_LOGINS[name]}"
        assert env.get("F2_KAFKA_PASSWORD_FILE") == f"/run/secrets/{users[user]}", f"{name}: {user}'s password"
        assert users[user] in secret_names(services(secure)[name])
        assert env.get("F2_KAFKA_CA_FILE"), f"{name}: verify the broker against the project's CA"
        assert "F2_KAFKA_PASSWORD" not in env


def test_acls_are_applied_by_the_admin_before_the_workers_start(secure):
    s = services(secure)
    assert s["kafka-acls"]["command"] == ["faust", "-A", "f2stream", "kafka-acls", "--apply"]
    assert s["kafka-acls"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert s["kafka-acls"]["restart"] == "no"
    for name in ("pipeline", "ingest", "tools"):
        condition = (s[name].get("depends_on") or {}).get("kafka-acls", {}).get("condition")
        assert condition == "service_completed_successfully", f"{name} must start after the ACLs are in place"
    assert s["tools"].get("profiles") == ["tools"], "tools runs only when asked for"


def test_kafka_setup_formats_once_with_scram_users_from_a_file(tmp_path, made_here):
    """Runs setup.sh as root against a stand-in kafka-storage.sh that keeps what it was given."""
    missing_root()
    secrets, pki = made_here
    home, conf, data = tmp_path / "kafka", tmp_path / "conf", tmp_path / "data"
    (home / "bin").mkdir(parents=True)
    data.mkdir()
    storage = home / "bin" / "kafka-storage.sh"
    storage.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
        'for a in "$@"; do case $a in @*) f=${a#@}; cat "$f" > ' + f"{tmp_path}/argfile; "
        f'stat -c %a "$f" > {tmp_path}/argfile.mode;; esac; done\n'
        'echo "cluster.id=test" > "$DATA_DIR/meta.properties"\n'
    )
    storage.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_HOME": str(home),
        "SECRETS_DIR": str(secrets),
        "PKI_DIR": str(pki),
        "TEMPLATE": str(BROKER_TEMPLATE),
        "CONF_DIR": str(conf),
        "DATA_DIR": str(data),
        "RUN_AS": "nobody",
        "CLUSTER_ID": "9kMM0n3bQlyfviV2gzM7ZQ",
        "REPLICATION_FACTOR": "3",
        "MIN_INSYNC_REPLICAS": "2",
        "TMPDIR": str(tmp_path),  # mktemp: the SCRAM argument file
    }
    r = subprocess.run(["sh", str(KAFKA_SETUP)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    passwords = {user: (secrets / secret).read_text() for user, secret in scram_users().items()}
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:5] == ["format", "-t", "9kMM0n3bQlyfviV2gzM7ZQ", "-c", f"{conf}/server.properties"]
    assert len(argv) == 6 and argv[5].startswith("@"), argv
    assert (tmp_path / "argfile.mode").read_text().strip() == "600"
    assert not Path(argv[5][1:]).exists(), "the SCRAM argument file must be removed"
    lines = (tmp_path / "argfile").read_text().splitlines()
    assert lines[0::2] == ["--add-scram"] * len(passwords)
    assert lines[1::2] == [f"SCRAM-SHA-512=[name={u},password={p}]" for u, p in passwords.items()]
    for password in passwords.values():
        assert password not in "\n".join(argv) + r.stdout + r.stderr
    nobody = pwd.getpwnam("nobody").pw_uid
    assert (conf.stat().st_mode & 0o777, conf.stat().st_uid) == (0o700, nobody)
    for name in ("server.properties", "broker.pem", "ca.crt", "client.properties"):
        st = (conf / name).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, nobody), name
    assert (data / "meta.properties").stat().st_uid == nobody
    written = properties((conf / "server.properties").read_text())
    assert written["ssl.keystore.location"] == f"{conf}/broker.pem"
    assert written["default.replication.factor"] == written["offsets.topic.replication.factor"] == "3"
    assert written["min.insync.replicas"] == written["transaction.state.log.min.isr"] == "2"
    assert written["log.dirs"] == str(data)
    assert "@CONF_DIR@" not in (conf / "server.properties").read_text()
    key, cert = (pki / "services" / "f2-kafka-broker.key").read_text(), (pki / "services" / "f2-kafka-broker.crt")
    assert (conf / "broker.pem").read_text() == key + cert.read_text()
    client = properties((conf / "client.properties").read_text())
    assert client["security.protocol"] == "SSL" and client["ssl.keystore.location"] == f"{conf}/broker.pem"
    # formatted once: a second run keeps the storage (and its users)
    (tmp_path / "argv").unlink()
    again = subprocess.run(["sh", str(KAFKA_SETUP)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "argv").exists(), "formatted twice"
    # a missing password stops it before anything is formatted
    (secrets / scram_users()[PRINCIPALS.tools]).rename(tmp_path / "moved")
    shutil.rmtree(data)
    data.mkdir()
    bad = subprocess.run(["sh", str(KAFKA_SETUP)], env=env, capture_output=True, text=True, timeout=60, check=False)
    (tmp_path / "moved").rename(secrets / scram_users()[PRINCIPALS.tools])
    assert bad.returncode != 0 and "init-secrets.sh" in bad.stderr
    assert not (tmp_path / "argv").exists()


# --------------------------------------------------------------------------- PostgreSQL


def test_pg_hba_takes_tls_connections_only():
    lines = [line.split() for line in PG_HBA.read_text().splitlines() if line.strip() and not line.startswith("#")]
    kinds = {words[0] for words in lines}
    assert "host" not in kinds, "a plain `host` line would take connections without TLS"
    assert kinds <= {"local", "hostssl", "hostnossl"}
    for words in lines:
        if words[0] == "hostssl":
            assert words[-1] == "scram-sha-256", words
        if words[0] == "hostnossl":
            assert words[-1] == "reject", words
        assert words[-1] != "trust", f"no password-less login: {words}"
    assert any(words[0] == "hostssl" for words in lines)


@pytest.mark.parametrize("name", POSTGRES_SERVICES)
def test_postgres_serves_tls_with_its_own_certificate(secure, name):
    svc = services(secure)[name]
    tls_dir = script_default(PG_ENTRYPOINT, "TLS")
    assert svc["entrypoint"] == ["/bin/sh", f"{mount(svc, './deploy/compose/postgres')}/entrypoint.sh"]
    assert script_default(PG_ENTRYPOINT, "PKI") == mount(svc, "pki-data")
    assert script_default(PG_ENTRYPOINT, "HBA") == f"{mount(svc, './deploy/compose/postgres')}/pg_hba.conf"
    cmd = svc["command"]
    assert cmd[0] == "postgres"
    options = dict(cmd[i + 1].split("=", 1) for i, word in enumerate(cmd) if word == "-c")
    assert options.get("ssl") == "on", f"{name}: postgres -c ssl=on"
    assert options.get("ssl_cert_file") == f"{tls_dir}/server.crt", f"{name}: the certificate entrypoint.sh copies"
    assert options.get("ssl_key_file") == f"{tls_dir}/server.key", f"{name}: the key entrypoint.sh copies"
    assert options.get("hba_file") == f"{tls_dir}/pg_hba.conf", f"{name}: deploy/compose/postgres/pg_hba.conf"
    assert options.get("ssl_min_protocol_version") in ("TLSv1.2", "TLSv1.3"), f"{name}: TLS 1.2 or newer"
    cert = env_of(svc)["TLS_CERT_NAME"]
    hosts = issued_hosts(secure).get(cert)
    assert hosts is not None, f"{name}: pki issues no certificate {cert}"
    assert name in hosts and "localhost" in hosts, f"{cert}: --host {name} --host localhost"
    others = [env_of(services(secure)[other])["TLS_CERT_NAME"] for other in POSTGRES_SERVICES if other != name]
    assert cert not in others, "each server its own certificate and key"


def test_postgres_entrypoint_hands_the_tls_files_to_the_server(tmp_path, made_here):
    """Runs entrypoint.sh as root with a stand-in docker-entrypoint.sh that reports what it sees."""
    missing_root()
    _, pki = made_here
    bin_dir, tls = tmp_path / "bin", tmp_path / "tls"
    bin_dir.mkdir()
    stand_in = bin_dir / "docker-entrypoint.sh"
    stand_in.write_text('#!/bin/sh\necho "args: $*"\n')
    stand_in.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PKI_DIR": str(pki),
        "HBA_SOURCE": str(PG_HBA),
        "TLS_DIR": str(tls),
        "PG_USER": "nobody",
        "TLS_CERT_NAME": "f2-params-db",
    }
    r = subprocess.run(
        ["sh", str(PG_ENTRYPOINT), "postgres", "-c", "ssl=on"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "args: postgres -c ssl=on"
    nobody = pwd.getpwnam("nobody").pw_uid
    assert (tls.stat().st_mode & 0o777, tls.stat().st_uid) == (0o700, nobody)
    for name in ("server.crt", "server.key", "pg_hba.conf"):
        st = (tls / name).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, nobody), name
    assert (tls / "server.key").read_bytes() == (pki / "services" / "f2-params-db.key").read_bytes()
    env["TLS_CERT_NAME"] = "f2-nonesuch"
    bad = subprocess.run(["sh", str(PG_ENTRYPOINT), "postgres"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "pki" in bad.stderr and "args:" not in bad.stdout


# --------------------------------------------------------------------------- the workers' settings


def test_every_f2stream_service_has_valid_secure_settings(secure, made_here):
    """Settings.from_env on each service's environment, its files made here as pki and init-secrets make them."""
    secrets, pki = made_here
    checked = []
    for name, svc in services(secure).items():
        if not is_f2stream_service(svc):
            continue
        env = container_env(svc, secrets, pki)
        settings = Settings.from_env(env)  # raises ConfigError naming the setting
        checked.append(name)
        for key in ("F2_PARAMS_DSN", "F2_TIMESERIES_DSN"):
            if key in env:
                query = parse_qs(urlsplit(env[key]).query)
                assert query.get("sslmode") == ["verify-full"], f"{name}: {key} must verify the server"
                assert query.get("sslrootcert") == [f"{pki}/ca.crt"], f"{name}: {key} trusts the project's CA"
                host = urlsplit(env[key]).hostname
                assert any(host in hosts for hosts in issued_hosts(secure).values()), f"{name}: {host} has no cert"
        if settings.kafka_tls:
            assert settings.kafka_ca_file == pki / "ca.crt", name
    assert {"pipeline", "ingest", "migrate", "simulator", "kafka-acls", "tools", "pki"} <= set(checked)


def test_the_ingest_reaches_mosquitto_over_tls_with_its_certificate(secure, made_here):
    secrets, pki = made_here
    settings = Settings.from_env(container_env(services(secure)["ingest"], secrets, pki))
    assert settings.mqtt_tls and settings.mqtt_ingest_port == 8883
    assert settings.mqtt_cert_file is not None and settings.mqtt_ca_file == pki / "ca.crt"
    cn, hosts = certificate_names(settings.mqtt_cert_file)
    assert cn == PRINCIPALS.ingest == "f2-ingest", "the Mosquitto ACL's user f2-ingest"
    assert not hosts, "a client certificate: no host names"
    assert issued_hosts(secure)["f2-ingest"] == []
    _, broker_hosts = certificate_names(pki / "server.crt")
    assert settings.mqtt_host in broker_hosts, "Mosquitto's certificate must name the host the ingest dials"
    # the listener it dials takes certificates: mosquitto.conf's 8883 block
    conf = (REPO / "deploy" / "compose" / "mosquitto" / "mosquitto.conf").read_text()
    block = conf.split("listener 8883", 1)[1]
    assert "require_certificate true" in block and "use_identity_as_username true" in block


def test_issued_certificates_name_their_hosts(made_here, secure):
    """The certificates as issued here: CN the name, subjectAltName every --host."""
    _, pki = made_here
    for name, hosts in issued_hosts(secure).items():
        cn, names = certificate_names(pki / "services" / f"{name}.crt")
        assert cn == name and names == set(hosts), (name, names)


def test_no_secret_in_the_compose_files():
    """Secrets come from files; neither compose file holds a password or a key."""
    for path in (REPO / "docker-compose.yml", SECURE_FILE):
        text = path.read_text()
        assert "BEGIN" not in text and "PRIVATE KEY" not in text
        assert not re.search(r"password\s*=", text, re.IGNORECASE), f"{path.name}: a password in the file"


def kafka_classpath(version: str) -> str | None:
    """The local stack's Kafka jars (deploy/kafka/pom.xml), as deploy/stack.sh caches them, if they are `version`."""
    pom = REPO / "deploy" / "kafka" / "pom.xml"
    m = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text())
    if not m or m.group(1) != version:
        pytest.fail(f"deploy/kafka/pom.xml has Kafka {m and m.group(1)}, the compose image {version}: keep them equal")
    key = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "f2stream" / f"kafka-{key}.classpath"
    if not cache.is_file():
        return None
    classpath = cache.read_text().strip()
    return classpath if all(Path(jar).is_file() for jar in classpath.split(":")) else None


def test_the_real_kafka_takes_the_broker_config_and_the_scram_users(secure, tmp_path, made_here):
    """setup.sh with Kafka's own StorageTool (the local stack's jars, the image's version): config and users accepted.

    StorageTool builds the broker's KafkaConfig (listeners, protocols, SASL,
    TLS settings) before it formats; the SCRAM users are then read back from
    the bootstrap checkpoint. Starting the broker itself needs the container.
    """
    missing_root()
    image = str(services(secure)["kafka"]["image"])
    classpath = kafka_classpath(image.rsplit(":", 1)[1])
    if classpath is None or shutil.which("java") is None:
        pytest.skip("Kafka's jars are not resolved here (deploy/stack.sh up resolves and caches them) or no java")
    secrets, pki = made_here
    home, conf, data = tmp_path / "kafka", tmp_path / "conf", tmp_path / "data"
    (home / "bin").mkdir(parents=True)
    data.mkdir()
    storage = home / "bin" / "kafka-storage.sh"
    storage.write_text(f'#!/bin/sh\nexec java -cp "{classpath}" kafka.tools.StorageTool "$@"\n')
    storage.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_HOME": str(home),
        "SECRETS_DIR": str(secrets),
        "PKI_DIR": str(pki),
        "TEMPLATE": str(BROKER_TEMPLATE),
        "CONF_DIR": str(conf),
        "DATA_DIR": str(data),
        "RUN_AS": "nobody",
        "CLUSTER_ID": str(env_of(services(secure)["kafka-setup"])["CLUSTER_ID"]),
        "TMPDIR": str(tmp_path),
    }
    r = subprocess.run(["sh", str(KAFKA_SETUP)], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dump = subprocess.run(
        ["java", "-cp", classpath, "kafka.tools.DumpLogSegments", "--cluster-metadata-decoder",
         "--files", str(data / "bootstrap.checkpoint")],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert dump.returncode == 0, dump.stderr[-3000:]
    users = set(re.findall(r'"type":"USER_SCRAM_CREDENTIAL_RECORD".*?"name":"([^"]+)","mechanism":2', dump.stdout))
    assert users == set(scram_users()), dump.stdout[-3000:]

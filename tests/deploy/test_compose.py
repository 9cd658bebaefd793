"""Static checks of the container deployment: docker-compose.yml,
deploy/docker/Dockerfile, deploy/compose/ (Mosquitto config, init-secrets.sh).

Every check of the compose file runs on both variants: `plain`
(docker-compose.yml) and `secure` (docker-compose.secure.yml merged over it,
as `docker compose -f ... -f ...` does: tests/deploy/compose_model.py);
test_compose_secure.py checks what only the secure variant promises.

No Docker engine is needed. `docker compose config -q` runs when the compose
plugin is installed (it parses locally) and is skipped otherwise, in CI too:
Compose v2 cannot be installed on this machine from the package sources we
use (Debian 12 packages only docker-compose 1.29, PyPI none). The other tools
(`mosquitto_passwd`, `setpriv`) are installed by `make stack-install`; when
one is missing its test skips, and with CI=true fails. The CLI checks run
`python -m faust -A APP COMMAND --help` and so need f2stream installed
(`pip install -e .`) in the interpreter running pytest.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

import pytest
import yaml  # PyYAML, a dev dependency
from compose_model import (
    REPO,
    VARIANTS,
    env_of,
    faust_commands,
    is_f2stream_service,
    model,
    published_ports,
    resolve_secret_path,
    run_init_secrets,
    secret_names,
    services,
)

from f2stream.settings import Settings

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERFILE_REL = "deploy/docker/Dockerfile"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
MOSQUITTO_DIR = REPO / "deploy" / "compose" / "mosquitto"
LOCAL_ACL = REPO / "deploy" / "mosquitto" / "acl.tmpl"

# The settings f2stream reads (ARCHITECTURE.md "Ports and settings", plus the
# simulator's own MQTT login). Compose may set no other F2_* variable.
#: Every F2_* variable f2stream reads: one per Settings field, and a _FILE form for each secret.
KNOWN_SETTINGS = {f"F2_{field.name.upper()}" for field in fields(Settings)} | {
    f"F2_{field.name.upper()}_FILE" for field in fields(Settings) if "password" in field.name
}

# ARCHITECTURE.md "Ports and settings": host port -> service publishing it.
ARCHITECTURE_PORTS = {
    9092: "kafka",
    1883: "mosquitto",
    5432: "params-db",
    5433: "timescaledb",
    6066: "pipeline",
    6067: "ingest",
}
# Published only once the service exists (monitoring issue) / the listener
# exists (security issue).
OPTIONAL_PORTS = {
    9090: "prometheus",
    3000: "grafana",
    8883: "mosquitto",
    9001: "mosquitto",
    9100: "node-exporter",
    8080: "cadvisor",
}

F2_APPS = ("f2stream", "f2stream.ingest")

# An exact version: at least major.minor (postgres 15.10), usually a patch
# too, optionally a variant suffix (2.17.2-pg15, 3.11.11-slim-bookworm).
PINNED_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([-.][A-Za-z0-9.-]+)?$")
IMAGE_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/-]*)(:(?P<tag>[A-Za-z0-9._-]+))?(@sha256:[0-9a-f]{64})?$")


# --------------------------------------------------------------------------- helpers


def missing(what: str, fix: str) -> NoReturn:
    """Something a test needs is not on this machine: a skip here, a failure in CI (CI=true), which installs it."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{what} (CI=true: a missing tool is a failure, not a skip); {fix}")
    pytest.skip(f"{what}; {fix}")


@pytest.fixture(scope="module", params=list(VARIANTS))
def compose(request) -> dict:
    """The application model of each variant (plain, secure)."""
    return model(request.param)


def f2_commands(compose: dict) -> list[tuple[str, list[str]]]:
    """(service, command) of every f2stream command in the model, a script's lines each."""
    return [
        (name, cmd)
        for name, svc in services(compose).items()
        if is_f2stream_service(svc)
        for cmd in faust_commands(svc.get("command"))
    ]


def compose_cli() -> list[str] | None:
    """`docker compose` (plugin) or `docker-compose` v2, if one works here."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        try:
            r = subprocess.run(
                [*cmd, "version"],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and "Docker Compose" in r.stdout and " 1." not in r.stdout:
            return cmd
    return None


# --------------------------------------------------------------------------- images


def test_every_service_has_pinned_image_or_our_build(compose):
    for name, svc in services(compose).items():
        if "build" in svc:
            build = svc["build"]
            assert isinstance(build, dict), f"{name}: use the long build syntax"
            assert build.get("context") in (".", "./"), f"{name}: build context must be the repo root"
            assert build.get("dockerfile") == DOCKERFILE_REL, f"{name}: must build {DOCKERFILE_REL}"
            if "image" in svc:  # the name the built image gets: a version, not latest
                m = IMAGE_REF.match(str(svc["image"]))
                assert m and m.group("tag") and m.group("tag") != "latest", f"{name}: {svc['image']!r}"
            continue
        image = svc.get("image")
        assert image, f"{name}: neither image nor build"
        m = IMAGE_REF.match(str(image))
        assert m, f"{name}: malformed image reference {image!r}"
        tag = m.group("tag")
        assert tag, f"{name}: image {image!r} has no tag (bare name means latest)"
        assert PINNED_TAG.match(tag), f"{name}: image tag {tag!r} is not an exact version"


def test_no_image_uses_latest(compose):
    for name, svc in services(compose).items():
        image = str(svc.get("image", ""))
        assert not image.endswith(":latest") and "latest" not in image.rsplit(":", maxsplit=1)[-1], f"{name}: {image!r}"


def test_dockerfile_base_image_is_pinned():
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    stages: set[str] = set()
    bases = []
    for line in re.findall(r"^FROM\s+(.+)$", text, re.MULTILINE):
        words = [w for w in line.split() if not w.startswith("--")]
        ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if ref not in stages:
            bases.append(ref)
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2])
    assert bases, "Dockerfile has no FROM"
    for ref in bases:
        m = IMAGE_REF.match(ref)
        assert m and m.group("tag"), f"base image {ref!r} is not pinned"
        assert m.group("name") == "python", f"base image {ref!r}: expected python"
        assert re.match(r"^3\.11\.\d+-slim-[a-z]+$", m.group("tag")), (
            f"base image {ref!r}: expected python:3.11.<patch>-slim-<debian release>"
        )


def test_dockerfile_runs_commands_as_non_root_and_installs_package():
    text = DOCKERFILE.read_text()
    assert re.search(r"pip install --no-cache-dir \.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    if users and users[-1].split(":")[0] not in ("root", "0"):
        return
    # starts as root: the entrypoint must drop to the f2 user before exec
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/f2-entrypoint"\]', text, re.MULTILINE)
    assert "COPY deploy/docker/entrypoint.sh /usr/local/bin/f2-entrypoint" in text
    script = ENTRYPOINT.read_text()
    assert re.search(r"^RUN_AS=\$\{RUN_AS:-f2\}$", script, re.MULTILINE)
    assert re.search(r"^exec setpriv --reuid=", script, re.MULTILINE)
    assert "useradd --system --uid 10001" in text


def test_dockerfile_sets_only_known_settings():
    for var in re.findall(r"\b(F2_[A-Z_]+)=", DOCKERFILE.read_text()):
        assert var in KNOWN_SETTINGS, f"Dockerfile sets unknown setting {var}"


def test_entrypoint_hands_secrets_to_the_run_user(tmp_path):
    """Runs deploy/docker/entrypoint.sh here, as root, with RUN_AS=nobody."""
    if shutil.which("setpriv") is None:
        missing("setpriv is not installed", "it comes with util-linux: make stack-install")
    if os.geteuid() != 0:
        missing("this test must run as root (it drops to RUN_AS=nobody)", "run it as root, as CI does")
    secret = tmp_path / "params_db_password"
    secret.write_text("s3cret-value")
    secret.chmod(0o600)
    # the run user must reach the copies: pytest's tmp_path sits in a 0700 folder
    scratch = Path(tempfile.mkdtemp(prefix="f2-entrypoint-"))
    scratch.chmod(0o755)
    copy_dir = scratch / "copies"
    probe = (
        'id -u; cat "$F2_PARAMS_PASSWORD_FILE"; echo; '
        'stat -c %a "$F2_PARAMS_PASSWORD_FILE"; '
        f"cat {secret} 2>/dev/null && echo ORIGINAL-READABLE; "
        "grep NoNewPrivs /proc/self/status"
    )
    r = subprocess.run(
        ["sh", str(ENTRYPOINT), "sh", "-c", probe],
        check=False,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RUN_AS": "nobody",
            "SECRETS_COPY_DIR": str(copy_dir),
            "F2_PARAMS_PASSWORD_FILE": str(secret),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    shutil.rmtree(scratch)
    lines = r.stdout.splitlines()
    assert lines[:3] == [str(pwd_uid("nobody")), "s3cret-value", "400"], (
        r.stdout,
        r.stderr,
    )
    assert "ORIGINAL-READABLE" not in r.stdout
    assert re.search(r"NoNewPrivs:\s+1", r.stdout)


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


# --------------------------------------------------------------------------- commands


def test_f2stream_commands_use_the_faust_cli(compose):
    cmds = f2_commands(compose)
    assert {n for n, _ in cmds} >= {"migrate", "pipeline", "ingest", "simulator"}
    for name, cmd in cmds:
        assert isinstance(cmd, list), f"{name}: write command as a list (exec form)"
        assert cmd[:2] == ["faust", "-A"] and cmd[2] in F2_APPS, (
            f"{name}: command must start with `faust -A f2stream` or `faust -A f2stream.ingest`: {cmd}"
        )
        assert len(cmd) >= 4 and not cmd[3].startswith("-"), f"{name}: no command after the app: {cmd}"


def _cli_cases() -> list:
    cases = {}
    for variant in VARIANTS:
        for name, cmd in f2_commands(model(variant)):
            if isinstance(cmd, list) and len(cmd) >= 4:
                options = sorted({w.split("=")[0] for w in cmd[4:] if w.startswith("--")})
                case_id = f"{name}:{cmd[2]}:{cmd[3]}" + "".join(f":{o}" for o in options)
                cases.setdefault(case_id, pytest.param(cmd[2], cmd[3], options, id=case_id))
    return list(cases.values())


@pytest.mark.parametrize(("app", "command", "options"), _cli_cases())
def test_cli_has_command(app, command, options):
    """Every f2stream command in compose exists in the real CLI, with the options compose passes."""
    r = subprocess.run(
        [sys.executable, "-m", "faust", "-A", app, command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert r.returncode == 0, (
        f"`faust -A {app} {command} --help` exited {r.returncode} "
        f"(is f2stream installed and does it have this command?)\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    )
    for opt in options:
        assert opt in r.stdout, f"`faust -A {app} {command}` has no option {opt}:\n{r.stdout}"


def test_worker_web_ports_match_published_and_healthcheck(compose):
    for name, port in (("pipeline", 6066), ("ingest", 6067)):
        svc = services(compose)[name]
        cmd = svc["command"]
        assert cmd[cmd.index("--web-port") + 1] == str(port), f"{name}: --web-port {port}"
        assert (port, port) in published_ports(svc), f"{name}: publish {port}:{port}"
        assert str(port) in " ".join(svc["healthcheck"]["test"]), f"{name}: healthcheck on {port}"


# --------------------------------------------------------------------------- settings and secrets


def test_only_known_f2_settings(compose):
    for name, svc in services(compose).items():
        for key in env_of(svc):
            if key.startswith("F2_"):
                assert key in KNOWN_SETTINGS, f"{name}: unknown setting {key}"


def test_password_files_point_at_the_services_own_secrets(compose):
    declared = set((compose.get("secrets") or {}).keys())
    for name, svc in services(compose).items():
        own = set(secret_names(svc))
        assert own <= declared, f"{name}: undeclared secrets {own - declared}"
        for key, value in env_of(svc).items():
            if key.endswith("_FILE") and value.startswith("/run/secrets/"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in own, f"{name}: {key} -> {value}, but the service lacks secret {secret}"
        # no plain passwords in the environment
        for key in env_of(svc):
            assert not re.search(r"PASSWORD$", key), f"{name}: {key}: use the *_FILE form"


def test_every_secret_file_exists_after_init_secrets(compose, tmp_path):
    target = tmp_path / "compose-secrets"
    first = run_init_secrets(target)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    contents = {}
    for name, spec in (compose.get("secrets") or {}).items():
        assert "file" in spec, f"secret {name}: expected a file secret"
        path = resolve_secret_path(spec["file"], target)
        assert path.parent == target, f"secret {name}: {spec['file']} is outside the secrets folder"
        assert path.is_file() and path.stat().st_size >= 32, f"secret {name}: {path} missing or short"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: expected mode 0600"
        value = path.read_text()
        assert re.fullmatch(r"[0-9a-f]+", value), f"{path}: expected hex, no newline"
        contents[name] = value
    # never echoed
    for value in contents.values():
        assert value not in first.stdout and value not in first.stderr
    # idempotent: a second run keeps every secret
    second = run_init_secrets(target)
    assert second.returncode == 0, second.stderr
    for name, spec in compose["secrets"].items():
        assert resolve_secret_path(spec["file"], target).read_text() == contents[name]


def test_default_secrets_folder_is_git_ignored(compose):
    for name, spec in (compose.get("secrets") or {}).items():
        path = resolve_secret_path(spec["file"], None)
        rel = path.relative_to(REPO)
        assert rel.parts[0] == "var", f"secret {name}: default {rel} must be under var/"
    assert "/var/" in (REPO / ".gitignore").read_text().split()


# --------------------------------------------------------------------------- wiring


def test_depends_on_targets_exist(compose):
    names = set(services(compose))
    for name, svc in services(compose).items():
        deps = svc.get("depends_on") or []
        targets = list(deps) if isinstance(deps, (list, dict)) else []
        for target in targets:
            assert target in names, f"{name} depends on unknown service {target}"


def test_start_order(compose):
    s = services(compose)
    assert s["migrate"]["depends_on"]["params-db"]["condition"] == "service_healthy"
    assert s["migrate"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    assert s["pipeline"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert s["pipeline"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert set(s["ingest"]["depends_on"]) >= {"kafka", "mosquitto"}
    for server in ("kafka", "mosquitto", "params-db", "timescaledb"):
        assert "healthcheck" in s[server], f"{server}: needs a healthcheck"


def test_named_volumes_are_declared(compose):
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in services(compose).items():
        for vol in svc.get("volumes") or []:
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_architecture_ports_are_published(compose):
    s = services(compose)
    for port, service in ARCHITECTURE_PORTS.items():
        assert service in s, f"service {service} missing"
        hosts = [h for h, _ in published_ports(s[service])]
        assert port in hosts, f"{service} must publish host port {port}"
    for port, service in OPTIONAL_PORTS.items():
        if service in s and port != 8883:
            assert port in [h for h, _ in published_ports(s[service])], f"{service}: publish {port}"


def test_every_port_is_published_on_loopback_only(compose):
    """Plaintext listeners stay (Mosquitto's password listeners in both variants): nothing off the host reaches them."""
    for name, svc in services(compose).items():
        for entry in svc.get("ports") or []:
            ip = entry.get("host_ip") if isinstance(entry, dict) else str(entry).split(":")[0]
            assert ip == "127.0.0.1", f"{name}: publish {entry} on 127.0.0.1 only"


def test_mqtt_tls_port_published_iff_listener_enabled(compose):
    conf = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
    enabled = re.search(r"^\s*listener\s+8883\b", conf, re.MULTILINE) is not None
    published = 8883 in [h for h, _ in published_ports(services(compose)["mosquitto"])]
    assert enabled == published, (
        "mosquitto.conf listener 8883 and the published port 8883 go together "
        f"(listener enabled: {enabled}, published: {published})"
    )


# --------------------------------------------------------------------------- mosquitto


def test_mosquitto_config():
    conf = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
    directives = {
        tuple(line.split(None, 1)) for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")
    }
    for expected in (
        ("listener", "1883"),
        ("allow_anonymous", "false"),
        ("persistence", "true"),
        ("max_queued_messages", "2000000"),
        ("max_queued_bytes", "0"),
        ("set_tcp_nodelay", "true"),
    ):
        assert expected in directives, f"mosquitto.conf lacks `{' '.join(expected)}`"
    acl = (MOSQUITTO_DIR / "acl").read_text()
    for kind in ("cmnd", "stat", "tele"):
        assert re.search(rf"user f2-ingest\n(topic .*\n)*topic read {kind}/#", acl)
        assert re.search(rf"user f2-simulator\n(topic .*\n)*topic write {kind}/#", acl)


def test_mosquitto_entrypoint_uses_the_services_secrets(compose):
    script = (MOSQUITTO_DIR / "entrypoint.sh").read_text()
    svc = services(compose)["mosquitto"]
    used = set(re.findall(r'"f2-[a-z]+:(\w+)"', script))
    assert used == set(secret_names(svc))
    assert "mosquitto_passwd" in script


def test_mosquitto_entrypoint_builds_a_password_file(tmp_path):
    """Runs the password part of the entrypoint with the local mosquitto_passwd."""
    if shutil.which("mosquitto_passwd") is None:
        missing("mosquitto_passwd is not installed", "it comes with the mosquitto package: make stack-install")
    secrets = tmp_path / "secrets"
    assert run_init_secrets(secrets).returncode == 0
    script = (MOSQUITTO_DIR / "entrypoint.sh").read_text()
    # run it against a scratch root: no chown, paths under tmp_path
    script = script.replace("/mosquitto/", f"{tmp_path}/mosquitto/")
    script = re.sub(r"^\s*chown .*$", ":", script, flags=re.MULTILINE)
    (tmp_path / "mosquitto" / "config").mkdir(parents=True)
    shutil.copy(MOSQUITTO_DIR / "acl", tmp_path / "mosquitto" / "config" / "acl")
    (tmp_path / "ep.sh").write_text(script)
    r = subprocess.run(
        ["sh", str(tmp_path / "ep.sh"), "true"],
        check=False,
        env={**os.environ, "SECRETS_DIR": str(secrets)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    passwd = (tmp_path / "mosquitto" / "auth" / "passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in passwd] == ["f2-ingest", "f2-simulator", "f2-dashboard"]
    for line in passwd:
        assert line.split(":", 1)[1].startswith("$"), "password not hashed"
    for value in (p.read_text() for p in secrets.iterdir()):
        assert value not in r.stdout + r.stderr


def listener_blocks(conf: str) -> dict[str, list[tuple[str, ...]]]:
    """The directives after each `listener PORT` line, up to the next listener."""
    blocks: dict[str, list[tuple[str, ...]]] = {}
    current: list[tuple[str, ...]] | None = None
    for line in conf.splitlines():
        words = tuple(line.split())
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "listener":
            current = blocks.setdefault(words[1], [])
        elif current is not None:
            current.append(words)
    return blocks


def test_mosquitto_serves_websockets_on_9001_to_password_accounts_only(compose):
    conf = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
    blocks = listener_blocks(conf)
    assert ("protocol", "websockets") in blocks["9001"]
    # no certificate login there: the global password file and ACL decide
    assert not any(words[0] in ("require_certificate", "use_identity_as_username") for words in blocks["9001"])
    before_listeners = conf.split("\nlistener ", 1)[0]
    for directive in ("per_listener_settings false", "allow_anonymous false", "password_file ", "acl_file "):
        assert re.search(rf"^{directive}", before_listeners, re.MULTILINE), f"global `{directive}` missing"
    assert ("127.0.0.1:9001:9001") in [str(p) for p in services(compose)["mosquitto"]["ports"]]
    assert "mqtt_dashboard_password" in secret_names(services(compose)["mosquitto"])


def user_block(acl: str, user: str) -> list[str]:
    """The ACL lines of `user`, up to the next user or pattern line."""
    lines = [line.strip() for line in acl.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    start = lines.index(f"user {user}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(("user ", "pattern "))), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("acl", [MOSQUITTO_DIR / "acl", LOCAL_ACL], ids=["compose", "local"])
def test_the_dashboard_account_reads_telemetry_and_writes_nothing(acl: Path):
    assert sorted(user_block(acl.read_text(), "f2-dashboard")) == [
        "topic read cmnd/#",
        "topic read stat/#",
        "topic read tele/#",
    ]


# --------------------------------------------------------------------------- docker compose


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_docker_compose_config_is_valid(tmp_path, variant):
    cli = compose_cli()
    if cli is None:
        # Skipped in CI too: Compose v2 cannot be installed here (see the module docstring).
        pytest.skip(
            "no Docker Compose v2 here: `docker compose version` fails (compose CLI "
            "plugin not installed) and no `docker-compose` v2 binary on PATH"
        )
    secrets = tmp_path / "compose-secrets"
    assert run_init_secrets(secrets).returncode == 0
    r = subprocess.run(
        [*cli, *(word for path in VARIANTS[variant] for word in ("-f", str(path))), "config", "-q"],
        check=False,
        cwd=REPO,
        env={**os.environ, "F2STREAM_SECRETS_DIR": str(secrets)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- monitoring


def test_prometheus_scrapes_both_workers_and_mounts_what_exists(compose):
    s = services(compose)
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"pipeline:6066", "ingest:6067", "node-exporter:9100", "cadvisor:8080"}
    for target in targets:  # each one a service of this file, on a port it serves
        host, port = target.split(":")
        assert host in s, f"prometheus scrapes {target}, but there is no service {host}"
        assert int(port) in [c for _, c in published_ports(s[host])], f"{host} does not serve {port}"
    # The dashboard's Host row reads job "node".
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"node", "cadvisor"}
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    for name in ("prometheus", "grafana", "node-exporter", "cadvisor"):
        assert "healthcheck" in s[name], f"{name}: needs a healthcheck"
        for vol in s[name].get("volumes") or []:
            source = str(vol).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: mounts missing {source}"
    mounted = {str(v).split(":")[1] for v in s["prometheus"]["volumes"]}
    assert "/etc/prometheus/rules.yml" in mounted
    assert s["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"


def test_compose_prometheus_config_passes_promtool(tmp_path):
    """The real promtool on the compose config, its rule file pointed at the repository's."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found: run deploy/stack.sh install (Debian package prometheus)")
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(REPO / "deploy" / "prometheus" / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    r = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_host_and_container_exporters_read_the_host_read_only(compose):
    s = services(compose)
    node = s["node-exporter"]
    assert "/:/host:ro,rslave" in node["volumes"]
    assert "--path.rootfs=/host" in node["command"]
    assert node.get("pid") == "host"
    for name in ("node-exporter", "cadvisor"):
        for port in s[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish on 127.0.0.1 only, not {port}"
    for vol in s["cadvisor"]["volumes"]:
        assert str(vol).endswith(":ro"), f"cadvisor: {vol} must be read-only"


# --------------------------------------------------------------------------- database roles

ROLES_SCRIPT = "./deploy/compose/postgres/roles.sh"
#: Each database container and the migration that grants its group roles their rights.
ROLE_MIGRATIONS = {"params-db": "migrations/params/006_roles.sql", "timescaledb": "migrations/timeseries/008_roles.sql"}


def migration_roles(path: str) -> list[str]:
    """The group roles a roles migration creates if missing (its `FOREACH r IN ARRAY ARRAY[...]`)."""
    found = re.search(r"FOREACH r IN ARRAY ARRAY\[([^\]]*)\]", (REPO / path).read_text())
    assert found, f"{path}: no list of roles"
    return re.findall(r"'([a-z0-9_]+)'", found[1])


def test_each_database_makes_the_roles_its_migration_grants(compose):
    stack = (REPO / "deploy" / "stack.sh").read_text()
    for name, migration in ROLE_MIGRATIONS.items():
        svc = services(compose)[name]
        assert f"{ROLES_SCRIPT}:/docker-entrypoint-initdb.d/roles.sh:ro" in svc["volumes"], name
        env = env_of(svc)
        groups = env["ROLE_GROUPS"].split()
        assert groups == migration_roles(migration), f"{name}: ROLE_GROUPS and {migration} differ"
        assert f'echo "{env["ROLE_GROUPS"]}"' in stack, f"deploy/stack.sh pg_groups: not {groups}"
        for login in ("PIPELINE_GROUPS", "REPAIR_GROUPS"):
            assert {g.strip() for g in env[login].split(",")} <= set(groups), f"{name}: {login}"
        assert {"pipeline_db_password", "repair_db_password"} <= set(secret_names(svc)), name


def test_the_pipeline_and_the_repairs_log_in_as_their_own_roles(compose):
    """Never as the databases' owner: the pipeline container does not even hold the owner's passwords."""
    for name, role, secret in (("pipeline", "f2_pipeline", "pipeline_db_password"),
                               ("repair", "f2_repairer", "repair_db_password")):  # fmt: skip
        svc = services(compose)[name]
        env = env_of(svc)
        assert env["F2_PARAMS_USER"] == env["F2_TIMESERIES_USER"] == role, name
        for database in ("PARAMS", "TIMESERIES"):
            assert env[f"F2_{database}_PASSWORD_FILE"] == f"/run/secrets/{secret}", name
        assert not {"params_db_password", "timeseries_db_password"} & set(secret_names(svc)), name
    assert env_of(services(compose)["pipeline"])["F2_DB_STRICT_PRIVILEGES"] == "1"
    script = (REPO / ROLES_SCRIPT).read_text()
    assert "ALTER ROLE f2_pipeline LOGIN PASSWORD %L', :'pipeline_pw'" in script
    assert "ALTER ROLE f2_repairer LOGIN PASSWORD %L', :'repair_pw'" in script
    assert "psql" in script and "-v ON_ERROR_STOP=1" in script
    assert os.access(REPO / ROLES_SCRIPT, os.X_OK), "the postgres image sources a script it cannot execute"

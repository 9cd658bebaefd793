"""The container stack as Compose sees it, without Docker: the files parsed, merged as `-f A -f B` merges them.

Shared by test_compose.py (both variants) and test_compose_secure.py. The
merge follows the Compose specification's rules
(https://docs.docker.com/reference/compose-file/merge/): mappings merge key
by key; `command`, `entrypoint` and `healthcheck.test` are replaced;
`volumes` are unique by target, `ports` by (ip, target, published,
protocol), `secrets` by source; other sequences are appended. Only what
our files use is modelled.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml  # PyYAML, a dev dependency

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SECURE_FILE = REPO / "docker-compose.secure.yml"
INIT_SECRETS = REPO / "deploy" / "compose" / "init-secrets.sh"

#: The variants users run: the files, in `-f` order.
VARIANTS: dict[str, tuple[Path, ...]] = {
    "plain": (COMPOSE_FILE,),
    "secure": (COMPOSE_FILE, SECURE_FILE),
}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load(path: Path) -> dict[str, Any]:
    """One compose file, parsed (anchors and `<<` merge keys resolved)."""
    with path.open() as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{path}: no services"
    return data


def model(variant: str) -> dict[str, Any]:
    """The application model of a variant: its files merged in order."""
    files = VARIANTS[variant]
    result = load(files[0])
    for path in files[1:]:
        result = merge(result, load(path))
    return result


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`docker compose -f base -f override`: the merged top level."""
    out = dict(base)
    for key, value in override.items():
        if key == "services":
            services = dict(base.get("services") or {})
            for name, svc in value.items():
                services[name] = merge_service(services[name], svc) if name in services else svc
            out[key] = services
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge_mapping(base[key], value)
        else:
            out[key] = value
    return out


def merge_service(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """One service of `override` merged over the same service of `base`."""
    out = dict(base)
    for key, value in override.items():
        old = base.get(key)
        if key in ("command", "entrypoint") or old is None:
            out[key] = value
        elif key == "environment":
            out[key] = {**_env_mapping(old), **_env_mapping(value)}
        elif key == "depends_on":
            out[key] = {**_depends_mapping(old), **_depends_mapping(value)}
        elif key == "healthcheck":
            out[key] = {**old, **value}  # `test` replaced with the rest
        elif key in _UNIQUE:
            out[key] = _merge_unique(old, value, _UNIQUE[key])
        elif isinstance(value, dict) and isinstance(old, dict):
            out[key] = _merge_mapping(old, value)
        elif isinstance(value, list) and isinstance(old, list):
            out[key] = old + value
        else:
            out[key] = value
    return out


def _merge_mapping(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        old = base.get(key)
        out[key] = _merge_mapping(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def _merge_unique(base: list[Any], override: list[Any], key: Any) -> list[Any]:
    out = list(base)
    for entry in override:
        same = [i for i, old in enumerate(out) if key(old) == key(entry)]
        if same:
            out[same[0]] = entry
        else:
            out.append(entry)
    return out


def _env_mapping(env: Any) -> dict[str, Any]:
    if isinstance(env, list):  # ["KEY=value", ...]
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env or {})


def _depends_mapping(deps: Any) -> dict[str, Any]:
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return dict(deps or {})


def volume_source(vol: Any) -> str:
    """A volume entry's source: a named volume, a path, or '' for an anonymous one."""
    if isinstance(vol, dict):
        return str(vol.get("source", ""))
    parts = str(vol).split(":")
    return parts[0] if len(parts) > 1 else ""


def volume_target(vol: Any) -> str:
    """A volume entry's mount point in the container."""
    if isinstance(vol, dict):
        return str(vol["target"])
    parts = str(vol).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def volume_read_only(vol: Any) -> bool:
    """True when the entry mounts read-only."""
    if isinstance(vol, dict):
        return bool(vol.get("read_only"))
    parts = str(vol).split(":")
    return len(parts) > 2 and "ro" in parts[2].split(",")


def _port_key(entry: Any) -> tuple[str, ...]:
    if isinstance(entry, dict):
        return (str(entry.get("host_ip", "")), str(entry["target"]), str(entry.get("published", "")),
                str(entry.get("protocol", "tcp")))  # fmt: skip
    spec, _, protocol = str(entry).partition("/")
    parts = spec.split(":")
    ip = parts[0] if len(parts) == 3 else ""
    published = parts[-2] if len(parts) >= 2 else ""
    return (ip, parts[-1], published, protocol or "tcp")


def _secret_key(entry: Any) -> str:
    return entry if isinstance(entry, str) else str(entry["source"])


_UNIQUE = {"volumes": volume_target, "ports": _port_key, "secrets": _secret_key}


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of a model."""
    return compose["services"]


def is_f2stream_service(svc: dict[str, Any]) -> bool:
    """Runs f2stream's own image."""
    return "build" in svc or str(svc.get("image", "")).startswith("f2stream:")


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings (unset values as '')."""
    return {str(k): "" if v is None else str(v) for k, v in _env_mapping(svc.get("environment")).items()}


def secret_names(svc: dict[str, Any]) -> list[str]:
    """The secrets a service mounts."""
    return [_secret_key(s) for s in svc.get("secrets") or []]


def published_ports(svc: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of a service's `ports:`."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.append((int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.split(":")
        if len(parts) == 1:
            out.append((int(parts[0]), int(parts[0])))
        else:
            out.append((int(parts[-2]), int(parts[-1])))
    return out


def faust_commands(cmd: Any) -> list[list[str]]:
    """The commands a service runs: its `command`, or each line of an `sh -ec` script.

    A script is how one one-shot service runs several f2stream commands (the
    secure variant's pki); its lines are split as the shell splits them.
    """
    if isinstance(cmd, list) and len(cmd) == 3 and cmd[:2] == ["sh", "-ec"]:
        lines = (line.strip() for line in cmd[2].splitlines())
        return [shlex.split(line) for line in lines if line and not line.startswith("#")]
    return [cmd]


def interpolate(text: str, values: dict[str, str] | None = None) -> str:
    """Compose's `${VAR:-default}`: from `values`, else the environment, else the default."""

    def repl(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2) or ""
        if values and var in values:
            return values[var]
        return os.environ.get(var) or default

    return _INTERPOLATION.sub(repl, text)


def resolve_secret_path(path: str, secrets_dir: Path | None) -> Path:
    """A secret's `file:` with ${F2STREAM_SECRETS_DIR:-default} applied, relative to the repository."""
    expanded = Path(interpolate(path, {"F2STREAM_SECRETS_DIR": str(secrets_dir)} if secrets_dir else None))
    return expanded if expanded.is_absolute() else REPO / expanded


def run_init_secrets(target: Path) -> subprocess.CompletedProcess[str]:
    """deploy/compose/init-secrets.sh into `target`."""
    return subprocess.run(
        ["sh", str(INIT_SECRETS), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

"""`pip install .` gives a whole package: the wheel and the sdist, each installed into a venv of its own making.

The editable venv that `make test` runs in sees the source tree and so
cannot miss a package; these installs cannot see it. The tracked files are
copied out and built there (wheel and sdist with `python -m build`, in its isolated build env), the
wheel is installed into a new venv with its dependencies (from PyPI or
pip's cache, as a user would), then replaced by the sdist's build
(`--force-reinstall`, which removes every file of the wheel first), and
each time `installed_check.py` runs in that venv with `python -I` from an
empty directory: every module of the source tree installed and importing,
every data file (migrations, py.typed) installed and every migration
loading, `--help` of every command of both apps. A package or data file
that setup.py's discovery misses fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.folders import installed_folders

REPO = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("installed_check.py")
APPS = ("f2stream", "f2stream.ingest")


def folders() -> dict[str, str]:
    """Installed package -> source folder, as setup.py maps them (tests/folders.py reads its FOLDERS)."""
    return installed_folders()


def source_tree() -> dict[str, list[str]]:
    """The modules (installed names) and data files (paths relative to site-packages) the source folders hold."""
    modules, data = [], []
    for package, folder in folders().items():
        for path in sorted((REPO / folder).rglob("*")):
            relative = path.relative_to(REPO / folder)
            if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
                continue
            if path.suffix == ".py":
                parts = [p for p in relative.with_suffix("").parts if p != "__init__"]
                modules.append(".".join([package, *parts]))
            else:
                data.append(str(Path(*package.split("."), relative)))
    return {"modules": modules, "data": data}


def run(command: list[str], cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The wheel and the sdist, built from a copy of the tracked files (what a clone holds)."""
    base = tmp_path_factory.mktemp("package")
    copy = base / "src"
    tracked = run(["git", "ls-files", "-z"], REPO).split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(base / "dist")], copy)
    (wheel,) = (base / "dist").glob("*.whl")
    (sdist,) = (base / "dist").glob("*.tar.gz")
    yield wheel, sdist
    shutil.rmtree(base, ignore_errors=True)


def check_installed(python: Path, where: Path) -> None:
    expected = json.dumps(source_tree())
    for app in APPS:
        result = subprocess.run(
            [str(python), "-I", str(CHECK), app], input=expected, cwd=where, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        problems = json.loads(result.stdout.strip().splitlines()[-1])
        assert not problems, "\n".join(problems)


def test_the_wheel_and_the_sdist_install_whole(built: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, sdist = built
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], empty)
    check_installed(bin_dir / "python", empty)
    assert "register-device" in run([str(bin_dir / "faust"), "-A", "f2stream", "--help"], empty)

    pip = [str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check"]
    run([*pip, "--force-reinstall", "--no-deps", str(sdist)], empty)
    check_installed(bin_dir / "python", empty)


def test_the_source_tree_is_seen_whole() -> None:
    """The expectation itself: every folder setup.py maps holds modules, and the migrations are among the data."""
    tree = source_tree()
    for package in folders():
        assert any(m == package or m.startswith(package + ".") for m in tree["modules"]), package
    assert any(path.endswith(".sql") for path in tree["data"])
    assert "f2stream/py.typed" in tree["data"]


def test_the_image_copies_every_folder_setup_py_maps() -> None:
    """The container image builds with `pip install .` from copied folders: one forgotten is a package missing."""
    copied = re.findall(r"^COPY (.+?) \S+$", (REPO / "deploy" / "docker" / "Dockerfile").read_text(), re.MULTILINE)
    sources = {source for line in copied for source in line.split()}
    for name in ("setup.py", "setup.cfg", "pyproject.toml", *folders().values()):
        assert name in sources, f"deploy/docker/Dockerfile does not COPY {name}"

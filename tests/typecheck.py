"""mypy over every package of f2stream under the name it is installed as: `make lint` runs it.

setup.py maps `agents/`, `tables/` and `pki/` to `f2stream.agents`,
`f2stream.tables` and `f2stream.pki`. mypy names a module after its folder,
so given the folders it would check `agents.decode` while the code imports
`f2stream.agents.decode` (and would see that import as missing). Here each
file is handed to mypy with its installed name; the options come from
pyproject.toml as usual.

    .venv/bin/python tests/typecheck.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `tests` is importable from the root

from tests.folders import installed_folders  # noqa: E402  # needs the line above


def sources() -> list[BuildSource]:
    """Every module of the project with its installed name."""
    found = []
    for package, folder in installed_folders().items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [part for part in path.relative_to(ROOT / folder).with_suffix("").parts if part != "__init__"]
            found.append(BuildSource(str(path.relative_to(ROOT)), ".".join([package, *parts])))
    return found


def main() -> int:
    """Type-check; print mypy's messages; return its exit status."""
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), "f2stream"])
    modules = sources()
    try:
        result = build.build(modules, options)
    except CompileError as exc:
        print("\n".join(exc.messages), file=sys.stderr)
        return 2
    for line in result.errors:
        print(line)
    if result.errors:
        print(f"typecheck: {len(result.errors)} errors in {len(modules)} modules", file=sys.stderr)
        return 1
    print(f"typecheck: no issues in {len(modules)} modules")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run by test_package.py with an installed f2stream's interpreter (`python -I`), outside the source tree.

Given what the source tree holds (its modules and data files, as JSON on
stdin) and one app name, it checks the installed package against it and
prints one line per problem:

- every module of the source tree is installed, and every installed module
  (walked with pkgutil, not listed) imports;
- every data file of the source tree is installed, and each database's
  migrations load through `load_migrations`, as `faust -A f2stream migrate`
  reads them;
- `faust -A APP --help` and `--help` of every command and subcommand the
  app has (walked through click) exit 0.

Nothing here imports from the source tree: `-I` keeps the working
directory and PYTHONPATH off sys.path, and f2stream must come from the
interpreter's own prefix.
"""

import contextlib
import importlib
import io
import json
import pkgutil
import sys
from pathlib import Path


def problems_of_modules(expected: list[str]) -> list[str]:
    import f2stream

    found: list[str] = []
    home = Path(f2stream.__file__).resolve().parent
    if not home.is_relative_to(Path(sys.prefix).resolve()):
        return [f"f2stream imported from {home}, not from the installed prefix {sys.prefix}"]
    failed: list[str] = []
    installed = {"f2stream"} | {
        m.name for m in pkgutil.walk_packages(f2stream.__path__, "f2stream.", onerror=failed.append)
    }
    found += [f"package {name} failed to import while walking" for name in failed]
    found += [f"module {name} is in the source tree but not installed" for name in sorted(set(expected) - installed)]
    for name in sorted(installed):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (every failure is a finding, reported and not raised)
            found.append(f"module {name} does not import: {type(exc).__name__}: {exc}")
    return found


def problems_of_data(expected: list[str]) -> list[str]:
    import f2stream
    from f2stream.storage.migrate import load_migrations

    site = Path(f2stream.__file__).resolve().parent.parent
    missing = [path for path in expected if not (site / path).is_file()]
    found = [f"data file {path} is in the source tree but not installed" for path in missing]
    for database in ("params", "timeseries"):
        shipped = {m.version for m in load_migrations(database)}  # type: ignore[arg-type]
        wanted = {int(Path(p).name.split("_", 1)[0]) for p in expected if f"/migrations/{database}/" in p}
        if wanted - shipped:
            found.append(f"migrations of {database} not loaded from the installed package: {sorted(wanted - shipped)}")
    return found


def problems_of_commands(app: str) -> list[str]:
    import click
    from faust.cli.faust import cli

    sys.argv[:] = ["faust", "-A", app, "--help"]  # faust finds the app in sys.argv, as the console script does
    found: list[str] = []

    def run(path: list[str]) -> None:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = cli.main(["-A", app, *path, "--help"], prog_name="faust", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # noqa: BLE001 (every failure is a finding)
            code = f"{type(exc).__name__}: {exc}"
        if code not in (0, None) or "Usage:" not in out.getvalue():
            found.append(f"faust -A {app} {' '.join(path)} --help: exit {code}: {out.getvalue()[-500:]}")

    def walk(group: click.Group, ctx: click.Context, path: list[str]) -> None:
        run(path)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                walk(command, click.Context(command, parent=ctx, info_name=name), [*path, name])
            elif command is not None:
                run([*path, name])

    walk(cli, click.Context(cli, info_name="faust"), [])
    return found


def main() -> int:
    expected = json.load(sys.stdin)
    app = sys.argv[1]
    found = problems_of_modules(expected["modules"]) + problems_of_data(expected["data"])
    if not found:
        found = problems_of_commands(app)
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

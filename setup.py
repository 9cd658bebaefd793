"""Package discovery: every package under each source folder, installed under its `f2stream.` name.

`agents/`, `tables/`, `pki/` and `migrations/` install as `f2stream.agents`, ...
(generic top-level names would collide in site-packages). setuptools' `find:`
sees one folder tree at a time, so each folder is searched on its own and
its packages are renamed; nothing is listed by hand, so a new subpackage
cannot be left out. The rest of the metadata is in setup.cfg.
"""

from setuptools import find_packages, setup

#: Installed package -> source folder.
FOLDERS = {
    "f2stream": "f2stream",
    "f2stream.agents": "agents",
    "f2stream.tables": "tables",
    "f2stream.pki": "pki",
    "f2stream.migrations": "migrations",
}


def packages() -> list[str]:
    """Every package each folder holds, under its installed name."""
    return [
        name
        for package, folder in FOLDERS.items()
        for name in (package, *(f"{package}.{sub}" for sub in find_packages(folder)))
    ]


setup(packages=packages(), package_dir=FOLDERS)

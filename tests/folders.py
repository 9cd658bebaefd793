"""The source folders and the packages they install as: setup.py's FOLDERS, read from it, never repeated.

The layout test, the type check and the package test each walk the source
tree under its installed names; a folder added to setup.py reaches all
three from here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def installed_folders() -> dict[str, str]:
    """Installed package -> source folder, as setup.py's FOLDERS maps them."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "FOLDERS" for t in targets):
                assert node.value is not None
                return dict(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no FOLDERS mapping")

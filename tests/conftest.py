"""Shared by every test: the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout the tests run from."""
    return ROOT


#: `make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup --no-loadscope-reorder`),
#: each with its own private stack: the fault scenarios (and then the three-broker stack's) on one, every
#: other test of the stack on the other; the secure stack's tests go to the first to come free, and both
#: take the other tests, a module at a time, as they come free.
#: A group runs in order on one worker, so its tests share that worker's session stack and workers (or
#: their module's fixtures: test_observability's private stack is started once, not once per worker).
GROUP_ORDER = ("faults", "stack", "secure")


def xdist_group(item: pytest.Item) -> str:
    """The group of a test: the stack it needs, or else its module (whose module fixtures it may share)."""
    fixtures = getattr(item, "fixturenames", ())
    if "cluster_stack" in fixtures or ("stack" in fixtures and item.path.name == "test_faults.py"):
        return "faults"
    if "stack" in fixtures:
        return "stack"
    if "secure_stack" in fixtures:
        return "secure"
    return str(item.path.relative_to(item.config.rootpath))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the marks into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test's group, and order the stacks' groups first: a worker starts its group at once, not last."""
    groups = {item: xdist_group(item) for item in items}
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: GROUP_ORDER.index(g) if (g := groups[item]) in GROUP_ORDER else len(GROUP_ORDER))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under `--dist loadgroup`, refuse to run if the groups did not reach the test ids xdist schedules by."""
    if getattr(session.config.option, "loadgroup", False) and any("@" not in i.nodeid for i in session.items):
        raise pytest.UsageError(
            "pytest-xdist's loadgroup did not take the groups of tests/conftest.py (pytest 9 ids cannot be "
            "suffixed by pytest-xdist 3.8): tests that share a stack would run on both workers; pin pytest<9"
        )

"""The package layout's rules that import-linter cannot see (docs/development.md).

import-linter (``lint-imports``, in CI) checks the layers and cycles between modules; these
check what a newcomer relies on besides: where code lives, where settings are read, how
tasks are named.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from worker.core import names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = sorted([*(ROOT / "worker").rglob("*.py"), *(ROOT / "tasks").rglob("*.py"), ROOT / "celeryconfig.py"])
PROJECT = ("worker", "tasks", "celeryconfig", "tests")

#: Imports of the project inside a function body, each with the reason it is not at the top.
#: An import hidden in a function to dodge an import cycle is never one of them.
LAZY_PROJECT_IMPORTS = {
    # Only the configured backend's client library is loaded (influxdb-client costs 0.4 s).
    ("worker/store/__init__.py", "worker.store.influx.store"),
    ("worker/store/__init__.py", "worker.store.postgres.store"),
    # Only the chosen command is loaded: all of them cost about 2 s, and `aggregator --help`
    # and the health checks need none (cli.run_command names each one).
    ("worker/ops/cli.py", "worker.ops.commands"),
    # The local stack is development machinery, found in a checkout only: the product's one
    # import of the tests, never at import time (an installed package has no tests/).
    ("worker/ops/commands/dev.py", "tests.support.devstack.run"),
}
#: Where the process's settings are read: the entry points (the composition roots).
READS_SETTINGS = {"worker/ops/cli.py", "worker/celeryapp/app.py", "worker/celeryapp/resources.py",
                  "worker/celeryapp/metrics.py",  # the worker's signal handlers (worker_init)
                  "worker/celeryapp/liveness.py",  # celeryd_init: the worker's own unacked keys
                  "celeryconfig.py", "worker/config/settings.py"}


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_of(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names]


def test_the_root_of_worker_holds_only_packages_and_the_app_shim() -> None:
    loose = sorted(p.name for p in (ROOT / "worker").iterdir() if p.is_file() and p.suffix == ".py")
    assert loose == ["__init__.py", "app.py"]
    shim = (ROOT / "worker" / "app.py").read_text()
    assert len(shim.splitlines()) < 15 and "from worker.celeryapp.app import app" in shim


def test_no_project_import_hides_in_a_function_body() -> None:
    hidden = set()
    for path in PRODUCT:
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    hidden |= {(_relative(path), module) for module in _module_of(node)
                               if module.split(".")[0] in PROJECT}
    assert hidden == LAZY_PROJECT_IMPORTS


def test_only_the_entry_points_read_the_settings() -> None:
    readers = {_relative(path) for path in PRODUCT for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
               == "get_settings"}
    assert readers <= READS_SETTINGS, readers - READS_SETTINGS


def test_no_module_keeps_a_connection_at_import() -> None:
    """Connections belong to objects built from settings, never to a module (they would be
    shared across Celery's fork and outlive the settings that made them)."""
    builders = re.compile(r"^\w+\s*(:[^=]+)?=\s*(ReusedConnection|connect|redis\.Redis|Producer|Consumer|"
                          r"InfluxDBClient|PostgresStore|PostgresRunState)\(", re.M)
    found = {_relative(path) for path in PRODUCT if builders.search(path.read_text())}
    assert found == set()


def test_task_names_are_spelled_once() -> None:
    """Every task name is worker.core.names's: no other product file spells one."""
    declared = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
                and value.startswith("tasks.")}
    spelled = {(_relative(path), match) for path in PRODUCT if path.name != "names.py"
               for match in re.findall(r"[\"'](tasks\.[a-z_]+\.[a-z_]+)[\"']", path.read_text())}
    assert spelled == set()
    assert declared  # the names exist


def test_every_named_task_is_registered_under_its_name() -> None:
    from worker.celeryapp.app import app

    app.loader.import_default_modules()
    declared = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
                and value.startswith("tasks.")}
    registered = {name for name in app.tasks if name.startswith("tasks.")}
    assert declared == registered

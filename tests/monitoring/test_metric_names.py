"""Every product series the alert rules and the Grafana dashboard query is one the product
exports, and the shipped Prometheus configuration is valid (`promtool check config`).

A renamed metric would otherwise leave a panel empty and an alert silent for ever (an
absent series never fires `== 1` or `> 600`). The exported names are read from the source:
the prometheus-client objects (``Counter("aggregator_…")``) and the collectors' families,
which are built from a module's ``PREFIX`` (``f"{PREFIX}_…"``, and the bridge's
``counter("…")``/``gauge("…")`` and the exporter's ``_gauge("…")`` helpers).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
_OBJECT = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"(aggregator_[a-z0-9_]+)\"")
_PREFIX = re.compile(r"^PREFIX = \"([a-z0-9_]+)\"", re.M)
_FAMILY = re.compile(r"f\"\{PREFIX\}_([a-z0-9_]+)\"")
_HELPER = re.compile(r"\b_?(?:counter|gauge)\(\s*\"([a-z0-9_]+)\"")


def exported_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "worker").rglob("*.py"):
        text = path.read_text()
        names.update(_OBJECT.findall(text))
        prefix = _PREFIX.search(text)
        if prefix:
            names.update(f"{prefix.group(1)}_{name}" for name in _FAMILY.findall(text) + _HELPER.findall(text))
    return names


def queried_names(exprs: list[str]) -> set[str]:
    """The product's series in PromQL expressions, without the sample suffixes."""
    found = set()
    for expr in exprs:
        for name in re.findall(r"\baggregator_[a-z0-9_]+", expr):
            found.add(next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name))
    return found


def unknown(exprs: list[str]) -> set[str]:
    return queried_names(exprs) - exported_names()


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "aggregator.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_source_scan_finds_each_kind_of_metric() -> None:
    names = exported_names()
    # One of each: a prometheus-client object, an exporter family, a bridge helper family.
    assert {"aggregator_ingest_batches", "aggregator_queue_depth", "aggregator_bridge_consumed"} <= names


def test_every_series_an_alert_or_a_panel_queries_is_exported() -> None:
    assert unknown(alert_exprs()) == set()
    assert unknown(dashboard_exprs()) == set()
    assert len(queried_names(alert_exprs() + dashboard_exprs())) >= 15


def test_a_misspelt_series_is_caught() -> None:
    assert unknown(["max(aggregator_bridge_dlq_guard_trippd) == 1"]) == {"aggregator_bridge_dlq_guard_trippd"}


def test_the_shipped_prometheus_configuration_is_valid() -> None:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: run scripts/system-packages.sh (Debian package prometheus)"
    checked = subprocess.run([binary, "check", "config", "prometheus.yml"], cwd=MONITORING / "prometheus",
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

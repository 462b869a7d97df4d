"""The alert rules are valid and do what their tests say, with the real `promtool`
(Debian's prometheus package; scripts/system-packages.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

RULES_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: run scripts/system-packages.sh (Debian package prometheus)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing() -> None:
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert alerts == firing


def test_a_wrong_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    """The rule tests can fail: a store-outage bound of an hour no longer fires at 700 s."""
    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path)
    text = (RULES_DIR / "alerts.yml").read_text()
    assert "max(aggregator_ingest_outage_seconds) > 600" in text
    (tmp_path / "alerts.yml").write_text(text.replace("max(aggregator_ingest_outage_seconds) > 600",
                                                      "max(aggregator_ingest_outage_seconds) > 3600"))
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "StoreOutage" in tested.stdout + tested.stderr

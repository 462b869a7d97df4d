"""The alert rules are valid and do what their tests say, with the real `promtool`
(Debian's prometheus package; scripts/system-packages.sh installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "monitoring" / "prometheus"
#: Always firing by design (the dead-man's switch): it has no quiet case.
ALWAYS_FIRING = {"Watchdog"}


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


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = {rule["alert"] for rule in rules()}
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == alerts
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == alerts - ALWAYS_FIRING


def test_every_page_waits_and_every_rule_has_its_runbook() -> None:
    """A `for:` on every rule but the dead-man's switch (one bad scrape never pages), and a
    runbook_url naming a section of docs/operating.md that exists (GitHub's heading anchors)."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "operating.md").read_text(), re.M)
    anchors = {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}
    for rule in rules():
        assert "for" in rule or rule["alert"] in ALWAYS_FIRING, f"{rule['alert']} has no for:"
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert (path, anchor in anchors) == ("docs/operating.md", True), rule["alert"]


def test_a_wrong_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    """The rule tests can fail: a store-outage bound of an hour no longer fires at 700 s."""
    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path)
    text = (RULES_DIR / "alerts.yml").read_text()
    assert "max(aggregator_ingest_outage_seconds) > 600" in text
    (tmp_path / "alerts.yml").write_text(text.replace("max(aggregator_ingest_outage_seconds) > 600",
                                                      "max(aggregator_ingest_outage_seconds) > 3600"))
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "StoreOutage" in tested.stdout + tested.stderr

"""Alertmanager's configuration as compose builds it (monitoring/alertmanager/receivers.sh
over alertmanager.yml), checked by the real `amtool` and run by the real Alertmanager
(Debian's prometheus-alertmanager; scripts/system-packages.sh installs it): the receivers come
from the environment and secret files, the Watchdog goes to the heartbeat and the pages to
the operators, a store outage silences the trend staleness it causes, and `aggregator health
alerts` warns while a receiver delivers nowhere."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.support.devstack.services import free_port
from tests.support.helpers import AGGREGATOR, wait_for

ALERTMANAGER = Path(__file__).resolve().parents[2] / "monitoring" / "alertmanager"


def tool(name: str) -> str:
    binary = shutil.which(name)
    assert binary, f"{name} not found: run scripts/system-packages.sh (Debian package prometheus-alertmanager)"
    return binary


def build(tmp_path: Path, secrets: dict[str, str], **environ: str) -> subprocess.CompletedProcess[str]:
    """receivers.sh with these secret files (as compose hands them over: <NAME>_FILE) and
    variables; its output is in tmp_path/config.yml."""
    directory = tmp_path / "secrets"
    directory.mkdir(exist_ok=True)
    files = {}
    for name, value in secrets.items():
        (directory / name).write_text(value)
        files[f"{name.upper()}_FILE"] = str(directory / name)
    done = subprocess.run(["sh", str(ALERTMANAGER / "receivers.sh"), str(ALERTMANAGER / "alertmanager.yml")],
                          env={"PATH": os.environ["PATH"], **files, **environ},
                          capture_output=True, text=True, timeout=30)
    (tmp_path / "config.yml").write_text(done.stdout)
    return done


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=30)


EMAIL = {"ALERT_EMAIL_TO": "ops@example.org", "ALERT_EMAIL_FROM": "alertmanager@example.org",
         "ALERT_SMTP_SMARTHOST": "smtp.example.org:587"}


@pytest.mark.unit
@pytest.mark.parametrize(("secrets", "environ", "integrations"), [
    ({}, {}, {"operators": [], "heartbeat": []}),
    ({"alert_webhook_url": "https://hooks.example.org/T0?k=1\n"}, {}, {"operators": ["webhook"], "heartbeat": []}),
    ({"alert_smtp_password": "pw\n", "alert_heartbeat_url": "https://hc.example.org/ping/1\n"},
     {**EMAIL, "ALERT_SMTP_USERNAME": "alertmanager"}, {"operators": ["email"], "heartbeat": ["webhook"]}),
    ({"alert_webhook_url": "", "alert_heartbeat_url": ""}, EMAIL, {"operators": ["email"], "heartbeat": []}),
], ids=["none", "webhook", "email-with-login-and-heartbeat", "email-empty-files"])
def test_receivers_from_the_environment_are_a_valid_configuration(
        tmp_path: Path, secrets: dict[str, str], environ: dict[str, str], integrations: dict[str, list[str]]) -> None:
    built = build(tmp_path, secrets, **environ)
    assert built.returncode == 0, built.stderr
    config = str(tmp_path / "config.yml")
    checked = amtool("check-config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {receiver["name"]: [key.removesuffix("_configs") for key in receiver if key.endswith("_configs")]
            for receiver in yaml.safe_load(built.stdout)["receivers"]} == integrations
    routed = {labels: amtool("config", "routes", "test", f"--config.file={config}", *labels.split()).stdout.strip()
              for labels in ("alertname=Watchdog severity=heartbeat", "alertname=TrendStale severity=page",
                             "alertname=MorningPostMissed severity=ticket")}
    assert list(routed.values()) == ["heartbeat", "operators", "operators"]
    if "ALERT_SMTP_USERNAME" in environ:  # the password stays in its file
        assert "pw" not in built.stdout.replace("alertmanager@", "")
        assert f"auth_password_file: \"{tmp_path}/secrets/alert_smtp_password\"" in built.stdout


@pytest.mark.unit
def test_a_value_that_would_break_the_yaml_is_refused(tmp_path: Path) -> None:
    built = build(tmp_path, {}, ALERT_EMAIL_TO='ops@example.org", to: "evil@example.org')
    assert built.returncode == 78 and "ALERT_EMAIL_TO" in built.stderr


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: every notification's (path, alert names) in ``received``."""

    received: ClassVar[list[tuple[str, list[str]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, [alert["labels"]["alertname"] for alert in body["alerts"]]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[tuple[str, list[str]]]]]:
    received: list[tuple[str, list[str]]] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Hook,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def health_alerts(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGGREGATOR, "health", "alerts"], env={**os.environ, "ALERTMANAGER_URL": url},
                          capture_output=True, text=True, timeout=30)


def start_alertmanager(spawn: Any, tmp_path: Path) -> str:
    """The real Alertmanager on tmp_path/config.yml, group_wait shortened to a second."""
    config = tmp_path / "config.yml"
    config.write_text(config.read_text().replace("group_wait: 30s", "group_wait: 1s"))
    port = free_port()
    spawn([tool("prometheus-alertmanager"), f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], dict(os.environ), "alertmanager")
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    wait_for(ready, 30, "Alertmanager ready")
    return url


@pytest.mark.e2e
def test_health_warns_while_a_receiver_delivers_nowhere(spawn: Any, tmp_path: Path) -> None:
    assert build(tmp_path, {"alert_webhook_url": "http://127.0.0.1:9/hook"}).returncode == 0
    url = start_alertmanager(spawn, tmp_path)
    done = health_alerts(url)
    assert done.returncode == 0, done.stdout + done.stderr  # a warning never fails a healthcheck
    assert done.stdout.startswith("warn receivers  receiver(s) heartbeat deliver nowhere"), done.stdout
    for unheard in ("", f"http://127.0.0.1:{free_port()}"):  # not set; set, nothing answers
        done = health_alerts(unheard)
        assert done.returncode == 0 and done.stdout.startswith("warn receivers"), done.stdout


@pytest.mark.e2e
def test_watchdog_reaches_the_heartbeat_and_a_store_outage_silences_trend_staleness(
        spawn: Any, tmp_path: Path, hook: tuple[str, list[tuple[str, list[str]]]]) -> None:
    base, received = hook
    assert build(tmp_path, {"alert_webhook_url": f"{base}/operators",
                            "alert_heartbeat_url": f"{base}/heartbeat"}).returncode == 0
    url = start_alertmanager(spawn, tmp_path)
    done = health_alerts(url)
    assert done.returncode == 0 and done.stdout.startswith("ok   receivers  operators: webhook; heartbeat: webhook"), \
        done.stdout
    alerts = [{"labels": {"alertname": "Watchdog", "severity": "heartbeat"}},
              {"labels": {"alertname": "StoreOutage", "severity": "page"}},
              {"labels": {"alertname": "TrendStale", "severity": "page", "duration": "today"}}]
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()
    wait_for(lambda: {path for path, _ in received} == {"/heartbeat", "/operators"}, 30, "both receivers notified")
    assert sorted(received) == [("/heartbeat", ["Watchdog"]), ("/operators", ["StoreOutage"])]
    with urllib.request.urlopen(f"{url}/api/v2/alerts?filter=alertname%3D%22TrendStale%22", timeout=5) as response:
        [stale] = json.loads(response.read())
    assert stale["status"]["state"] == "suppressed" and stale["status"]["inhibitedBy"], stale["status"]

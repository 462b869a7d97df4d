"""The settings' reference, written from their descriptions in worker/config/settings.py: the
product's block of .env.example and the settings table of docs/deploying.md.

    python -m tests.support.settings_reference    # after adding or changing a setting

tests/config/test_reference.py fails while either file differs from what this writes.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from worker.config.settings import Settings, secret_fields

ROOT = Path(__file__).resolve().parents[2]

#: What compose's .env sets instead of the code's default: its service names, store and metrics.
COMPOSE_VALUES = {"REDIS_URL": "redis://aggregator@redis:6379/0", "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
                  "EVENT_STORE": "influxdb", "INFLUXDB_V2_URL": "http://influxdb:8086", "BRIDGE_METRICS_PORT": "9108",
                  "WORKER_METRICS_PORT": "9110", "PROMETHEUS_MULTIPROC_DIR": "/tmp/aggregator-metrics",
                  "ALERTMANAGER_URL": "http://alertmanager:9093"}
#: Settings compose's .env leaves out, and where compose takes them from instead.
ELSEWHERE = {
    "POSTGRES_DSN": "docker-compose.yml composes it from POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER and POSTGRES_DB "
                    "(below), without a password.",
    "POSTGRES_PASSWORD": "The secret postgres_password.",
    "REDIS_PASSWORD": "The secret redis_password.",
    "KAFKA_SASL_PASSWORD": "The secret kafka_sasl_password.",
    "INFLUXDB_V2_TOKEN": "The secret influxdb_token.",
    "INFLUXDB_V2_ORG": "INFLUXDB_ORG (below).",
    **{name: f"The secret {name.lower()}." for name in ("X_CONSUMER_KEY", "X_CONSUMER_SECRET", "X_ACCESS_TOKEN",
                                                        "X_ACCESS_TOKEN_SECRET")},
    "X_API_BASE_URL": "Tests only.",
}
_BY = "Written by `python -m tests.support.settings_reference` from worker/config/settings.py"
GENERATED = {  # file: (first line, last line) of the part written here
    ROOT / ".env.example": (f"# >>> {_BY}", "# <<< End of the written part."),
    ROOT / "docs" / "deploying.md": (f"<!-- {_BY}. -->", "<!-- End of the written part. -->"),
}


def _groups() -> list[tuple[str, str, dict[str, FieldInfo]]]:
    """(title, docstring, fields) of each concern, in the settings' order (Settings lists them last first)."""
    return [(group.__name__.removesuffix("Settings"), " ".join((group.__doc__ or "").split()), group.model_fields)
            for group in reversed(Settings.__bases__)
            if issubclass(group, BaseModel) and group.__module__ == Settings.__module__]


def _default(field: FieldInfo) -> str:
    value = field.default
    return "" if value is None else value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def env_example() -> str:
    lines: list[str] = []
    for title, doc, fields in _groups():
        lines += [f"# --- {title} ".ljust(100, "-"), *_comment(doc), ""]
        for name, field in fields.items():
            key, text = name.upper(), field.description or ""
            if key in ELSEWHERE:
                lines += _comment(f"{key}: {text} {ELSEWHERE[key]}")
                continue
            value = COMPOSE_VALUES.get(key, _default(field))
            if key in COMPOSE_VALUES:
                text += f" Code default: {_default(field) or 'not set'}."
            quoted = value if re.fullmatch(r"[\w./:@,-]*", value) else f'"{value}"'
            lines += [*_comment(text), f"{key}={quoted}"]
        lines.append("")
    return "\n".join(lines).rstrip()


def settings_table() -> str:
    lines = []
    for title, doc, fields in _groups():
        lines += [f"#### {title}", "", doc, "", "| variable | default | |", "|---|---|---|"]
        for name, field in fields.items():
            text = (field.description or "").replace("|", "\\|")
            if name in secret_fields(Settings):
                text += f" A secret: or `{name.upper()}_FILE`."
            default = f"`{_default(field)}`" if _default(field) else "not set"
            lines.append(f"| `{name.upper()}` | {default} | {text} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def written(path: Path) -> str:
    """The file as it should be: its written part from the settings, the rest as it is."""
    text = path.read_text()
    begin, end = GENERATED[path]
    head, _, rest = text.partition(begin + "\n")
    assert end in rest, f"{path.name}: the markers of the written part are missing"
    tail = rest.partition(end)[2]
    body = env_example() if path.suffix != ".md" else settings_table()
    return f"{head}{begin}\n{body}\n{end}{tail}"


if __name__ == "__main__":
    for target in GENERATED:
        target.write_text(written(target))

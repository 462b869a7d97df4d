"""Logging for every process: key=value (default) or JSON lines (LOG_FORMAT), every ``extra``
field on the line, so one grep finds a run's story across bridge, workers and beat."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _fields(formatter: logging.Formatter, record: logging.LogRecord, ts: str) -> dict[str, object]:
    """The line's fields: time, level, logger, message, every ``extra``, the traceback if any."""
    fields: dict[str, object] = {"ts": ts, "level": record.levelname.lower(), "logger": record.name,
                                 "msg": record.getMessage()}
    fields.update((k, v) for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_"))
    if record.exc_info:
        fields["exc"] = formatter.formatException(record.exc_info)
    return fields


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="\n')) else text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return " ".join(f"{k}={_quote(v)}" for k, v in _fields(self, record, ts).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat()
        return json.dumps(_fields(self, record, ts), default=str)


def make_formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else KeyValueFormatter()


def setup_logging(level: str = "INFO", fmt: str = "kv") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "urllib3", "yoyo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

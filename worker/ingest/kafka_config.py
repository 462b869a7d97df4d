"""What every Kafka client of the product shares: timeouts and librdkafka's logging.

librdkafka repeats its log lines (230 "Connect to … failed" lines for one failed `dlq
list`), so every client logs to the ``kafka`` logger through a :class:`RepeatFilter`. Its
socket timeouts follow ``CONNECT_TIMEOUT_S``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

#: The logger every librdkafka client writes to (``logging.getLogger("kafka")``).
KAFKA_LOGGER = "kafka"

_VARYING = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Pass the first of identical messages (numbers aside: "after 0ms", "after 3ms"), suppress
    repeats for ``window_s``; the next one after it passes with ``repeated=N`` (how many were
    suppressed), so a persisting fault stays visible without flooding the log."""

    def __init__(self, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()  # librdkafka may call the logger from its own threads

    def filter(self, record: logging.LogRecord) -> bool:
        key = _VARYING.sub("#", record.getMessage())
        now = self._clock()
        with self._lock:
            first, suppressed = self._seen.get(key, (None, 0))
            if first is not None and now - first < self.window_s:
                self._seen[key] = (first, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # bounded memory whatever the broker says
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        if suppressed:
            record.repeated = suppressed
        return True


#: Where the brokers are: a bootstrap list (tests, tools), or librdkafka's keys that reach them,
#: security included (``Settings.kafka_connection()``: what every product client is given).
Brokers = str | Mapping[str, str]

#: ``CONNECT_TIMEOUT_S``'s default, for clients built without settings (tests, tools).
DEFAULT_TIMEOUT_S = 10.0


def position(message: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message; only error events lack them."""
    partition, offset = message.partition(), message.offset()
    if partition is None or offset is None:
        raise ValueError(f"a Kafka message without a position: {message.error()}")
    return partition, offset


def client_config(bootstrap: Brokers, extra: Mapping[str, Any] | None = None, *,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Config of a librdkafka client (consumer, producer, admin) plus ``extra``; ``timeout_s``
    bounds connecting and each request. Installs the repeat filter once per process."""
    logger = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
    timeout_ms = max(10, int(timeout_s * 1000))
    config: dict[str, Any] = {
        **({"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else bootstrap),
        "logger": logger,
        # A connection the broker closes when idle is normal, not a line in the log.
        "log.connection.close": False,
        "socket.timeout.ms": max(timeout_ms, 1000),
        "socket.connection.setup.timeout.ms": max(timeout_ms, 1000),
    }
    config.update(extra or {})
    return config


def group_lag(bootstrap: Brokers, topic: str, group: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Records of ``topic`` the consumer ``group`` has not committed: for the bridge's group,
    events not yet stored; for the dead-letter replay cursor, letters pending replay. The
    committed offsets are read with an OffsetFetch, which does not join the group."""
    consumer = Consumer(client_config(bootstrap, {"group.id": group, "enable.auto.commit": False},
                                      timeout_s=timeout_s))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        lag = 0
        for committed in consumer.committed([TopicPartition(topic, p) for p in metadata.partitions],
                                            timeout=timeout_s):
            low, high = consumer.get_watermark_offsets(committed, timeout=timeout_s)
            lag += max(0, high - (committed.offset if committed.offset >= 0 else low))
        return lag
    finally:
        consumer.close()

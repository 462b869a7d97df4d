"""Dead letters: a Kafka topic holding what could not be stored, with the reason; a topic, not
a table, as it must be writable exactly when the store is down (docs/operating.md, "Dead letters").
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in its __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from worker.ingest.errors import DeadLetterError
from worker.ingest.kafka_config import DEFAULT_TIMEOUT_S, Brokers, client_config, position
from worker.ingest.triage import Position

log = logging.getLogger(__name__)


class DeadLetter(msgspec.Struct, omit_defaults=True):
    kind: Literal["event", "batch"]
    reason: str
    source: str  # "bridge", "ingest" or "replay"
    failed_at: str
    payload_text: str | None = None  # the raw event, when it is UTF-8
    payload_b64: str | None = None  # the raw event otherwise
    points: list[list[object]] | None = None  # a batch of validated points (kind "batch")
    origin: str | None = None  # "topic/partition@offset" of the raw event
    attempt: int = 1

    def raw(self) -> bytes:
        if self.payload_text is not None:
            return self.payload_text.encode()
        if self.payload_b64 is not None:
            return base64.b64decode(self.payload_b64)
        return b""

    def batch(self) -> object:
        """A batch letter's points, or the text of what came instead of them."""
        return self.points if self.points is not None else self.payload_text or ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def decode(raw: bytes) -> DeadLetter | None:
    """The letter in a record of the topic; None when the record is not one."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def event_letter(raw: bytes, reason: str, *, source: str, origin: str | None, attempt: int = 1) -> DeadLetter:
    letter = DeadLetter("event", reason, source, now_iso(), origin=origin, attempt=attempt)
    try:
        letter.payload_text = raw.decode()
    except UnicodeDecodeError:
        letter.payload_b64 = base64.b64encode(raw).decode()
    return letter


def batch_letter(points: object, reason: str, *, source: str, attempt: int = 1) -> DeadLetter:
    """A batch letter; points that are not a list of lists (a hand-made or corrupted task
    argument) are kept as text, so the letter stays readable and says what came."""
    if isinstance(points, list) and all(isinstance(point, list) for point in points):
        return DeadLetter("batch", reason, source, now_iso(), points=points, attempt=attempt)
    text = points if isinstance(points, str) else _encoder.encode(points).decode()
    return DeadLetter("batch", reason, source, now_iso(), payload_text=text, attempt=attempt)


def ensure_topic(bootstrap: Brokers, topic: str, partitions: int = 1, *, replication: int | None = None,
                 config: Mapping[str, str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Create the topic if need be and give it ``config`` either way; KafkaException when Kafka
    is silent. ``replication`` None: 3 copies, fewer on a smaller cluster (Kafka refuses more)."""
    settings = client_config(bootstrap, timeout_s=timeout_s)
    timeout = settings["socket.timeout.ms"] / 1000
    admin = AdminClient(settings)
    metadata = admin.list_topics(timeout=timeout)
    if topic in metadata.topics:
        if config:
            entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                       for name, value in config.items()]
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
            admin.incremental_alter_configs([resource])[resource].result(timeout=max(15.0, timeout))
        return
    factor = replication or min(3, len(metadata.brokers))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=factor,
                                            config=dict(config or {}))])
    for future in futures.values():
        try:
            future.result(timeout=max(15.0, timeout))
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class DeadLetterWriter:
    """Confirmed writes to the dead-letter topic."""

    def __init__(self, bootstrap: Brokers, topic: str, timeout_s: float = 30.0, *,
                 connect_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer(client_config(bootstrap, {
            "acks": "all", "enable.idempotence": True, "message.timeout.ms": int(timeout_s * 1000), "linger.ms": 5,
        }, timeout_s=connect_timeout_s))

    def write(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        for letter in letters:
            self._producer.produce(self.topic, _encoder.encode(letter), on_delivery=on_delivery)
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            raise DeadLetterError(f"dead-letter write to {self.topic!r} not confirmed: "
                                  f"{remaining} undelivered, errors={errors[:3]}")
        log.warning("dead-lettered", extra={"count": len(letters), "topic": self.topic,
                                            "reason": letters[0].reason[:200]})

    def close(self) -> None:
        self._producer.flush(self.timeout_s)


def replay_group(group_id: str) -> str:
    return f"{group_id}.dlq-replay"


class DeadLetterReader:
    """Reads the dead-letter topic from the replay cursor (or the beginning) to its end."""

    def __init__(self, bootstrap: Brokers, topic: str, group_id: str, *,
                 connect_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.topic = topic
        config = client_config(bootstrap, {"group.id": replay_group(group_id), "enable.auto.commit": False,
                                           "auto.offset.reset": "earliest"}, timeout_s=connect_timeout_s)
        self._timeout_s = config["socket.timeout.ms"] / 1000
        self._consumer = Consumer(config)

    def _partitions(self) -> list[TopicPartition]:
        metadata = self._consumer.list_topics(self.topic, timeout=self._timeout_s).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            return []
        return [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]

    def cursor(self) -> dict[int, int]:
        """The replay cursor: per partition, the next offset a replay reads (never below the first kept)."""
        cursor: dict[int, int] = {}
        for tp in self._consumer.committed(self._partitions(), timeout=self._timeout_s):
            low, _high = self._consumer.get_watermark_offsets(tp, timeout=self._timeout_s)
            cursor[tp.partition] = max(tp.offset, low)
        return cursor

    def records(self, starts: Mapping[int, int], *,
                idle_s: float = 1.0) -> Iterator[tuple[Position, bytes, DeadLetter | None]]:
        """Yield (position, record, letter or None) from ``starts`` (``{}``: the oldest kept) to the
        end: every partition past its high watermark and the broker quiet for ``idle_s`` (some
        Kafka-API brokers, Tansu among them, report the watermark per record batch)."""
        partitions = self._partitions()
        if not partitions:
            return
        behind: dict[int, int] = {}
        assignment = []
        for tp in partitions:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=self._timeout_s)
            start = max(starts.get(tp.partition, low), low)
            assignment.append(TopicPartition(self.topic, tp.partition, start))
            if start < high:
                behind[tp.partition] = high
        self._consumer.assign(assignment)
        while True:
            msg = self._consumer.poll(idle_s if not behind else 10.0)
            if msg is None:
                if behind:
                    raise DeadLetterError(f"timed out reading {self.topic!r} before its end")
                return
            if msg.error():
                raise KafkaException(msg.error())
            partition, offset = position(msg)
            if offset + 1 >= behind.get(partition, 0):
                behind.pop(partition, None)
            raw = msg.value() or b""
            yield Position(partition, offset), raw, decode(raw)

    def fetch(self, where: Position, *, wait_s: float = 10.0) -> tuple[bytes, DeadLetter | None] | None:
        """The record at ``where``, or None when the topic has no record there (a partition
        it does not have, an offset removed by retention, not written yet, or in a gap)."""
        if where.partition not in {tp.partition for tp in self._partitions()}:
            return None
        tp = TopicPartition(self.topic, where.partition, where.offset)
        low, high = self._consumer.get_watermark_offsets(tp, timeout=self._timeout_s)
        if where.offset < low:
            return None
        self._consumer.assign([tp])
        # At or above the (per-batch) watermark, a short quiet spell is the answer "no".
        msg = self._consumer.poll(wait_s if where.offset < high else 1.0)
        if msg is None:
            if where.offset < high:
                raise DeadLetterError(f"timed out reading {self.topic!r} at {where}")
            return None
        if msg.error():
            raise KafkaException(msg.error())
        if position(msg) != (where.partition, where.offset):
            return None
        raw = msg.value() or b""
        return raw, decode(raw)

    def commit_cursor(self, cursor: Mapping[int, int]) -> None:
        """Set the replay cursor (partition -> next offset to read)."""
        if cursor:
            self._consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in cursor.items()],
                                  asynchronous=False)

    def close(self) -> None:
        self._consumer.close()

"""What one MQTT message becomes in Kafka: topic, key, value, headers and timestamp.

Pure functions, no I/O, so the contract is unit-tested without brokers. The value is always the
MQTT payload byte for byte (malformed readings are forwarded too; the pipeline decides what is
rejected and keeps the bytes). Only payloads over the size limit are routed to the DLQ topic.
"""

from __future__ import annotations

from connectors.mqtt_kafka import eventtime
from sensorlake import contract

# Header names (consumers read these; keep them stable).
H_TOPIC = "mqtt_topic"
H_RECEIVE_MS = "receive_ms"
H_BRIDGE_ID = "bridge_id"
H_DUP = "mqtt_dup"
H_TS_FALLBACK = "timestamp_fallback"
H_DLQ_REASON = "dlq_reason"
H_PAYLOAD_BYTES = "payload_bytes"
H_DLQ_TRUNCATED = "dlq_truncated"

REASON_TOO_LARGE = "payload_too_large"
#: A DLQ value is cut to this many bytes so that it fits Kafka's default 1 MiB record limit.
DLQ_MAX_VALUE_BYTES = 1_000_000
DLQ_RETRY_VALUE_BYTES = 64 * 1024

_DUP = {True: (H_DUP, b"1"), False: (H_DUP, b"0")}
_DLQ_REPLACED = (H_TS_FALLBACK, H_DLQ_REASON, H_PAYLOAD_BYTES, H_DLQ_TRUNCATED)


class Record:
    """One Kafka record to produce; ``dlq_reason`` is set when it goes to the DLQ topic."""

    __slots__ = ("topic", "key", "value", "headers", "timestamp_ms", "receive_ms", "dlq_reason", "ts_fallback")

    def __init__(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]],
                 timestamp_ms: int, receive_ms: int, dlq_reason: str | None = None,
                 ts_fallback: str | None = None) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp_ms = timestamp_ms
        self.receive_ms = receive_ms
        self.dlq_reason = dlq_reason
        self.ts_fallback = ts_fallback

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self) -> str:  # for test failures and debug logs
        return (f"Record(topic={self.topic!r}, key={self.key!r}, ts={self.timestamp_ms}, "
                f"headers={self.headers!r}, value={self.value[:60]!r}...)")


def topic_key(topic: bytes, prefix: str) -> bytes | None:
    """The sensor the MQTT topic names (``<prefix>/<id>``: its last level), as a key; None for the
    prefix itself (the challenge's single topic ``sensors``)."""
    sid = contract.topic_sensor_id(topic, prefix)
    return None if sid is None else sid.encode("utf-8")


class RecordBuilder:
    """Turns received MQTT messages into Kafka records; one per bridge, reused per message."""

    def __init__(self, topic: str, dlq_topic: str, topic_prefix: str, bridge_id: str,
                 max_payload_bytes: int) -> None:
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.prefix = topic_prefix.strip("/")
        self.bridge_header = (H_BRIDGE_ID, bridge_id.encode("utf-8"))
        self.max_payload_bytes = max_payload_bytes

    def key(self, mqtt_topic: bytes, sensor_id: str | contract.Invalid | None = None) -> bytes | None:
        """The reading's sensor id (the payload's, as the contract reads it), else the topic's: one
        sensor's readings share a partition and keep their order."""
        if isinstance(sensor_id, str):
            return sensor_id.encode("utf-8", "replace")
        return topic_key(mqtt_topic, self.prefix)

    def build(self, mqtt_topic: bytes, payload: bytes, dup: bool, receive_ms: int) -> Record:
        headers = [(H_TOPIC, mqtt_topic), (H_RECEIVE_MS, b"%d" % receive_ms), self.bridge_header,
                   _DUP[bool(dup)]]
        size = len(payload)
        if size > self.max_payload_bytes:
            return self.dead_letter(mqtt_topic, payload, headers, receive_ms, REASON_TOO_LARGE)
        found = contract.scan(payload)
        ts, fallback = eventtime.record_timestamp(eventtime.usable(found.timestamp_ms), receive_ms)
        if fallback is not None:
            headers.append((H_TS_FALLBACK, fallback.encode()))
        return Record(self.topic, self.key(mqtt_topic, found.sensor_id), payload, headers, ts, receive_ms,
                      ts_fallback=fallback)

    def dead_letter(self, mqtt_topic: bytes, payload: bytes, headers: list[tuple[str, bytes]],
                    receive_ms: int, reason: str, limit: int = DLQ_MAX_VALUE_BYTES) -> Record:
        """A DLQ record: the payload (cut to what Kafka accepts), why, and its original size."""
        size = b"%d" % len(payload)
        truncated = False
        for name, value in headers:  # re-routed DLQ record: keep what it said about the original
            if name == H_PAYLOAD_BYTES:
                size = value
            elif name == H_DLQ_TRUNCATED:
                truncated = True
        headers = [h for h in headers if h[0] not in _DLQ_REPLACED]
        headers += [(H_DLQ_REASON, reason.encode()), (H_PAYLOAD_BYTES, size)]
        value = payload
        if len(payload) > limit:
            value = payload[:limit]
            truncated = True
        if truncated:
            headers.append((H_DLQ_TRUNCATED, b"1"))
        key = self.key(mqtt_topic)  # oversized: not decoded, the topic's sensor if it names one
        return Record(self.dlq_topic, key, value, headers, receive_ms, receive_ms, dlq_reason=reason)

    def restamp(self, record: Record) -> Record:
        """The same record stamped with its receive time, after Kafka refused its event time."""
        headers = [h for h in record.headers if h[0] != H_TS_FALLBACK]
        headers.append((H_TS_FALLBACK, eventtime.REJECTED.encode()))
        return Record(record.topic, record.key, record.value, headers, record.receive_ms,
                      record.receive_ms, record.dlq_reason, ts_fallback=eventtime.REJECTED)

    def to_dlq(self, record: Record, reason: str) -> Record:
        """Reroutes a record Kafka refused for good (e.g. too large) to the DLQ topic; a DLQ record
        refused again is cut much shorter so that it cannot loop."""
        topic = record.header(H_TOPIC) or b""
        limit = DLQ_MAX_VALUE_BYTES if record.dlq_reason is None else DLQ_RETRY_VALUE_BYTES
        return self.dead_letter(topic, record.value, record.headers, record.receive_ms, reason, limit)

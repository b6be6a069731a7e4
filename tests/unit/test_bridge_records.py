"""MQTT message -> Kafka record: key, unchanged value, headers, timestamp, DLQ routing."""

from __future__ import annotations

import json

import pytest

from connectors.mqtt_kafka import eventtime
from connectors.mqtt_kafka import records as r

NOW = 1795885200123  # 2026-11-28T17:00:00.123Z


@pytest.fixture
def builder():
    return r.RecordBuilder("iot.readings.raw", "iot.readings.dlq", "sensors", "bridge-7", max_payload_bytes=1024)


def reading(sensor="1", ts="2026-11-28T16:59:59.500Z", **extra) -> bytes:
    return json.dumps({"sensor_id": sensor, "timestamp": ts, "value": 21.5, "seq": 3, **extra}).encode()


@pytest.mark.parametrize(
    "topic, payload, key",
    [
        # the payload's sensor id, as the pipeline reads it, wins over the topic's
        (b"sensors/1", reading("other"), b"other"),
        (b"sensors/1", reading("1"), b"1"),
        (b"sensors/Sensor 1", b"garbage", b"Sensor 1"),  # none in the payload: the topic's
        (b"sensors/site-a/7", b"{}", b"7"),  # deeper topics: last level
        (b"sensors", reading("9"), b"9"),  # no sensor level: the payload's sensor_id
        (b"sensors/", reading("9"), b"9"),
        (b"sensors", b'{"sensor_id": 12, "value": 1}', b"12"),  # integer ids
        # the challenge's generator: one topic, `id` and `dt`
        (b"sensors", b'{"id": "Sensor 1", "dt": "2026-12-02T03:30:45.445217", "value": 32}', b"Sensor 1"),
        (b"sensors", b'{"id": "Sensor 1", "sensor_id": "Sensor 2", "value": 32}', b"Sensor 2"),
        (b"sensors", b'{"sensor_id": null, "id": "Sensor 3", "value": 32}', b"Sensor 3"),
        (b"sensors", b'{"value": 1}', None),  # no id anywhere: no key (any partition)
        (b"sensors", b'{"sensor_id": true}', None),
        (b"sensors/4", b'{"sensor_id": true}', b"4"),  # an id the pipeline rejects: the topic's
        (b"elsewhere/4", b'{"value": 1}', None),  # not under the prefix
        (b"sensors", b"[1, 2]", None),
        (b"sensors", b"\xff not json", None),
    ],
)
def test_key(builder, topic, payload, key):
    assert builder.build(topic, payload, False, NOW).key == key


def test_reading_is_forwarded_unchanged_with_headers_and_event_time(builder):
    payload = reading("3")
    rec = builder.build(b"sensors/3", payload, False, NOW)
    assert rec.topic == "iot.readings.raw"
    assert rec.value is payload
    assert rec.timestamp_ms == NOW - 623  # 16:59:59.500Z
    assert rec.headers == [("mqtt_topic", b"sensors/3"), ("receive_ms", str(NOW).encode()),
                           ("bridge_id", b"bridge-7"), ("mqtt_dup", b"0")]
    assert rec.dlq_reason is None and rec.ts_fallback is None


def test_redelivery_is_forwarded_and_flagged(builder):
    rec = builder.build(b"sensors/3", reading("3"), True, NOW)
    assert rec.header("mqtt_dup") == b"1" and rec.topic == "iot.readings.raw"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not json", eventtime.NO_TIMESTAMP),
        (b"", eventtime.NO_TIMESTAMP),
        (reading(ts="soon"), eventtime.NO_TIMESTAMP),
        (reading(ts=(NOW + 2 * 3600 * 1000)), eventtime.FUTURE),
        (reading(ts=-5), eventtime.BEFORE_EPOCH),
    ],
)
def test_malformed_or_absurd_is_forwarded_unchanged_with_receive_time(builder, payload, reason):
    rec = builder.build(b"sensors/3", payload, False, NOW)
    assert rec.topic == "iot.readings.raw" and rec.value == payload
    assert rec.timestamp_ms == NOW
    assert rec.header("timestamp_fallback") == reason.encode() and rec.ts_fallback == reason


def test_payload_at_the_limit_is_a_reading_above_goes_to_dlq(builder):
    at_limit = b"x" * 1024
    assert builder.build(b"sensors/3", at_limit, False, NOW).topic == "iot.readings.raw"
    big = reading("3", pad="y" * 2000)
    rec = builder.build(b"sensors/3", big, False, NOW)
    assert rec.topic == "iot.readings.dlq"
    assert rec.value == big and rec.key == b"3"
    assert rec.header("dlq_reason") == b"payload_too_large"
    assert rec.header("payload_bytes") == str(len(big)).encode()
    assert rec.header("mqtt_topic") == b"sensors/3" and rec.header("bridge_id") == b"bridge-7"
    assert rec.timestamp_ms == NOW  # not parsed: it could be huge
    assert rec.dlq_reason == r.REASON_TOO_LARGE


def test_dlq_value_is_cut_to_what_kafka_accepts(builder):
    huge = b"z" * (r.DLQ_MAX_VALUE_BYTES + 10)
    rec = builder.build(b"sensors/3", huge, False, NOW)
    assert len(rec.value) == r.DLQ_MAX_VALUE_BYTES and rec.header("dlq_truncated") == b"1"
    assert rec.header("payload_bytes") == str(len(huge)).encode()


def test_restamp_after_kafka_refused_the_timestamp(builder):
    rec = builder.build(b"sensors/3", reading("3"), False, NOW)
    again = builder.restamp(rec)
    assert again.timestamp_ms == NOW and again.value is rec.value and again.key == rec.key
    assert again.header("timestamp_fallback") == b"rejected_by_kafka"
    assert [h for h in again.headers if h[0] == "timestamp_fallback"] == [("timestamp_fallback", b"rejected_by_kafka")]


def test_to_dlq_after_kafka_refused_the_record_and_cannot_loop(builder):
    rec = builder.build(b"sensors/3", reading("3"), False, NOW)
    dlq = builder.to_dlq(rec, "kafka_MessageSizeTooLargeError")
    assert dlq.topic == "iot.readings.dlq" and dlq.header("dlq_reason") == b"kafka_MessageSizeTooLargeError"
    assert dlq.value == rec.value and dlq.key == b"3"
    big = builder.build(b"sensors/3", b"q" * 200_000, False, NOW)
    twice = builder.to_dlq(builder.to_dlq(big, "a"), "b")
    assert len(twice.value) == r.DLQ_RETRY_VALUE_BYTES
    assert [h for h in twice.headers if h[0] == "dlq_reason"] == [("dlq_reason", b"b")]
    assert [h for h in twice.headers if h[0] == "payload_bytes"] == [("payload_bytes", b"200000")]

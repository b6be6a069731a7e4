"""Event time of a reading -> Kafka record timestamp, for every timestamp form of the contract."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from connectors.mqtt_kafka import eventtime as et

T = datetime(2026, 11, 28, 17, 0, 0, 123456, tzinfo=timezone.utc)
T_MS = 1795885200123  # T in epoch ms (floored)


def payload(ts: object, **extra: object) -> bytes:
    return json.dumps({"sensor_id": "1", "timestamp": ts, "value": 23, **extra}).encode()


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2026-11-28T17:00:00.123456", T_MS),  # no zone means UTC (the seed generator's form)
        ("2026-11-28T17:00:00.123456Z", T_MS),
        ("2026-11-28T17:00:00.123Z", T_MS),
        ("2026-11-28T18:00:00.123456+01:00", T_MS),
        ("2026-11-28T12:30:00.123-04:30", T_MS),
        ("2026-11-28 17:00:00.123456", T_MS),  # space separator
        ("2026-11-28T17:00:00Z", T_MS - 123),
        ("2026-11-28T17:00:00.123456789Z", T_MS),  # nanoseconds are cut to micro, then ms
        (1795885200, T_MS - 123),  # epoch seconds
        (1795885200.123, T_MS),  # epoch seconds with fraction
        (1795885200123, T_MS),  # epoch milliseconds
        (0, 0),
    ],
)
def test_contract_timestamp_forms(ts, expected):
    got = et.event_time_ms(payload(ts))
    assert got is not None and abs(got - expected) <= 1, (ts, got, expected)


def test_the_challenge_dt_field_with_and_without_a_fraction():
    assert et.event_time_ms(b'{"id": "Sensor 1", "dt": "2026-11-28T17:00:00.123456", "value": 32}') == T_MS
    assert et.event_time_ms(b'{"id": "Sensor 1", "dt": "2026-11-28T17:00:00", "value": 32}') == T_MS - 123
    # timestamp wins over dt when both are there (as in the pipeline)
    assert et.event_time_ms(b'{"dt": "2026-11-28T17:00:00", "timestamp": 1795885200123}') == T_MS
    assert et.event_time_ms(b'{"dt": "2026-11-28T17:00:00", "timestamp": null}') == T_MS - 123


def test_compact_and_spaced_json_both_parse():
    assert et.event_time_ms(b'{"timestamp":1795885200123}') == T_MS
    assert et.event_time_ms(b'{ "timestamp" :\n "2026-11-28T17:00:00.123Z" }') == T_MS


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json at all",
        b'{"sensor_id": "1", "value": 2}',  # no timestamp
        b'{"timestamp": "yesterday"}',
        b'{"timestamp": null}',
        b'{"timestamp": true}',
        b'{"timestamp": ["2026-11-28T17:00:00Z"]}',
        b'{"timestamp": "2026-13-45T99:00:00"}',
        b"\xff\xfe\x00\x01binary",
        b'{"timestamp": 1e999}',  # infinity
        # numbers in strings: epoch s, epoch ms or an ISO basic date? The pipeline rejects them,
        # so the bridge does not stamp records with a guess either (sensorlake/contract.py)
        b'{"timestamp": "1795885200"}',
        b'{"timestamp": "1795885200123"}',
        b'{"timestamp": "20261128"}',
    ],
)
def test_unparseable_is_none_never_raises(raw):
    assert et.event_time_ms(raw) is None


def test_nan_and_deep_nesting_do_not_raise():
    assert et.event_time_ms(b'{"timestamp": NaN, "x": {"timestamp": 1}}') is None
    deep = b'{"timestamp": 1, "timestamp": 2, "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert et.event_time_ms(deep) is None


def test_top_level_timestamp_wins_over_nested_ones():
    raw = json.dumps({"metadata": {"timestamp": 5}, "timestamp": 1795885200123}).encode()
    assert et.event_time_ms(raw) == T_MS
    raw = json.dumps({"metadata": {"timestamp": 1795885200123}}).encode()
    assert et.event_time_ms(raw) is None  # only nested: not the reading's time


def test_record_timestamp_uses_event_time_when_kafka_accepts_it():
    now = T_MS
    assert et.record_timestamp(now - 7 * 24 * 3600 * 1000, now) == (now - 7 * 24 * 3600 * 1000, None)  # backfill
    assert et.record_timestamp(now + 59 * 60 * 1000, now) == (now + 59 * 60 * 1000, None)
    assert et.record_timestamp(0, now) == (0, None)


@pytest.mark.parametrize(
    "event, reason",
    [
        (None, et.NO_TIMESTAMP),
        (T_MS + et.MAX_FUTURE_MS + 1, et.FUTURE),  # Kafka 4 refuses > 1 h ahead
        (T_MS + 10 * 365 * 24 * 3600 * 1000, et.FUTURE),
        (-1, et.BEFORE_EPOCH),
        (-62135596800000, et.BEFORE_EPOCH),  # year 1
    ],
)
def test_record_timestamp_falls_back_to_receive_time(event, reason):
    assert et.record_timestamp(event, T_MS) == (T_MS, reason)


def test_microseconds_mistaken_for_ms_end_up_in_the_future_and_fall_back():
    micros = T_MS * 1000
    got = et.event_time_ms(payload(micros))
    assert et.record_timestamp(got, T_MS) == (T_MS, et.FUTURE)

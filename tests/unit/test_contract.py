"""The message contract's one implementation: aliases, timestamp forms, topics, and the bridge and
the pipeline agreeing on every payload (the bridge's fast path against the pipeline's full parse)."""

from __future__ import annotations

import json
import random

import pytest

from connectors.mqtt_kafka.eventtime import record_timestamp
from connectors.mqtt_kafka.records import RecordBuilder
from pipelines.parsing import Reading, parse_reading
from sensorlake import contract
from sensorlake.contract import Invalid

T_MS = 1_795_885_200_123  # 2026-11-28T17:00:00.123Z
NOW = T_MS + 60_000


# ---------------------------------------------------------------------------- fields
@pytest.mark.parametrize("doc, expected", [
    ({"id": "Sensor 1"}, ("id", "Sensor 1")),
    ({"sensor_id": "1"}, ("sensor_id", "1")),
    ({"sensor_id": "1", "id": "msg-7"}, ("sensor_id", "1")),  # the canonical name wins
    ({"id": "msg-7", "sensor_id": "1"}, ("sensor_id", "1")),  # whatever the order
    ({"sensor_id": None, "id": "Sensor 2"}, ("id", "Sensor 2")),  # null is absent
    ({"value": 1}, (None, None)),
])
def test_sensor_id_field_and_alias(doc, expected):
    assert contract.pick(doc, contract.SENSOR_ID_FIELDS) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Sensor 1", "Sensor 1"), ("1", "1"), (7, "7"), ("x" * 128, "x" * 128), ("Sénsor ü", "Sénsor ü"),
])
def test_sensor_ids_accepted(raw, expected):
    assert contract.sensor_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "x" * 129, True, 1.5, ["1"], {"a": 1}])
def test_sensor_ids_rejected(raw):
    got = contract.sensor_id(raw, "id")
    assert isinstance(got, Invalid) and got.code == "bad_sensor_id" and got.message.startswith("id ")


@pytest.mark.parametrize("value, expected", [
    ("2026-11-28T17:00:00.123456", T_MS),  # the challenge's dt: naive = UTC, microseconds
    ("2026-11-28T17:00:00", T_MS - 123),  # ... and without a fraction (microsecond 0)
    ("2026-11-28T17:00:00.123Z", T_MS),
    ("2026-11-28T18:00:00.123+01:00", T_MS),
    ("2026-11-28 17:00:00.123", T_MS),
    ("2026-11-28T17:00:00.1239999Z", T_MS),  # beyond microseconds: cut, then truncated to ms
    (1795885200, T_MS - 123), (1795885200.123, T_MS), (1795885200123, T_MS), (1795885200123.0, T_MS),
    (0, 0),
])
def test_timestamp_forms(value, expected):
    assert contract.timestamp_ms(value) == expected


@pytest.mark.parametrize("value, code", [
    # numbers in strings: rejected, never guessed (see the module docstring)
    ("1795885200", "bad_timestamp"), ("1795885200123", "bad_timestamp"), ("20261128", "bad_timestamp"),
    (" 1795885200.5 ", "bad_timestamp"), ("-5", "bad_timestamp"), ("1e9", "bad_timestamp"),
    ("yesterday", "bad_timestamp"), ("", "bad_timestamp"), ("2026-13-45T99:00:00", "bad_timestamp"),
    (True, "bad_timestamp"), (None, "bad_timestamp"), ([1], "bad_timestamp"), (float("inf"), "bad_timestamp"),
    (contract.NonFinite("NaN"), "bad_timestamp"),
])
def test_timestamps_rejected(value, code):
    got = contract.timestamp_ms(value, "dt")
    assert isinstance(got, Invalid) and got.code == code, got
    assert got.message.startswith("dt ")


@pytest.mark.parametrize("raw, expected", [
    (32, 32.0), (-40, -40.0), (21.37, 21.37), (10**30, 1e30),
    (True, "bad_value_type"), ("23.5", "bad_value_type"), ([1], "bad_value_type"),
    (contract.NonFinite("NaN"), "non_finite_value"), (10**400, "number_out_of_range"),
    (float("inf"), "number_out_of_range"),
])
def test_values(raw, expected):
    got = contract.reading_value(raw)
    assert (got.code if isinstance(got, Invalid) else got) == expected


@pytest.mark.parametrize("topic, prefix, expected", [
    ("sensors/Sensor 1", "sensors", "Sensor 1"),
    (b"sensors/Sensor 1", "sensors", "Sensor 1"),
    ("sensors/site-a/7", "sensors", "7"),
    ("sensors", "sensors", None),  # the challenge's single topic names no sensor
    ("sensors/", "sensors", None),
    ("sensors/it-1/4", "sensors/it-1/", "4"),
    ("sensors/it-1", "sensors/it-1", None),
    ("other/4", "sensors", None),
    ("sensorsX/4", "sensors", None),
    (None, "sensors", None),
    (b"sensors/\xff", "sensors", None),
])
def test_topic_forms(topic, prefix, expected):
    assert contract.topic_sensor_id(topic, prefix) == expected


# ---------------------------------------------------------------------------- bridge == pipeline
def _payloads(n: int, seed: int = 14):
    """Payloads in every shape the two readers could see differently: aliases, both names, nulls,
    nesting before and after, duplicate keys, strings with braces and quotes, numbers in strings,
    odd spacing, non-objects."""
    rng = random.Random(seed)
    ids = ["Sensor 1", "Sensor 5", "1", 7, "", "  ", "x" * 129, True, None, 1.5, "a}b", "{", 'q"uote',
           "Sénsor"]
    times = ["2026-11-28T17:00:00.123456", "2026-11-28T17:00:00", "2026-11-28T17:00:00.5Z",
             "2026-11-28T18:00:00+01:00", 1795885200, 1795885200.25, 1795885200123, 0, -5, "1795885200",
             "20261128", "noon", None, True, 1e300, "2026-11-28T17:00:00}", [1]]
    fillers = [("value", 21.5), ("value", 32), ("seq", 3), ("metadata", {"unit": "C", "id": "inner"}),
               ("note", "has } and { and \"id\": 5"), ("device", {"dt": 5, "sensor_id": "nested"}),
               ("list", ["id", "dt", {"timestamp": 1}]), ("description", "Assemlby Floor")]
    for _ in range(n):
        fields = []
        for names, pool in ((contract.SENSOR_ID_FIELDS, ids), (contract.TIMESTAMP_FIELDS, times)):
            for name in names:
                if rng.random() < 0.55:
                    fields.append((name, rng.choice(pool)))
        fields += rng.sample(fillers, rng.randint(0, 3))
        if fields and rng.random() < 0.05:
            fields.append(rng.choice(fields))  # a duplicate key: JSON keeps the last
        rng.shuffle(fields)
        sep = rng.choice([(", ", ": "), (",", ":"), (" ,\n", " :  ")])
        body = sep[0].join(json.dumps(k) + sep[1] + json.dumps(v, ensure_ascii=rng.random() < 0.5)
                           for k, v in fields)
        text = "{" + body + "}"
        kind = rng.random()
        if kind < 0.03:
            text = "[" + text + "]"
        elif kind < 0.05:
            text = text[:-1]  # truncated: not JSON
        elif kind < 0.07:
            text = " \n" + text
        yield text.encode()


def test_scan_reads_what_the_pipelines_decoder_reads():
    objects = 0
    for payload in _payloads(5000):
        try:
            doc = contract.DECODER.decode(payload.decode())
        except ValueError:
            continue  # not JSON: the pipeline rejects it, the bridge's key and time do not matter
        assert contract.scan(payload) == contract.envelope_of(doc), payload
        objects += 1
    assert objects > 4500


@pytest.mark.parametrize("topic", [b"sensors", b"sensors/Sensor 4"])
def test_the_bridges_key_and_timestamp_are_the_pipelines_sensor_and_event_time(topic):
    builder = RecordBuilder("raw", "dlq", "sensors", "b", max_payload_bytes=1 << 20)
    accepted = 0
    for payload in _payloads(8000, seed=18):
        reading = parse_reading(payload, registry={}, now_ms=NOW,
                                topic_sensor_id=contract.topic_sensor_id(topic, "sensors"))
        if not isinstance(reading, Reading):
            continue
        accepted += 1
        rec = builder.build(topic, payload, False, NOW)
        assert rec.key == reading.sensor_id.encode(), payload
        assert rec.timestamp_ms == record_timestamp(reading.event_time_ms, NOW)[0], payload
    assert accepted > 300


def test_the_challenge_payload_is_a_reading_on_both_sides():
    payload = b'{"id": "Sensor 1", "dt": "2026-12-02T03:30:45.445217", "value": 32}'
    dt_ms = 1_796_182_245_445
    assert contract.scan(payload) == (("Sensor 1", dt_ms))
    reading = parse_reading(payload, registry={}, now_ms=dt_ms)
    assert (reading.sensor_id, reading.event_time_ms, reading.value, reading.seq) == ("Sensor 1", dt_ms, 32.0, None)

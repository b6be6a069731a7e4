"""Payload parsing: every contract form accepted exactly, every defect rejected with its code."""

from __future__ import annotations

import json
import random

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.kafka_io import KafkaRecord
from pipelines.parsing import (REASON_CODES, ParseReadings, Reading, Rejection, ms_to_datetime,
                               parse_reading)
from sensorlake.lake import BY_NAME, RAW_READINGS, REJECTED_READINGS, SCHEMAS
from pipelines.windows import Observation
from sensorlake.registry import parse_registry

REGISTRY = parse_registry(json.dumps({
    "1": {"lat": 1.0, "lng": 2.0, "unit": "C", "type": "temperature", "range": [0, 45],
          "description": "Main Entrance"},
    "Sensor 1": {"lat": None, "lng": None, "unit": "C", "type": "temperature", "range": [0, 45],
                 "description": "Kitchen"},
    "7": {"unit": "%", "type": "humidity", "range": [0, 100], "description": "Deposit"},
}))
T0 = 1_795_885_200_000  # 2026-11-28T17:00:00Z
NOW = T0 + 3_600_000
DAY = 86_400_000


def j(**kw) -> bytes:
    return json.dumps(kw).encode()


def R(sid="1", ms=T0, value=23.0, unit="C", type_="temperature", seq=None, registered=True):
    return Reading(sid, ms, value, unit, type_, seq, registered)


TS = "2026-11-28T17:00:00"
ACCEPTED = [
    ("contract_metadata_form",
     b'{"sensor_id": "1", "timestamp": "2026-11-28T17:00:00.123456", "value": 23, '
     b'"metadata": {"unit": "C", "type": "temperature"}}', R(ms=T0 + 123)),
    ("contract_flat_form_epoch_s",
     b'{"sensor_id": "Sensor 1", "type": "temperature", "value": 21.4, "unit": "C", '
     b'"timestamp": 1764349200}', R("Sensor 1", 1_764_349_200_000, 21.4)),
    ("iso_z", j(sensor_id="1", timestamp=TS + "Z", value=1.5), R(value=1.5)),
    ("iso_plus_0200", j(sensor_id="1", timestamp="2026-11-28T19:00:00+02:00", value=1),
     R(value=1.0)),
    ("iso_minus_0530", j(sensor_id="1", timestamp="2026-11-28T11:30:00-05:30", value=1),
     R(value=1.0)),
    ("iso_naive_is_utc", j(sensor_id="1", timestamp=TS, value=2), R(value=2.0)),
    ("iso_micros_truncated_to_ms", j(sensor_id="1", timestamp=TS + ".999999Z", value=2),
     R(ms=T0 + 999, value=2.0)),
    ("epoch_s_int", j(sensor_id="1", timestamp=T0 // 1000, value=2), R(value=2.0)),
    ("epoch_s_float", j(sensor_id="1", timestamp=T0 / 1000 + 0.25, value=2),
     R(ms=T0 + 250, value=2.0)),
    ("epoch_ms_int", j(sensor_id="1", timestamp=T0 + 7, value=2), R(ms=T0 + 7, value=2.0)),
    ("epoch_ms_float", j(sensor_id="1", timestamp=float(T0 + 7), value=2),
     R(ms=T0 + 7, value=2.0)),
    ("epoch_zero", j(sensor_id="1", timestamp=0, value=2), R(ms=0, value=2.0)),
    ("int_value", j(sensor_id="1", timestamp=TS, value=-40), R(value=-40.0)),
    ("float_value", j(sensor_id="1", timestamp=TS, value=0.1), R(value=0.1)),
    ("big_int_value", j(sensor_id="1", timestamp=TS, value=10**30), R(value=1e30)),
    ("integer_sensor_id", j(sensor_id=1, timestamp=TS, value=3), R(value=3.0)),
    ("seq_kept", j(sensor_id="1", timestamp=TS, value=3, seq=42), R(value=3.0, seq=42)),
    ("unit_type_from_registry", j(sensor_id="7", timestamp=TS, value=55),
     R("7", value=55.0, unit="%", type_="humidity")),
    ("metadata_wins_over_top_level",
     j(sensor_id="1", timestamp=TS, value=3, unit="F", metadata={"unit": "K"}),
     R(value=3.0, unit="K")),
    ("unknown_sensor_accepted", j(sensor_id="ghost", timestamp=TS, value=3),
     R("ghost", value=3.0, unit="", type_="", registered=False)),
    ("unknown_sensor_keeps_payload_unit",
     j(sensor_id="ghost", timestamp=TS, value=3, unit="V", type="voltage"),
     R("ghost", value=3.0, unit="V", type_="voltage", registered=False)),
    ("near_future_within_a_day", j(sensor_id="1", timestamp=(NOW + DAY) // 1000, value=3),
     R(ms=NOW + DAY, value=3.0)),
]

REJECTED = [
    ("empty_payload", b"", "empty_payload"),
    ("one_mb", b'{"sensor_id": "1", "pad": "' + b"x" * 1_048_576 + b'"}', "payload_too_large"),
    ("oversize_non_utf8_checked_first", b"\xff" * 300_000, "payload_too_large"),
    ("non_utf8", b'{"sensor_id": "\xff\xfe"}', "not_utf8"),
    ("not_json", b"sensor 1 = 23", "not_json"),
    ("truncated_json", b'{"sensor_id": "1", "value": 2', "not_json"),
    ("nested_too_deeply", b"[" * 100_000 + b"]" * 100_000, "not_json"),
    ("object_nested_too_deeply", b'{"sensor_id": "1", "value": 1, "timestamp": 1, "x": '
     + b'{"a":' * 40_000 + b"1" + b"}" * 40_001, "not_json"),
    ("json_array", b'[{"sensor_id": "1"}]', "not_object"),
    ("json_scalar", b"23", "not_object"),
    ("missing_sensor_id", j(timestamp=TS, value=1), "missing_sensor_id"),
    ("null_sensor_id", j(sensor_id=None, timestamp=TS, value=1), "missing_sensor_id"),
    ("missing_value", j(sensor_id="1", timestamp=TS), "missing_value"),
    ("missing_timestamp", j(sensor_id="1", value=1), "missing_timestamp"),
    ("sensor_id_list", j(sensor_id=["1"], timestamp=TS, value=1), "bad_sensor_id"),
    ("sensor_id_empty", j(sensor_id="", timestamp=TS, value=1), "bad_sensor_id"),
    ("sensor_id_blank", j(sensor_id="  ", timestamp=TS, value=1), "bad_sensor_id"),
    ("sensor_id_bool", j(sensor_id=True, timestamp=TS, value=1), "bad_sensor_id"),
    ("sensor_id_too_long", j(sensor_id="x" * 129, timestamp=TS, value=1), "bad_sensor_id"),
    ("value_string", j(sensor_id="1", timestamp=TS, value="23.5"), "bad_value_type"),
    ("value_bool", j(sensor_id="1", timestamp=TS, value=True), "bad_value_type"),
    ("value_list", j(sensor_id="1", timestamp=TS, value=[1]), "bad_value_type"),
    ("value_nan", b'{"sensor_id": "1", "timestamp": 1764349200, "value": NaN}',
     "non_finite_value"),
    ("value_infinity", b'{"sensor_id": "1", "timestamp": 1764349200, "value": Infinity}',
     "non_finite_value"),
    ("value_minus_infinity", b'{"sensor_id": "1", "timestamp": 1764349200, "value": -Infinity}',
     "non_finite_value"),
    ("value_1e400", b'{"sensor_id": "1", "timestamp": 1764349200, "value": 1e400}',
     "number_out_of_range"),
    ("value_huge_int", b'{"sensor_id": "1", "timestamp": 1764349200, "value": 1' + b"0" * 400
     + b"}", "number_out_of_range"),
    ("timestamp_garbage", j(sensor_id="1", timestamp="yesterday", value=1), "bad_timestamp"),
    ("timestamp_bool", j(sensor_id="1", timestamp=True, value=1), "bad_timestamp"),
    ("timestamp_list", j(sensor_id="1", timestamp=[1], value=1), "bad_timestamp"),
    ("timestamp_nan", b'{"sensor_id": "1", "timestamp": NaN, "value": 1}', "bad_timestamp"),
    ("timestamp_1e400", b'{"sensor_id": "1", "timestamp": 1e400, "value": 1}', "bad_timestamp"),
    ("far_future_iso", j(sensor_id="1", timestamp="2099-01-01T00:00:00Z", value=1),
     "timestamp_out_of_range"),
    ("just_over_a_day_ahead", j(sensor_id="1", timestamp=NOW + DAY + 1, value=1),
     "timestamp_out_of_range"),
    ("pre_1970_iso", j(sensor_id="1", timestamp="1969-12-31T23:59:59Z", value=1),
     "timestamp_out_of_range"),
    ("pre_1970_epoch", j(sensor_id="1", timestamp=-1, value=1), "timestamp_out_of_range"),
    ("year_1_with_offset", j(sensor_id="1", timestamp="0001-01-01T00:00:00+01:00", value=1),
     "timestamp_out_of_range"),
    ("metadata_not_object", j(sensor_id="1", timestamp=TS, value=1, metadata="C"),
     "bad_field_type"),
    ("unit_not_string", j(sensor_id="1", timestamp=TS, value=1, unit=5), "bad_field_type"),
    ("seq_negative", j(sensor_id="1", timestamp=TS, value=1, seq=-1), "bad_field_type"),
    ("seq_float", j(sensor_id="1", timestamp=TS, value=1, seq=1.5), "bad_field_type"),
]


@pytest.mark.parametrize("payload,expected", [pytest.param(p, e, id=i) for i, p, e in ACCEPTED])
def test_accepted(payload, expected):
    assert parse_reading(payload, registry=REGISTRY, now_ms=NOW) == expected


@pytest.mark.parametrize("payload,code", [pytest.param(p, c, id=i) for i, p, c in REJECTED])
def test_rejected(payload, code):
    result = parse_reading(payload, registry=REGISTRY, now_ms=NOW)
    assert isinstance(result, Rejection), result
    assert result.reason_code == code, result.message
    assert code in REASON_CODES and result.message


def test_future_bound_is_a_parameter():
    payload = j(sensor_id="1", timestamp=NOW + 10_000, value=1)
    assert isinstance(parse_reading(payload, registry=REGISTRY, now_ms=NOW), Reading)
    tight = parse_reading(payload, registry=REGISTRY, now_ms=NOW, max_future_ms=5_000)
    assert tight.reason_code == "timestamp_out_of_range"


def test_size_limit_is_a_parameter():
    payload = j(sensor_id="1", timestamp=TS, value=1)
    res = parse_reading(payload, registry=REGISTRY, now_ms=NOW, max_payload_bytes=len(payload) - 1)
    assert res.reason_code == "payload_too_large"


def test_schemas_describe_every_field():
    for schema in SCHEMAS.values():
        for field in schema:
            assert field.metadata and field.metadata[b"description"], field.name
            if pa.types.is_timestamp(field.type):
                assert field.type == pa.timestamp("ms", tz="UTC"), field.name


def test_fuzz_never_raises():
    rng = random.Random(20261128)
    seeds = [p for _, p, _ in ACCEPTED] + [p for _, p, _ in REJECTED if len(p) < 10_000]
    for i in range(2000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                pos = rng.randrange(len(data) + 1)
                if op == 0 and data:
                    del data[min(pos, len(data) - 1)]
                elif op == 1:
                    data.insert(pos, rng.choice(b'{}[]",:0123456789.eE-+ aNI\\\xff'))
                elif data:
                    data[min(pos, len(data) - 1)] = rng.getrandbits(8)
            data = bytes(data)
        res = parse_reading(data, registry=REGISTRY, now_ms=NOW)
        assert isinstance(res, (Reading, Rejection)), data
        if isinstance(res, Rejection):
            assert res.reason_code in REASON_CODES and res.reason_code != "unparseable", (data, res)


# --- the DoFn -------------------------------------------------------------------------------

GOOD = j(sensor_id="1", timestamp="2026-11-28T17:59:00Z", value=20.5, seq=1)
GHOST = j(sensor_id="ghost", timestamp="2026-11-28T16:00:00Z", value=1)
RECORDS = [
    KafkaRecord(0, 10, T0, b"1", GOOD, {"mqtt_topic": b"sensors/1"}),
    KafkaRecord(0, 11, T0, None, b"not json", {}),
    KafkaRecord(1, 5, T0 + 1000, None, GHOST, {"mqtt_topic": b"sensors/ghost"}),
    KafkaRecord(1, 6, T0, None, None, {}),
]


def _apply(p, records=RECORDS):
    return (p | beam.Create(records)
            | beam.ParDo(ParseReadings(REGISTRY, clock=lambda: NOW / 1000))
            .with_outputs(ParseReadings.READINGS_TAG, main="lake"))


def test_dofn_routes_records_and_tags_readings():
    with BeamPipeline() as p:
        out = _apply(p)
        assert_that(out.lake | "where" >> beam.Map(
            lambda r: (r.kafka_partition, r.kafka_offset, r.dataset, BY_NAME[r.dataset].partition_of(r.row),
                       r.row.get("reason_code"), r.row.get("mqtt_topic"))),
            equal_to([
                (0, 10, "raw/readings", "date=2026-11-28/hour=17", None, "sensors/1"),
                (0, 11, "rejected/readings", "date=2026-11-28", "not_json", None),
                (1, 5, "raw/readings", "date=2026-11-28/hour=16", None, "sensors/ghost"),
                (1, 6, "rejected/readings", "date=2026-11-28", "empty_payload", None),
            ]), label="lake")
        # Observations carry the arrival time: the receive_ms header, else the record's timestamp.
        assert_that(out.readings, equal_to([
            Observation("1", T0 + 59 * 60_000, 20.5, 1, T0, "C"),
            Observation("ghost", T0 - 3_600_000, 1.0, None, T0 + 1000, "", 1),
        ]), label="readings")


def test_dofn_rows_fit_the_schemas():
    rows = {"raw/readings": [], "rejected/readings": []}
    dofn = ParseReadings(REGISTRY, clock=lambda: NOW / 1000)
    for rec in RECORDS:
        for out in dofn.process(rec):
            if not isinstance(out, beam.pvalue.TaggedOutput):
                rows[out.dataset].append(out.row)
    raw = pa.Table.from_pylist(rows["raw/readings"], schema=RAW_READINGS).to_pylist()
    assert raw[0]["payload"] == GOOD and raw[0]["event_time"] == ms_to_datetime(T0 + 59 * 60_000)
    assert raw[0]["ingest_time"] == ms_to_datetime(NOW) and raw[0]["seq"] == 1
    rej = pa.Table.from_pylist(rows["rejected/readings"], schema=REJECTED_READINGS).to_pylist()
    assert [r["reason_code"] for r in rej] == ["not_json", "empty_payload"]
    assert rej[1]["payload"] == b"" and rej[0]["kafka_timestamp"] == ms_to_datetime(T0)


def test_dofn_asks_a_registry_callable_per_record():
    """A RegistrySource is a callable: a sensor registered meanwhile is registered from then on."""
    current = {}
    dofn = ParseReadings(lambda: current, clock=lambda: NOW / 1000)
    first = list(dofn.process(RECORDS[2]))[0]
    current["ghost"] = REGISTRY["7"]
    second = list(dofn.process(RECORDS[2]))[0]
    assert (first.row["registered"], second.row["registered"]) == (False, True)
    assert (first.row["unit"], second.row["unit"]) == ("", "%")


def test_arrival_time_comes_from_the_bridge_header():
    rec = KafkaRecord(0, 1, T0, b"1", GOOD, {"receive_ms": b"%d" % (T0 + 250)})
    obs = [o.value for o in ParseReadings(REGISTRY, clock=lambda: NOW / 1000).process(rec)
           if isinstance(o, beam.pvalue.TaggedOutput)]
    assert obs == [Observation("1", T0 + 59 * 60_000, 20.5, 1, T0 + 250, "C")]


def test_dofn_counters():
    p = BeamPipeline()
    _apply(p)
    result = p.run()
    result.wait_until_finish()

    def counter(name):
        found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
        return sum(c.committed for c in found)

    assert counter("parsed") == 2
    assert counter("rejected") == 2
    assert counter("unregistered") == 1
    assert counter("rejected_not_json") == 1
    assert counter("rejected_empty_payload") == 1
    assert counter("rejected_bad_timestamp") == 0

"""The raw stage per Kafka partition: packed batches in, raw/ and rejected/ chunk files out, each
reading once, and every parsed reading handed on to the 1-minute windows."""

from __future__ import annotations

import glob
import json

import apache_beam as beam
import pytest
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.kafka_io import KafkaRecord, pack_batch
from pipelines.raw_lake import WriteRawLake, _RawLakePerPartition
from sensorlake import lake as lakedef
from sensorlake.registry import parse_registry

T0 = 1_795_885_200_000  # 2026-11-28T17:00:00Z
REGISTRY = parse_registry(json.dumps({
    "Sensor 1": {"unit": "C", "type": "temperature", "range": [0, 45], "description": "Main Entrance"},
    "Sensor 2": {"unit": "C", "type": "temperature", "range": [0, 45], "description": "Kitchen"}}))


def _reading(partition, offset, sensor, seq, second):
    payload = json.dumps({"id": sensor, "dt": f"2026-11-28T17:00:{second:02d}.250", "value": 20 + seq, "seq": seq})
    return KafkaRecord(partition, offset, T0 + second * 1000, sensor.encode(), payload.encode(),
                       {"mqtt_topic": b"sensors", "receive_ms": b"%d" % (T0 + second * 1000 + 40)})


@pytest.mark.parametrize("piece", [4096, 2], ids=["one-piece", "pieces-of-2"])
def test_each_reading_once_in_raw_rejects_in_rejected_and_all_readings_to_the_windows(tmp_path, monkeypatch, piece):
    monkeypatch.setattr(_RawLakePerPartition, "PIECE", piece)  # rows become columns every `piece` records
    p0 = [_reading(0, o, "Sensor 1", o, o) for o in range(5)]
    p0_redelivered = [_reading(0, 5, "Sensor 1", 3, 3), _reading(0, 6, "Sensor 1", 4, 4)]
    p1 = [_reading(1, o, "Sensor 2", o, o) for o in range(3)]
    bad = KafkaRecord(1, 3, T0, None, b"{not json", {"mqtt_topic": b"sensors"})
    batches = [(0, pack_batch(p0[:3])), (1, pack_batch(p1 + [bad])), (0, pack_batch(p0[3:] + p0_redelivered))]
    with TestPipeline() as p:
        readings = (p | beam.Create(batches)
                    | WriteRawLake(REGISTRY, str(tmp_path), lakedef.BY_NAME,
                                   chunk_size=4, flush_seconds=0, clock=lambda: T0 / 1000 + 3600))
        assert_that(readings | beam.FlatMap(lambda batch: [(o.sensor_id, o.seq, o.partition) for o in batch]),
                    equal_to([("Sensor 1", s, 0) for s in (0, 1, 2, 3, 4, 3, 4)]
                             + [("Sensor 2", s, 1) for s in range(3)]))
        # one element per packed batch, its readings in offset order
        assert_that(readings | beam.Map(lambda batch: [(o.partition, o.seq) for o in batch]),
                    equal_to([[(0, 0), (0, 1), (0, 2)], [(1, 0), (1, 1), (1, 2)], [(0, 3), (0, 4), (0, 3), (0, 4)]]),
                    label="per batch")

    def rows(dataset):
        files = sorted(glob.glob(f"{tmp_path}/{dataset}/**/*.parquet", recursive=True))
        return files, [r for f in files for r in pq.read_table(f).to_pylist()]

    files, raw = rows(lakedef.RAW_READINGS_DATASET)
    assert sorted((r["sensor_id"], r["seq"], r["kafka_offset"]) for r in raw) == (
        [("Sensor 1", s, s) for s in range(5)] + [("Sensor 2", s, s) for s in range(3)])
    # chunks of 4 offsets per partition: p0 offsets 0-3 and 4-6, p1 offsets 0-3
    assert [f.rsplit("/", 1)[1] for f in files] == [
        "part-p000-c000000000.parquet", "part-p000-c000000001.parquet", "part-p001-c000000000.parquet"]
    _, rejected = rows(lakedef.REJECTED_READINGS_DATASET)
    assert [(r["kafka_partition"], r["kafka_offset"], r["reason_code"]) for r in rejected] == [(1, 3, "not_json")]


def _challenge_reading(offset, second):
    """The challenge's message: no seq, so the reading's key is its event time to the millisecond."""
    payload = json.dumps({"id": "Sensor 1", "dt": f"2026-11-28T17:{second // 60:02d}:{second % 60:02d}.250",
                          "value": second % 45})
    return KafkaRecord(0, offset, T0 + second * 1000, b"Sensor 1", payload.encode(), {"mqtt_topic": b"sensors"})


def test_readings_without_seq_replayed_from_the_archive_are_written_once(tmp_path):
    """Forty seconds of a sensor without seq in batches of five, with a recent tier of 5 s, then a
    batch replaying two readings that aged out into the archive and one still recent: each reading
    once in raw/, the three copies counted as duplicates, the archive read for the old ones and
    rewritten when it passed its pieces."""
    from pipelines.dedupe import SeenReadings

    offsets = iter(range(1000))
    batches = [(0, pack_batch([_challenge_reading(next(offsets), s) for s in range(b, b + 5)]))
               for b in range(0, 40, 5)]
    batches.append((0, pack_batch([_challenge_reading(next(offsets), s) for s in (3, 12, 38, 40)])))
    p = TestPipeline()
    _ = (p | beam.Create(batches)
         | WriteRawLake(REGISTRY, str(tmp_path), lakedef.BY_NAME,
                        chunk_size=100, flush_seconds=0, clock=lambda: T0 / 1000 + 3600,
                        seen=SeenReadings(time_horizon_ms=60_000, recent_ms=5_000, max_pieces=3)))
    result = p.run()
    result.wait_until_finish()
    files = glob.glob(f"{tmp_path}/{lakedef.RAW_READINGS_DATASET}/**/*.parquet", recursive=True)
    raw = [r for f in files for r in pq.read_table(f).to_pylist()]
    seconds = sorted(int(r["event_time"].timestamp() * 1000 - T0) // 1000 for r in raw)
    assert seconds == list(range(41))

    def counter(name):
        found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("dedupe").with_name(name))
        return sum(c.committed for c in found["counters"])

    assert (counter("duplicates"), counter("unique")) == (3, 41)
    assert counter("archive_reads") >= 1 and counter("archive_compactions") >= 1


def test_the_parsing_counters_count_every_record_of_every_batch(tmp_path):
    """The raw stage reports what it parsed once per batch: the job's counters still add up to one
    count per record, readings, unregistered sensors and each rejection under its reason."""
    unknown = KafkaRecord(0, 2, T0, b"Sensor 9", json.dumps(
        {"id": "Sensor 9", "dt": "2026-11-28T17:00:02.250", "value": 20}).encode(), {"mqtt_topic": b"sensors"})
    from_topic = KafkaRecord(1, 1, T0, None, b'{"dt": "2026-11-28T17:00:03.250", "value": 21}',
                             {"mqtt_topic": b"sensors/Sensor 2"})
    batches = [(0, pack_batch([_reading(0, 0, "Sensor 1", 0, 0), _reading(0, 1, "Sensor 1", 1, 1), unknown])),
               (1, pack_batch([KafkaRecord(1, 0, T0, None, b"{not json", {"mqtt_topic": b"sensors"}), from_topic,
                               KafkaRecord(1, 2, T0, None, b"", {"mqtt_topic": b"sensors"}),
                               KafkaRecord(1, 3, T0, None, b"[1]", {"mqtt_topic": b"sensors"})])),
               (1, pack_batch([KafkaRecord(1, 4, T0, None, b"{oops", {"mqtt_topic": b"sensors"})]))]
    p = TestPipeline()
    readings = (p | beam.Create(batches)
                | WriteRawLake(REGISTRY, str(tmp_path), lakedef.BY_NAME, chunk_size=100, flush_seconds=0,
                               clock=lambda: T0 / 1000 + 3600))
    assert_that(readings | beam.FlatMap(lambda batch: [o.sensor_id for o in batch]),
                equal_to(["Sensor 1", "Sensor 1", "Sensor 9", "Sensor 2"]))
    result = p.run()
    result.wait_until_finish()

    def counter(name):
        found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("parsing").with_name(name))
        return sum(c.committed for c in found["counters"])

    assert {n: counter(n) for n in ("parsed", "unregistered", "rejected", "rejected_not_json",
                                    "rejected_empty_payload", "rejected_not_object", "rejected_bad_timestamp")} == {
        "parsed": 4, "unregistered": 1, "rejected": 4, "rejected_not_json": 2, "rejected_empty_payload": 1,
        "rejected_not_object": 1, "rejected_bad_timestamp": 0}

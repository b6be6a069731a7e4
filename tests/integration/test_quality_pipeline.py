"""End to end on the local stack: generator -> Mosquitto -> bridge -> Kafka -> the job on Flink.

The generator publishes six minutes of event time for the seed's five sensors (20x faster than
real time, stamped from a fixed minute in the past) with injected faults: sensor 1 drops 40% of
its readings, sensor 2 sends 20% out of range, sensor 3 is silent for minutes 2 and 3, sensor 4
publishes 10% twice, and malformed payloads are mixed in. Its report says exactly which seqs it
sent; the lake must agree with it:
  raw/readings       every sent seq of every sensor, once;
  rejected/readings  every malformed payload, with a reason;
  quality/           exactly the injected faults in the affected minutes, `ok` elsewhere;
  curated/           means over in-range values only;
  raw/sensors/       the registry version, and a new one after the file changed, without restart.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipelines import main
from sensorlake import flink_rest
from sensorlake.quality import Thresholds
from sensorlake.registry import load_registry
from tests.integration.procs import BridgeProc, GeneratorProc, wait_for

pytestmark = pytest.mark.integration

UTC = timezone.utc
MINUTES = 6
SENSORS = ("1", "2", "3", "4", "5")
THRESHOLDS = Thresholds()


def _rows(sql: str) -> list:
    try:
        return duckdb.connect().execute(sql).fetchall()
    except (duckdb.IOException, duckdb.InvalidInputException):
        return []  # no file yet


def _seqs(ranges) -> set[int]:
    return {s for lo, hi in ranges for s in range(lo, hi + 1)}


def _topic_values(settings) -> list[bytes]:
    consumer = KafkaConsumer(settings.kafka_topic, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        return [r.value for r in consumer]
    finally:
        consumer.close()


@pytest.fixture
def bridge(stack, tmp_path):
    for name in ("mosquitto", "kafka"):
        stack.start(name)
    b = BridgeProc(stack.settings, tmp_path).start()
    yield b
    b.close()


def test_generator_to_quality_rows_on_flink(stack, bridge, tmp_path):
    registry = tmp_path / "sensors.json"
    shutil.copy(stack.settings.registry, registry)
    settings = stack.settings.replace(lake=str(tmp_path / "lake"), kafka_topic=bridge.topic,
                       registry=str(registry), registry_refresh_s=3)
    lake = settings.lake
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    t0_ms = int(t0.timestamp() * 1000)

    job_name = f"sensorlake-it-{bridge.topic}"
    result = main.run(["--flush-seconds", "3", "--window-flush-seconds", "2",
                       "--job-name", job_name, "--group-id", bridge.topic], settings=settings)
    try:
        gen = GeneratorProc(settings, bridge.prefix, tmp_path,
                            "--start-time", t0.isoformat(), "--keep-intervals", "--rate", "100",
                            "--count", str(MINUTES * 60 * len(SENSORS)), "--seed", "20261128",
                            "--drop-rate", "1=0.4", "--out-of-range-rate", "2=0.2", "--silent", "3:120:240",
                            "--duplicate-rate", "4=0.1", "--malformed-rate", "5=0.02")
        report = gen.report()
        # The registry changes while the job runs: a new version is stored without a restart.
        doc = json.loads(registry.read_text())
        doc["9"] = dict(doc["1"], description="added while the job runs")
        registry.write_text(json.dumps(doc))
        time.sleep(settings.registry_refresh_s + 1)
        # One reading per sensor stamped 15 s into minute 7 closes minute 6 for every sensor (and
        # makes the job look at the registry again).
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        for sid in SENSORS:
            ts = t0_ms + (MINUTES * 60 + 15) * 1000
            producer.send(bridge.topic, key=sid.encode(), timestamp_ms=ts, value=json.dumps(
                {"sensor_id": sid, "timestamp": ts, "value": 20.0, "seq": 10_000}).encode())
        producer.flush()
        producer.close()

        sent = {sid: _seqs(report["sensors"][sid]["seqs_sent"]) for sid in SENSORS}
        raw = f"read_parquet('{lake}/raw/readings/**/*.parquet', hive_partitioning=true)"
        qual = f"read_parquet('{lake}/quality/sensor_quality_1min/**/*.parquet', hive_partitioning=true)"
        cur = f"read_parquet('{lake}/curated/readings_1min/**/*.parquet', hive_partitioning=true)"
        rej = f"read_parquet('{lake}/rejected/readings/**/*.parquet')"
        want_raw = sum(map(len, sent.values())) + len(SENSORS)
        want_q = f"window_start >= epoch_ms({t0_ms}) and window_start < epoch_ms({t0_ms + MINUTES * 60_000})"
        wait_for(lambda: (_rows(f"select count(*) from {raw}") or [(0,)])[0][0] >= want_raw
                 and (_rows(f"select count(*) from {qual} where {want_q}") or [(0,)])[0][0] >= MINUTES * len(SENSORS)
                 and len(list((tmp_path / "lake" / "raw" / "sensors").glob("version=*"))) >= 2,
                 timeout=240, interval=2, what="raw rows, quality rows and the second registry version")
        time.sleep(4)  # one more flush: nothing more, nothing changed

        # raw: every sent seq once, per sensor (the closers have seq 10000)
        got = defaultdict(list)
        for sid, seq in _rows(f"select sensor_id, seq from {raw} where seq < 10000"):
            got[sid].append(seq)
        for sid in SENSORS:
            assert Counter(got[sid]) == Counter(sent[sid]), f"sensor {sid}: raw differs from what was sent"
        malformed = report["totals"]["malformed"]
        assert malformed > 0
        assert _rows(f"select count(*) from {rej}")[0][0] == malformed
        assert not _rows(f"select * from {rej} where reason_code is null or reason = ''")

        # quality: one current row per sensor-minute, the faults where they were injected
        q = {}
        for sid, start, *rest in _rows(
                f"select sensor_id, epoch_ms(window_start), received, completeness, out_of_range, "
                f"range_validity, duplicates, late, status, version from {qual} where {want_q}"):
            assert (sid, start) not in q, "two rows for one sensor-minute"
            q[(sid, start)] = dict(zip(["received", "completeness", "out", "validity", "dup", "late", "status",
                                        "version"], rest))
        assert len(q) == MINUTES * len(SENSORS)
        # raw holds exactly the sent seqs (checked above), so its event times say which minute each
        # sent reading belongs to (a silenced sensor's seqs do not advance while it is silent)
        per_minute = defaultdict(Counter)
        values = defaultdict(list)
        for sid, et, v in _rows(f"select sensor_id, epoch_ms(event_time), value from {raw} where seq < 10000"):
            per_minute[sid][(et - t0_ms) // 60_000] += 1
            values[(sid, (et - t0_ms) // 60_000)].append(v)
        reg = load_registry(registry)
        for (sid, start), row in sorted(q.items()):
            m = (start - t0_ms) // 60_000
            received = per_minute[sid][m]
            assert row["received"] == received, (sid, m, row)
            out = sum(1 for v in values[(sid, m)] if not reg[sid].in_range(v))
            assert row["out"] == out, (sid, m, row)
            assert row["status"] == THRESHOLDS.status(received, row["completeness"], row["validity"]), (sid, m, row)
            if sid == "3" and m in (2, 3):
                assert (row["status"], row["completeness"]) == ("missing", 0.0)
            elif sid == "1":
                assert row["completeness"] == pytest.approx(received / 60)
                assert row["status"] == ("bad" if received < 30 else "degraded")
            elif sid == "2":
                assert out > 0 and row["validity"] == pytest.approx(1 - out / received)
            else:
                assert (row["status"], row["completeness"], row["validity"]) == ("ok", 1.0, 1.0), (sid, m, row)
        assert Counter(row["status"] for (sid, _), row in q.items() if sid == "2")["bad"] >= MINUTES // 2
        # duplicates: what Kafka holds twice, per minute (the generator's total spans minute 6 too)
        copies = Counter()
        for value in _topic_values(settings):
            try:
                doc = json.loads(value)
                copies[(doc["sensor_id"], doc["seq"], doc["timestamp"])] += 1
            except (ValueError, KeyError, TypeError):
                continue  # a malformed payload
        dup_per_minute = Counter()
        for (sid, _, ts), n in copies.items():
            et = int(datetime.fromisoformat(ts).timestamp() * 1000) if isinstance(ts, str) else ts
            dup_per_minute[(sid, (et - t0_ms) // 60_000)] += n - 1
        assert sum(dup_per_minute.values()) == report["totals"]["duplicates"] > 0
        for (sid, start), row in q.items():
            assert row["dup"] == dup_per_minute[(sid, (start - t0_ms) // 60_000)], (sid, start, row)
        assert sum(row["late"] for row in q.values()) == 0

        # curated: means over in-range values, one row per sensor-minute that had any
        for sid, start, count, mean in _rows(
                f"select sensor_id, epoch_ms(window_start), count, mean from {cur} where {want_q}"):
            inside = [v for v in values[(sid, (start - t0_ms) // 60_000)] if reg[sid].in_range(v)]
            assert count == len(inside) and math.isclose(mean, sum(inside) / len(inside)), (sid, start)
        assert not _rows(f"select * from {cur} where sensor_id = '3' and {want_q} and "
                         f"window_start in (epoch_ms({t0_ms + 120_000}), epoch_ms({t0_ms + 180_000}))")
        versions = sorted((tmp_path / "lake" / "raw" / "sensors").glob("version=*/sensors.json"))
        assert json.loads(versions[-1].read_text())["9"]["description"] == "added while the job runs"
    finally:
        flink_rest.cancel_job(settings, job_name, result)


def test_backfill_two_days_ago_lands_in_its_windows(stack, bridge, tmp_path):
    """Readings stamped two days ago, published now, are windowed two days ago, not dropped as late."""
    settings = stack.settings.replace(lake=str(tmp_path / "lake"), kafka_topic=bridge.topic)
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    gen = GeneratorProc(settings, bridge.prefix, tmp_path, "--start-time", t0.isoformat(), "--keep-intervals",
                        "--rate", "200", "--count", str(3 * 60 * len(SENSORS)), "--seed", "7")
    report = gen.report()
    assert report["totals"]["sent"] == 3 * 60 * len(SENSORS)
    job_name = f"sensorlake-it-{uuid.uuid4().hex[:6]}"
    result = main.run(["--flush-seconds", "3", "--window-flush-seconds", "2",
                       "--job-name", job_name, "--group-id", bridge.topic], settings=settings)
    try:
        qual = f"read_parquet('{settings.lake}/quality/sensor_quality_1min/**/*.parquet', hive_partitioning=true)"
        day = t0.date().isoformat()
        wait_for(lambda: (_rows(f"select count(*) from {qual} where date = '{day}' and received > 0")
                          or [(0,)])[0][0] >= 2 * len(SENSORS), timeout=240, interval=2, what="backfilled windows")
        rows = _rows(f"select sensor_id, epoch_ms(window_start), received, status from {qual} "
                     f"where date = '{day}' and received > 0 order by 1, 2")
        t0_ms = int(t0.timestamp() * 1000)
        # minutes 0 and 1 closed by the sensors' own event time (minute 2 waits for idleness)
        full = [r for r in rows if r[1] in (t0_ms, t0_ms + 60_000)]
        assert full == [(sid, t0_ms + m * 60_000, 60, "ok") for sid in SENSORS for m in (0, 1)]
    finally:
        flink_rest.cancel_job(settings, job_name, result)

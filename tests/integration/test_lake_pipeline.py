"""The lake job on Flink: readings into raw/ once each, bad payloads into rejected/ with reasons.

Records are produced straight into Kafka the way the bridge writes them (key = sensor id, record
timestamp = event time), including bridge-style redeliveries at new offsets, and a sensor without
seq (the challenge's format) whose oldest readings come again after minutes, when only the
de-duplication archive (pipelines/dedupe.py) remembers them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import duckdb
import pytest
from kafka import KafkaProducer

from pipelines import main
from sensorlake import flink_rest
from tests.integration.procs import create_topic

pytestmark = pytest.mark.integration

READINGS_PER_SENSOR = 200


def _query(sql: str):
    try:
        return duckdb.connect().execute(sql).fetchall()
    except duckdb.IOException:
        return None  # no file yet


def _tick(settings, stop: threading.Event) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    while not stop.wait(1.0):
        ms = int(time.time() * 1000)
        producer.send(settings.kafka_topic, key=b"tick", timestamp_ms=ms,
                      value=json.dumps({"sensor_id": "tick", "timestamp": ms, "value": 0.0}).encode())
    producer.close()


def test_raw_and_rejected_lake_on_flink(stack, tmp_path):
    settings = stack.settings.replace(lake=str(tmp_path / "lake"), kafka_topic=f"readings-{uuid.uuid4().hex[:8]}")
    create_topic(settings, settings.kafka_topic, 3)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    t0 = int(time.time() * 1000) - 600_000
    sent = 0
    for seq in range(READINGS_PER_SENSOR):
        for sensor in ("Sensor 1", "Sensor 2", "Sensor 3", "unknown-7"):  # the registry's ids, and one not in it
            ts = t0 + seq * 1000
            payload = json.dumps({"sensor_id": sensor, "timestamp": ts / 1000, "value": 20 + seq % 5,
                                  "seq": seq, "metadata": {"unit": "C", "type": "temperature"}}).encode()
            producer.send(settings.kafka_topic, key=sensor.encode(), value=payload, timestamp_ms=ts)
            sent += 1
            if seq % 50 == 0:  # a redelivery: same reading, new offset
                producer.send(settings.kafka_topic, key=sensor.encode(), value=payload, timestamp_ms=ts)
    # Sensor 4 sends without seq, one reading every 2 s for 400 s: its first minutes age out of the
    # recent tier (2-4 minutes) into the archive; copies of three of them come once all is in raw/.
    no_seq = [json.dumps({"sensor_id": "Sensor 4", "timestamp": (t0 + i * 2000) / 1000, "value": 20 + i % 5}).encode()
              for i in range(READINGS_PER_SENSOR)]
    for i, payload in enumerate(no_seq):
        producer.send(settings.kafka_topic, key=b"Sensor 4", value=payload, timestamp_ms=t0 + i * 2000)
        sent += 1
    bad = [b"not json", b'{"sensor_id": "1", "value": NaN, "timestamp": 1}', b"\xff\xfe", b"[1,2]",
           b'{"sensor_id": "1", "timestamp": "2026-11-28T17:00:00Z"}']
    for payload in bad:
        producer.send(settings.kafka_topic, key=b"1", value=payload)
    producer.flush()
    producer.close()

    job_name = f"sensorlake-lake-{settings.kafka_topic}"
    result = main.run(["--flush-seconds", "3", "--job-name", job_name,
                       "--group-id", settings.kafka_topic], settings=settings)
    # A live topic never goes quiet: the runner parks a bundle's batches in a checkpoint taken
    # during it until the next bundle (docs/operations.md), so a sensor "tick" keeps it live.
    ticking = threading.Event()
    threading.Thread(target=_tick, args=(settings, ticking), daemon=True).start()
    raw_glob = f"{settings.lake}/raw/readings/**/*.parquet"
    rej_glob = f"{settings.lake}/rejected/readings/**/*.parquet"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            raw = _query(f"select count(*) from read_parquet('{raw_glob}') where sensor_id <> 'tick'")
            rej = _query(f"select count(*) from read_parquet('{rej_glob}')")
            if raw and rej and raw[0][0] >= sent and rej[0][0] >= len(bad):
                break
            time.sleep(2)
        # The copies reach the job in a later batch than their originals, so only the archive in
        # Flink state knows them; a new reading after them shows when they have been judged.
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        for i in (0, 5, 10):
            producer.send(settings.kafka_topic, key=b"Sensor 4", value=no_seq[i], timestamp_ms=t0 + i * 2000)
        last = t0 + READINGS_PER_SENSOR * 2000
        producer.send(settings.kafka_topic, key=b"Sensor 4", timestamp_ms=last,
                      value=json.dumps({"sensor_id": "Sensor 4", "timestamp": last / 1000, "value": 21}).encode())
        producer.flush()
        producer.close()
        sent += 1
        while time.monotonic() < deadline + 120 and not _query(
                f"select 1 from read_parquet('{raw_glob}') where sensor_id = 'Sensor 4' and epoch_ms(event_time) = {last}"):
            time.sleep(2)
        time.sleep(4)  # one more flush: nothing extra may appear
        per_sensor = dict(_query(
            f"select sensor_id, count(*) from read_parquet('{raw_glob}', hive_partitioning=true) "
            f"where sensor_id <> 'tick' group by 1"))
        assert per_sensor == {**{s: READINGS_PER_SENSOR for s in ("Sensor 1", "Sensor 2", "Sensor 3", "unknown-7")},
                              "Sensor 4": READINGS_PER_SENSOR + 1}
        distinct = _query(f"select count(distinct (sensor_id, seq)) from read_parquet('{raw_glob}') "
                          f"where sensor_id not in ('tick', 'Sensor 4')")[0][0]
        distinct += _query(f"select count(distinct event_time) from read_parquet('{raw_glob}') "
                           f"where sensor_id = 'Sensor 4' and seq is null")[0][0]
        assert distinct == sent
        unregistered = _query(f"select distinct sensor_id from read_parquet('{raw_glob}') "
                              f"where not registered and sensor_id <> 'tick'")
        assert unregistered == [("unknown-7",)]
        reasons = sorted(r[0] for r in _query(f"select reason_code from read_parquet('{rej_glob}')"))
        assert reasons == sorted(["not_json", "non_finite_value", "not_utf8", "not_object", "missing_value"])
        versions = list((tmp_path / "lake" / "raw" / "sensors").glob("version=*/sensors.json"))
        assert len(versions) == 1
        # pipelines/options.py: Flink hands records between chained operators without copying
        job = flink_rest.find_job(settings, job_name)
        config = flink_rest.call(settings, f"/jobs/{job['jid']}/config")
        assert config["execution-config"]["object-reuse-mode"] is True
    finally:
        ticking.set()
        flink_rest.cancel_job(settings, job_name, result)

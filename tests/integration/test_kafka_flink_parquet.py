"""The foundation proof: N records in Kafka come back from Parquet written by Beam on Flink."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import duckdb
import pytest
from kafka import KafkaProducer

from pipelines import proof
from sensorlake import flink_rest
from tests.integration.procs import create_topic

pytestmark = pytest.mark.integration

N = 3000


def _jobs(rest: str) -> list[dict]:
    with urllib.request.urlopen(f"{rest}/jobs/overview", timeout=5) as r:
        return json.load(r)["jobs"]


def test_kafka_to_parquet_through_beam_on_flink(stack, tmp_path):
    settings = stack.settings.replace(lake=str(tmp_path / "lake"))
    topic = f"proof-{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic, 3)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for i in range(N):
        producer.send(topic, key=f"sensor-{i % 5}".encode(), value=json.dumps({"seq": i}).encode())
    producer.flush()
    producer.close()

    job_name = f"sensorlake-proof-{topic}"
    result = proof.run(["--topic", topic, "--flush-seconds", "3", "--job-name", job_name], settings=settings)
    try:
        deadline = time.monotonic() + 240
        seen_running = False
        rows = distinct = 0
        glob = f"{settings.lake}/proof/**/*.parquet"
        while time.monotonic() < deadline:
            seen_running = seen_running or any(
                j["name"] == job_name and j["state"] == "RUNNING" for j in _jobs(settings.flink_rest))
            try:
                rows, distinct, values = duckdb.connect().execute(
                    f"select count(*), count(distinct (kafka_partition, kafka_offset)), "
                    f"count(distinct value) from read_parquet('{glob}', hive_partitioning=true)").fetchone()
            except duckdb.IOException:
                rows = distinct = values = 0  # no file yet
            if rows >= N and seen_running:
                break
            time.sleep(2)
        assert seen_running, "the job never showed as RUNNING in Flink's /jobs/overview"
        assert (rows, distinct, values) == (N, N, N)
        seqs = duckdb.connect().execute(
            f"select list(cast(json_extract(decode(value), '$.seq') as int) order by 1) "
            f"from read_parquet('{glob}')").fetchone()[0]
        assert sorted(seqs) == list(range(N))
    finally:
        flink_rest.cancel_job(settings, job_name, result)


def test_the_expansion_of_the_kafka_read_carries_no_jars(stack):
    """Our expansion service leaves an EMBEDDED environment without dependencies: the job jar holds
    its classes, and the 190 jars of the service's classpath, copied into every submission, were
    about 5 s of the time to RUNNING (bench/PIPELINE.md)."""
    import apache_beam as beam

    from pipelines.kafka_io import ReadKafkaBatches

    p = beam.Pipeline()
    _ = p | ReadKafkaBatches(stack.settings, group_id="expansion-test", topic="expansion-test")
    environments = p.to_runner_api().components.environments.values()
    embedded = [e for e in environments if e.urn == "EMBEDDED"]
    assert embedded, [e.urn for e in environments]
    assert [len(e.dependencies) for e in embedded] == [0] * len(embedded)

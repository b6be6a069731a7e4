"""The foundation proof: Kafka -> Beam (Python) on Flink -> Parquet, every record exactly once.

A deliberately small job: it copies each Kafka record (coordinates, key, value) into
``<lake>/proof/date=/hour=/`` through the same idempotent chunk sink the real pipeline uses.
"""

from __future__ import annotations

import argparse
import datetime as dt

import apache_beam as beam
import pyarrow as pa

from pipelines.kafka_io import ReadKafkaRecords
from pipelines import stable_ids
from pipelines.options import flink_options
from pipelines.sinks import LakeRecord, WriteLakeChunks
from sensorlake.lake import TS, Dataset
from sensorlake.settings import Settings

SCHEMA = pa.schema([
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_timestamp", TS),
    ("key", pa.string()),
    ("value", pa.binary()),
])
# A dataset of the proof's own, laid out like raw/readings but by record time.
PROOF = Dataset("proof", SCHEMA, (("date", "DATE"), ("hour", "INTEGER")), "kafka_timestamp", "chunk",
                ("kafka_partition", "kafka_offset"), (), ("kafka_partition", "kafka_offset"))


def to_lake_record(rec) -> LakeRecord:
    ts = dt.datetime.fromtimestamp(rec.timestamp_ms / 1000, tz=dt.timezone.utc)
    row = {"kafka_partition": rec.partition, "kafka_offset": rec.offset, "kafka_timestamp": ts,
           "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None, "value": rec.value}
    return LakeRecord(rec.partition, rec.offset, PROOF.name, row)


def build(p: beam.Pipeline, settings: Settings, topic: str, flush_seconds: float) -> None:
    (p
     | "ReadKafka" >> ReadKafkaRecords(settings, group_id=f"sensorlake-proof-{topic}", topic=topic)
     | "ToLakeRecord" >> beam.Map(to_lake_record)
     | "WriteParquet" >> WriteLakeChunks(settings.lake, {PROOF.name: PROOF}, flush_seconds=flush_seconds))


def run(argv: list[str] | None = None, settings: Settings | None = None) -> beam.runners.runner.PipelineResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--flush-seconds", type=float, default=5.0)
    parser.add_argument("--job-name", default="sensorlake-proof")
    args = parser.parse_args(argv)
    settings = settings or Settings.load()
    p = stable_ids.pipeline(flink_options(settings, args.job_name))
    build(p, settings, args.topic, args.flush_seconds)
    return p.run()

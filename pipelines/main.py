"""The Sensorlake streaming job: every Kafka record into the raw lake or rejected/, once.

Kafka (KafkaIO, CreateTime) -> ParseReadings -> DedupeReadings -> WriteLakeChunks
  raw/readings/date=/hour=/      every distinct reading, verbatim payload kept
  rejected/readings/date=/       payloads that are not readings, with the reason
  raw/sensors/version=<UTC>/     the registry as read, stored when the job starts
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.dedupe import DedupeReadings
from pipelines.kafka_io import ReadKafkaRecords
from pipelines.options import flink_options
from pipelines.parsing import ParseReadings
from pipelines.schemas import RAW_READINGS_DATASET, SCHEMAS
from pipelines.sinks import WriteLakeChunks
from sensorlake.registry import parse_registry
from sensorlake.settings import Settings

JOB_NAME = "sensorlake-lake"
PIPELINE_SETTINGS = ["lake", "registry", "kafka_bootstrap", "kafka_topic", "job_server_port", "artifact_port",
                     "expansion_port", "flink_rest_port", "environment_type", "environment_config",
                     "parallelism", "checkpoint_interval_ms", "log_level"]


def store_registry_version(lake: str, raw: bytes, now: dt.datetime | None = None) -> str | None:
    """Writes raw/sensors/version=<UTC>/sensors.json unless the newest version has the same bytes."""
    base = f"{lake.rstrip('/')}/raw/sensors"
    digest = hashlib.sha256(raw).hexdigest()
    existing = sorted(m.path for m in FileSystems.match([f"{base}/version=*/sensors.json"])[0].metadata_list)
    if existing:
        with FileSystems.open(existing[-1]) as fh:
            if hashlib.sha256(fh.read()).hexdigest() == digest:
                return None
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H-%M-%SZ")
    path = f"{base}/version={stamp}/sensors.json"
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileSystems.create(path) as fh:
        fh.write(raw)
    return path


def build(p: beam.Pipeline, settings: Settings, registry_bytes: bytes, flush_seconds: float,
          chunk_size: int, group_id: str) -> None:
    registry = parse_registry(registry_bytes)
    (p
     | "ReadKafka" >> ReadKafkaRecords(settings, group_id=group_id)
     | "Parse" >> beam.ParDo(ParseReadings(registry))
     | "Dedupe" >> DedupeReadings(RAW_READINGS_DATASET)
     | "WriteLake" >> WriteLakeChunks(settings.lake, SCHEMAS, chunk_size=chunk_size, flush_seconds=flush_seconds))


def parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flush-seconds", type=float, default=30.0,
                   help="a record is in a visible Parquet file at most this long after it is read")
    p.add_argument("--chunk-size", type=int, default=10_000, help="Kafka offsets per raw file")
    p.add_argument("--group-id", default="sensorlake-lake", help="Kafka consumer group (offset commits)")
    p.add_argument("--job-name", default=JOB_NAME, help="name of the job in the Flink dashboard")
    Settings.add_arguments(p, PIPELINE_SETTINGS)
    return p


def run(argv: list[str] | None = None, settings: Settings | None = None):
    args = parser().parse_args(argv)
    return submit(args, settings or Settings.from_args(args))


def submit(args: argparse.Namespace, settings: Settings):
    """Stores the registry version and submits the job; returns the PipelineResult."""
    raw = Path(settings.registry).read_bytes()
    parse_registry(raw)  # fail fast, with the registry's own message
    store_registry_version(settings.lake, raw)
    p = beam.Pipeline(options=flink_options(settings, args.job_name))
    build(p, settings, raw, args.flush_seconds, args.chunk_size, args.group_id)
    return p.run()

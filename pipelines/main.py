"""The Sensorlake streaming job: every Kafka record into the lake once, and 1-minute rows with quality.

Kafka (ReadKafkaBatches, Java) -> WriteRawLake: per Kafka partition, parse, de-duplicate, write
                                    |   raw/readings/date=/hour=/   every distinct reading, payload kept
                                    |   rejected/readings/date=/    payloads that are not readings, and why
                                    +-> readings -> ResampleAndScore -> WriteWindowFiles
                                          curated/readings_1min/date=/        per sensor-minute, in-range values
                                          quality/sensor_quality_1min/date=/  completeness, validity, status
  raw/sensors/version=<UTC>/  each registry version, stored at start and whenever the file changes

One job rather than two: both branches need the same parse, and one consumer group keeps the raw
lake and the aggregates at the same Kafka offsets in every checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import apache_beam as beam

from pipelines.kafka_io import ReadKafkaBatches
from pipelines import stable_ids
from pipelines.options import flink_options
from pipelines.raw_lake import WriteRawLake
from pipelines.registry_source import RegistrySource, store_registry_version
from pipelines.sinks import WriteWindowFiles
from pipelines.windows import ResampleAndScore, WindowSettings
from sensorlake import lake
from sensorlake.quality import Thresholds
from sensorlake.registry import parse_registry
from sensorlake.settings import ROLE_SETTINGS, Settings

JOB_NAME = Settings.model_fields["job_name"].default
def build(p: beam.Pipeline, settings: Settings, registry: RegistrySource, flush_seconds: float,
          chunk_size: int, group_id: str, window_flush_seconds: float) -> None:
    readings = (p
                | "ReadKafka" >> ReadKafkaBatches(settings, group_id=group_id)
                | "RawLake" >> WriteRawLake(registry, settings.lake, lake.BY_NAME,
                                            topic_prefix=settings.mqtt_topic_prefix, chunk_size=chunk_size,
                                            flush_seconds=flush_seconds))
    (readings
     | "ResampleAndScore" >> ResampleAndScore(
         registry, Thresholds.from_settings(settings), WindowSettings.from_settings(settings),
         settings.heartbeat_interval_ms)
     | "WriteMinutes" >> WriteWindowFiles(settings.lake, lake.BY_NAME, settings.window_shards,
                                          window_flush_seconds))


def parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flush-seconds", type=float, default=10.0,
                   help="a record is in a visible Parquet file at most this long after it is read")
    p.add_argument("--window-flush-seconds", type=float, default=5.0,
                   help="a 1-minute row is in a visible Parquet file at most this long after its window closed")
    p.add_argument("--chunk-size", type=int, default=10_000, help="Kafka offsets per raw file")
    p.add_argument("--group-id", default="sensorlake-lake", help="Kafka consumer group (offset commits)")
    p.add_argument("--savepoint-path", default="",
                   help="resume from this savepoint (or retained checkpoint): Kafka offsets, de-duplication "
                        "and open 1-minute windows continue where the stopped job left them")
    Settings.add_arguments(p, ROLE_SETTINGS["pipeline"])
    return p


def run(argv: list[str] | None = None, settings: Settings | None = None):
    """Submits the job; flags in argv override the given settings (default: env and .env)."""
    args = parser().parse_args(argv)
    return submit(args, Settings.from_args(args) if settings is None else settings.with_args(args))


def submit(args: argparse.Namespace, settings: Settings):
    """Stores the registry version and submits the job; returns the PipelineResult."""
    raw = Path(settings.registry).read_bytes()
    parse_registry(raw)  # fail fast, with the registry's own message
    store_registry_version(settings.lake, raw)
    registry = RegistrySource(settings.registry, settings.lake, settings.registry_refresh_s, initial=raw)
    extra = [f"--savepoint_path={args.savepoint_path}"] if args.savepoint_path else []
    p = stable_ids.pipeline(flink_options(settings, settings.job_name, extra))
    build(p, settings, registry, args.flush_seconds, args.chunk_size, args.group_id, args.window_flush_seconds)
    return p.run()

"""The lake, described once: its datasets, their schemas, folders, file names, keys and which row wins.

Everything that writes, reads or maintains the lake takes its layout from here: the pipeline's
sinks (file names and partition folders), the SQL views (globs, Hive partition types, the
one-row-per-key rule), compaction (partitions, unique keys, the preferred copy, sort order), the
catalogue (titles, time columns, primary keys) and the tests' lake fixture. No other module spells a
partition folder or a file name.

    <lake>/raw/readings/date=YYYY-MM-DD/hour=HH/part-pPPP-cCCCCCCCC.parquet   per Kafka offset chunk
    <lake>/rejected/readings/date=YYYY-MM-DD/part-pPPP-cCCCCCCCC.parquet
    <lake>/curated/readings_1min/date=YYYY-MM-DD/part-HHMM-sSS.parquet         per minute and shard
    <lake>/quality/sensor_quality_1min/date=YYYY-MM-DD/part-HHMM-sSS.parquet
    <lake>/raw/sensors/version=YYYY-MM-DDTHH-MM-SSZ/sensors.json              every registry version
    <lake>/_catalog/  <lake>/_compaction/                                     not data (hidden from globs)

File names are a function of Kafka coordinates (chunks) or of the window (minutes), so a replay
rewrites a file instead of adding a copy. Names starting with ``.`` or ``_`` are never data:
temporary files, compaction staging and the catalogue are invisible to every reader's glob.

Every schema field carries a ``description`` (the catalogue and the SQL views show it); timestamps
are ``timestamp[ms, UTC]`` so DuckDB, pandas and Spark read them as instants.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

UTC = dt.timezone.utc
TS = pa.timestamp("ms", tz="UTC")

RAW_READINGS_DATASET = "raw/readings"
REJECTED_READINGS_DATASET = "rejected/readings"
READINGS_1MIN_DATASET = "curated/readings_1min"
SENSOR_QUALITY_DATASET = "quality/sensor_quality_1min"
REGISTRY_DIR = "raw/sensors"
CATALOG_DIR = "_catalog"
COMPACTION_DIR = "_compaction"


def _f(name: str, type_: pa.DataType, description: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"description": description.encode()})


# ====================================================================== schemas
RAW_READINGS = pa.schema([
    _f("sensor_id", pa.string(), "Sensor id as sent (JSON integers converted to text)."),
    _f("event_time", TS, "When the sensor measured the value (payload timestamp, UTC)."),
    _f("value", pa.float64(), "Measured value, finite."),
    _f("unit", pa.string(), "Unit from the payload, else from the sensor registry, else empty."),
    _f("type", pa.string(), "Measurement type from the payload, else the registry, else empty."),
    _f("seq", pa.int64(), "Per-sensor message counter from the sender, if it sends one.", True),
    _f("registered", pa.bool_(), "Whether the sensor id was in the registry at parse time."),
    _f("payload", pa.binary(), "The MQTT payload bytes verbatim, for audit and re-parsing."),
    _f("mqtt_topic", pa.string(), "MQTT topic the reading arrived on (Kafka header mqtt_topic).",
       True),
    _f("kafka_partition", pa.int32(), "Kafka partition of the record."),
    _f("kafka_offset", pa.int64(), "Kafka offset of the record; with the partition, a unique key."),
    _f("kafka_timestamp", TS, "Kafka record timestamp (CreateTime set by the bridge)."),
    _f("ingest_time", TS, "When the pipeline parsed the record (processing time)."),
])

REJECTED_READINGS = pa.schema([
    _f("payload", pa.binary(), "The MQTT payload bytes verbatim (empty if the record had none)."),
    _f("reason_code", pa.string(), "Stable machine-readable rejection code (see REASON_CODES)."),
    _f("reason", pa.string(), "Human-readable explanation of the rejection."),
    _f("kafka_partition", pa.int32(), "Kafka partition of the record."),
    _f("kafka_offset", pa.int64(), "Kafka offset of the record; with the partition, a unique key."),
    _f("kafka_timestamp", TS, "Kafka record timestamp (CreateTime set by the bridge)."),
    _f("mqtt_topic", pa.string(), "MQTT topic the payload arrived on (Kafka header mqtt_topic).",
       True),
    _f("ingest_time", TS, "When the pipeline parsed the record (processing time)."),
])

_WINDOW = [
    _f("sensor_id", pa.string(), "Sensor id."),
    _f("window_start", TS, "Start of the 1-minute event-time window (inclusive, UTC)."),
    _f("window_end", TS, "End of the 1-minute event-time window (exclusive, UTC)."),
]
_VERSION = [
    _f("version", pa.int32(), "Pane of this sensor-minute: 0 when first written, +1 per late "
       "update. Files are rewritten in place, so one row per sensor-minute is the rule; if two "
       "ever coexist (a late update after compaction), the highest version is current."),
    _f("emitted_at", TS, "When the pipeline computed this version of the row (processing time)."),
]

READINGS_1MIN = pa.schema([
    *_WINDOW,
    _f("count", pa.int64(), "Distinct in-range readings in the window (duplicates and "
       "out-of-range values excluded)."),
    _f("mean", pa.float64(), "Mean of the in-range values; null when count is 0.", True),
    _f("min", pa.float64(), "Smallest in-range value; null when count is 0.", True),
    _f("max", pa.float64(), "Largest in-range value; null when count is 0.", True),
    _f("stddev", pa.float64(), "Sample standard deviation (n-1) of the in-range values, as SQL "
       "stddev/stddev_samp; null when count < 2.", True),
    _f("first_event_time", TS, "Event time of the earliest in-range reading in the window.", True),
    _f("last_event_time", TS, "Event time of the latest in-range reading in the window.", True),
    _f("unit", pa.string(), "Unit of the values (registry, else the readings)."),
    *_VERSION,
])

SENSOR_QUALITY = pa.schema([
    *_WINDOW,
    _f("expected", pa.float64(), "Readings expected in the window: 60000 / interval_ms of the "
       "registry; null for unregistered sensors.", True),
    _f("received", pa.int64(), "Distinct readings received (duplicates count once)."),
    _f("completeness", pa.float64(), "min(1, received / expected); null when unregistered.", True),
    _f("in_range", pa.int64(), "Received readings inside the registry's [min, max]."),
    _f("out_of_range", pa.int64(), "Received readings outside the registry's [min, max]."),
    _f("range_validity", pa.float64(), "in_range / received; null when received is 0 or the "
       "sensor is unregistered.", True),
    _f("late", pa.int64(), "Readings that arrived after the sensor's watermark had passed the "
       "window (kept and counted; they updated the row)."),
    _f("duplicates", pa.int64(), "Readings received again with the same key (sensor_id, seq, or "
       "event time when there is no seq)."),
    _f("status", pa.string(), "missing | bad | degraded | ok | unregistered (see thresholds)."),
    _f("thresholds_version", pa.string(), "The quality thresholds the status was computed with."),
    *_VERSION,
])


# ====================================================================== datasets
def _ms(t: int | dt.datetime) -> int:
    return t if isinstance(t, int) else int(t.timestamp() * 1000) if t.tzinfo else \
        int(t.replace(tzinfo=UTC).timestamp() * 1000)


@functools.lru_cache(maxsize=4096)
def _hour_folders(hour: int) -> tuple[str, str]:
    """("date=YYYY-MM-DD", "hour=HH") of an hour since the epoch (cached: rows come in runs)."""
    t = dt.datetime.fromtimestamp(hour * 3600, UTC)
    return f"date={t:%Y-%m-%d}", f"hour={t:%H}"


@dataclass(frozen=True)
class Dataset:
    """One dataset of the lake: where its files are, what they hold and which row is current.

    partition_keys    Hive folder keys, outermost first, with the DuckDB type of each
    partition_column  the time column whose UTC date (and hour) names a row's folder
    files             "chunk": one file per Kafka partition and offset chunk (raw, rejected);
                      "minute": one file per 1-minute window and shard (curated, quality)
    unique_key        one row per these columns ...
    winner            ... and this order picks the current one among copies
    versioned         rows carry a version (late updates): readers keep only the winner
    sort              order of the rows in a compacted file (Parquet statistics then skip)
    """

    name: str
    schema: pa.Schema
    partition_keys: tuple[tuple[str, str], ...]
    partition_column: str
    files: str
    unique_key: tuple[str, ...]
    winner: tuple[tuple[str, str], ...]
    sort: tuple[str, ...]
    versioned: bool = False
    row_group_rows: int = 65536
    view: str = ""
    title: str = ""
    description: str = ""
    time_column: str | None = None     # coverage and freshness are measured on it ...
    latest_column: str | None = None   # ... up to the newest instant it covers
    monitored: bool = True             # freshness thresholds apply (rejected/: no news is good news)

    def __post_init__(self):
        if self.partition_column not in self.schema.names:  # a row's folder is a function of the row
            raise ValueError(f"{self.name}: partition column {self.partition_column!r} is not in the schema")

    # ---------------------------------------------------------------- folders and files
    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.partition_keys)

    @property
    def span(self) -> dt.timedelta:
        """How much time one partition folder covers."""
        return dt.timedelta(hours=1) if "hour" in self.keys else dt.timedelta(days=1)

    def partition_path(self, t: int | dt.datetime) -> str:
        """The partition folder (relative to the dataset) of an instant: epoch ms or a datetime."""
        date, hour = _hour_folders(_ms(t) // 3_600_000)
        return f"{date}/{hour}" if "hour" in self.keys else date

    def partition_of(self, row: dict) -> str:
        return self.partition_path(row[self.partition_column])

    def split_by_partition(self, table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
        """(partition folder, its rows) of a table of this dataset, rows kept in their order;
        partition_of for a whole table at once (the partition column as epoch ms or timestamps)."""
        span_ms = self.span // dt.timedelta(milliseconds=1)
        buckets = np.floor_divide(table.column(self.partition_column).cast(pa.int64()).to_numpy(), span_ms)
        first, last = (buckets.min(), buckets.max()) if len(buckets) else (0, 0)
        if first == last:
            if len(buckets):
                yield self.partition_path(int(first) * span_ms), table
            return
        for bucket in np.unique(buckets):
            yield self.partition_path(int(bucket) * span_ms), table.filter(pa.array(buckets == bucket))

    def folder(self, lake: str) -> str:
        return f"{lake.rstrip('/')}/{self.name}"

    def glob(self, lake: str) -> str:
        """Every data file of the dataset, for readers (DuckDB, pyarrow, Spark)."""
        return f"{self.folder(lake)}/{'/'.join(k + '=*' for k in self.keys)}/*.parquet"

    def chunk_file(self, lake: str, partition_path: str, kafka_partition: int, chunk: int) -> str:
        assert self.files == "chunk", self.name
        return f"{self.folder(lake)}/{partition_path}/part-p{kafka_partition:03d}-c{chunk:09d}.parquet"

    def minute_file(self, lake: str, window_start_ms: int, shard: int) -> str:
        assert self.files == "minute", self.name
        t = dt.datetime.fromtimestamp(window_start_ms // 1000, UTC)
        return f"{self.folder(lake)}/{self.partition_path(window_start_ms)}/part-{t:%H%M}-s{shard:02d}.parquet"

    def partitions(self, root: Path) -> list[tuple[Path, dt.datetime]]:
        """The partition folders under a local lake root, with the start of the time each covers."""
        out: list[tuple[Path, dt.datetime]] = []
        base = root / self.name
        for day_dir in sorted(base.glob("date=*")):
            try:
                day = dt.datetime.strptime(day_dir.name[len("date="):], "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                continue
            if not day_dir.is_dir():
                continue
            if "hour" not in self.keys:
                out.append((day_dir, day))
                continue
            for hour_dir in sorted(day_dir.glob("hour=*")):
                hour = hour_dir.name[len("hour="):]
                if hour_dir.is_dir() and hour.isdigit() and int(hour) < 24:
                    out.append((hour_dir, day + dt.timedelta(hours=int(hour))))
        return out

    def staging_glob(self, marker: str) -> str:
        """Hidden sibling folders of partitions named ``.<partition>.<marker>*`` (relative glob)."""
        *outer, last = self.keys
        return "/".join([*(k + "=*" for k in outer), f".{last}=*.{marker}*"])


def minute_file_start(path: str | Path) -> int | None:
    """The window start (epoch ms) a minute file (Dataset.minute_file) holds, or None for another file."""
    p = Path(path)
    try:
        day = dt.date.fromisoformat(p.parent.name[len("date="):])
        hhmm = p.name.split("-")[1]
        t = dt.datetime(day.year, day.month, day.day, int(hhmm[:2]), int(hhmm[2:4]), tzinfo=UTC)
    except (IndexError, ValueError):
        return None
    return int(t.timestamp() * 1000)


_WINNER_VERSION = (("version", "descending"), ("emitted_at", "descending"))
_WINNER_LATEST = (("ingest_time", "descending"),)
_BY_DAY = (("date", "DATE"),)

RAW = Dataset(
    RAW_READINGS_DATASET, RAW_READINGS, (("date", "DATE"), ("hour", "INTEGER")), "event_time", "chunk",
    ("kafka_partition", "kafka_offset"), _WINNER_LATEST, ("sensor_id", "event_time"),
    view="readings", title="Raw readings (bronze)",
    description="Every distinct reading as received (bronze); payload kept verbatim.",
    time_column="event_time", latest_column="event_time")
REJECTED = Dataset(
    REJECTED_READINGS_DATASET, REJECTED_READINGS, _BY_DAY, "kafka_timestamp", "chunk",
    ("kafka_partition", "kafka_offset"), _WINNER_LATEST, ("kafka_timestamp", "kafka_partition", "kafka_offset"),
    view="rejected", title="Rejected payloads (dead letters)",
    description="Payloads that were not valid readings, with the reason and Kafka coordinates.",
    time_column="kafka_timestamp", latest_column="kafka_timestamp", monitored=False)


def _per_minute(name: str, schema: pa.Schema, view: str, title: str, description: str) -> Dataset:
    """A dataset of one row per sensor-minute, rewritten in place by late updates (version + 1)."""
    return Dataset(name, schema, _BY_DAY, "window_start", "minute", ("sensor_id", "window_start"), _WINNER_VERSION,
                   ("sensor_id", "window_start"), versioned=True, row_group_rows=16384, view=view, title=title,
                   description=description, time_column="window_start", latest_column="window_end")


MINUTES = _per_minute(
    READINGS_1MIN_DATASET, READINGS_1MIN, "readings_1min", "1-minute readings per sensor (silver)",
    "1-minute mean/min/max/count of in-range values per sensor; one row per sensor-minute.")
QUALITY = _per_minute(
    SENSOR_QUALITY_DATASET, SENSOR_QUALITY, "sensor_quality", "Sensor quality per minute",
    "Completeness, range validity, late and duplicate readings and status per sensor-minute.")

DATASETS: tuple[Dataset, ...] = (RAW, MINUTES, QUALITY, REJECTED)
BY_NAME: dict[str, Dataset] = {d.name: d for d in DATASETS}
SCHEMAS: dict[str, pa.Schema] = {d.name: d.schema for d in DATASETS}


# ====================================================================== the registry's versions
REGISTRY_FILE = "sensors.json"
REGISTRY_VERSION_FORMAT = "%Y-%m-%dT%H-%M-%SZ"  # sorts as time: the greatest name is the newest
REGISTRY_VERSION_REGEX = r"version=([^/]+)/sensors\.json$"  # the version of a stored file's path


def registry_folder(lake: str) -> str:
    return f"{lake.rstrip('/')}/{REGISTRY_DIR}"


def registry_glob(lake: str) -> str:
    return f"{registry_folder(lake)}/version=*/{REGISTRY_FILE}"


def registry_version_path(lake: str, when: dt.datetime) -> str:
    return f"{registry_folder(lake)}/version={when.astimezone(UTC):{REGISTRY_VERSION_FORMAT}}/{REGISTRY_FILE}"


def registry_version_of(path: str | Path) -> str:
    """The version (UTC stamp) of a stored registry file."""
    return Path(path).parent.name[len("version="):]


def is_hidden(name: str) -> bool:
    """Names no reader's glob should take as data: temporary files, staging, the catalogue."""
    return name.startswith((".", "_"))

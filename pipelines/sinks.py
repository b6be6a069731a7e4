"""Idempotent Parquet sinks for unbounded input.

Why not WriteToParquet: a streaming file sink names its files per pane, and a Flink restore
replays the records read after the last checkpoint into different panes, which duplicates rows.
Here a file's name and content are a pure function of Kafka coordinates: records are grouped into
*chunks* of consecutive offsets of one Kafka partition, and each flush rewrites (atomically) the
chunk's files with every row seen so far. A replay therefore rewrites the same files with the same
rows, never adds a second copy. A chunk's state is released once every offset of it has been seen,
so memory is bounded by chunk_size rows per open chunk.

The 1-minute datasets are keyed by window instead: one file per minute (and shard), rewritten with
the newest version of each sensor's row, so readers see one current row per sensor-minute.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections import defaultdict
from typing import Iterable, Mapping, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.coders import PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)

from pipelines.batching import Batch, BatchCoder, group_per_bundle, shard_of
from sensorlake.lake import Dataset


class LakeRecord(NamedTuple):
    """One Kafka record's fate: which dataset it goes to, if any (the dataset says where in it).

    dataset None means "consumed, written nowhere" (a de-duplicated reading): it still counts
    towards the chunk's completeness.
    """

    kafka_partition: int
    kafka_offset: int
    dataset: str | None
    row: dict | None


def write_parquet_atomically(path: str, table: pa.Table) -> None:
    """Readers see the old file or the new one, never a half-written file."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return
    # Object stores: a single PUT is atomic per object.
    with FileSystems.create(path) as fh:
        fh.write(data)


def read_parquet_rows(path: str) -> list[dict]:
    """Rows of an existing lake file, or [] when there is none (yet)."""
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path) as fh:
        return pq.read_table(pa.BufferReader(fh.read())).to_pylist()


class _BufferedWriter(beam.DoFn):
    """Buffers a key's rows and writes them on a processing-time timer armed by the first
    unflushed row, so a file is rewritten at most every ``flush_seconds`` however fast rows come,
    and an idle key costs nothing. Subclasses say what a flush writes."""

    ROWS = BagStateSpec("rows", BatchCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    WRITTEN = ReadModifyWriteStateSpec("written", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)

    def __init__(self, lake: str, datasets: Mapping[str, Dataset], flush_seconds: float):
        self._lake = lake.rstrip("/")
        self._datasets = datasets
        self._flush_seconds = flush_seconds
        self._rows_written = Metrics.counter("sinks", "rows_written")
        self._files_written = Metrics.counter("sinks", "files_written")

    def process(self, element, rows=beam.DoFn.StateParam(ROWS), armed=beam.DoFn.StateParam(ARMED),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, batch = element
        self.buffer(batch, rows, armed, flush)

    def buffer(self, batch: list, rows, armed, flush) -> None:
        rows.add(batch)  # one bag entry per batch: one state append per key per bundle
        if not armed.read():
            flush.set(time.time() + self._flush_seconds)
            armed.write(True)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, rows=beam.DoFn.StateParam(ROWS),
                 armed=beam.DoFn.StateParam(ARMED), written=beam.DoFn.StateParam(WRITTEN)):
        armed.clear()  # the next row of this key arms the timer again
        self.flush(key, rows, written)

    def flush(self, key, rows, written) -> None:
        raise NotImplementedError

    @staticmethod
    def buffered(rows) -> Iterable:
        """The buffered records, in the order they came."""
        for batch in rows.read():
            yield from batch

    def _write(self, path: str, dataset: str, group: list[dict]) -> None:
        write_parquet_atomically(path, pa.Table.from_pylist(group, schema=self._datasets[dataset].schema))
        self._rows_written.inc(len(group))
        self._files_written.inc()


class ChunkWriter(_BufferedWriter):
    """Keyed by Kafka partition: each flush rewrites the files of every chunk that gained rows, and
    a chunk whose offsets have all been seen is sealed (its rows leave state)."""

    def __init__(self, lake: str, datasets: Mapping[str, Dataset], chunk_size: int, flush_seconds: float):
        super().__init__(lake, datasets, flush_seconds)
        self._chunk_size = chunk_size
        self._chunks_sealed = Metrics.counter("sinks", "chunks_sealed")

    def flush(self, key, rows, written) -> None:
        kafka_partition = key
        chunks: dict[int, dict[int, LakeRecord]] = defaultdict(dict)
        for r in self.buffered(rows):  # a replayed record replaces itself
            chunks[r.kafka_offset // self._chunk_size][r.kafka_offset] = r
        counts = written.read() or {}  # chunk -> records in its files
        still_open, sealed = Batch(), False
        for chunk, by_offset in sorted(chunks.items()):
            n = len(by_offset)
            before = counts.get(chunk)
            if n != (before or 0):
                # No state about this chunk (a job started again without its checkpoint): the
                # chunk's files may already hold rows of offsets this run will never see again.
                self._write_chunk(kafka_partition, chunk, by_offset.values(), merge=before is None)
                counts[chunk] = n
            if n >= self._chunk_size:
                del counts[chunk]
                sealed = True
                self._chunks_sealed.inc()
            else:
                still_open.extend(by_offset.values())
        if sealed:  # state shrinks; otherwise the bag already holds the open chunks' rows
            rows.clear()
            if still_open:
                rows.add(still_open)
        written.write(counts)

    def _write_chunk(self, kafka_partition: int, chunk: int, records: Iterable[LakeRecord], merge: bool) -> None:
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in sorted(records, key=lambda r: r.kafka_offset):
            if r.dataset is not None:
                groups[(r.dataset, self._datasets[r.dataset].partition_of(r.row))].append(r.row)
        for (dataset, part), group in groups.items():
            path = self._datasets[dataset].chunk_file(self._lake, part, kafka_partition, chunk)
            if merge:
                mine = {row["kafka_offset"] for row in group}
                kept = [row for row in read_parquet_rows(path) if row["kafka_offset"] not in mine]
                group = sorted(kept + group, key=lambda row: row["kafka_offset"])
            self._write(path, dataset, group)


class WriteLakeChunks(beam.PTransform):
    """Writes LakeRecords to their dataset's chunk files (sensorlake.lake.Dataset.chunk_file)."""

    def __init__(self, lake: str, datasets: Mapping[str, Dataset], chunk_size: int = 10_000,
                 flush_seconds: float = 30.0):
        super().__init__()
        self._lake = lake
        self._datasets = datasets
        self._chunk_size = chunk_size
        self._flush_seconds = flush_seconds

    def expand(self, records):
        return (
            records
            | "KeyByPartition" >> beam.Map(lambda r: (r.kafka_partition, r))
            | "BatchByPartition" >> group_per_bundle()
            | "FlushChunks" >> beam.ParDo(
                ChunkWriter(self._lake, self._datasets, self._chunk_size, self._flush_seconds))
        )


class _WindowFileWriter(_BufferedWriter):
    """Rewrites a minute's file with the newest version of each sensor's row.

    The file is merged with what is on disk, not just with state: its rows may come from before a
    restart, and a late update must not erase the other sensors of that minute.
    """

    def flush(self, key, rows, written) -> None:
        dataset, start, shard = key
        newest: dict[str, dict] = {}
        for r in self.buffered(rows):
            old = newest.get(r.sensor_id)
            if old is None or r.row["version"] >= old["version"]:
                newest[r.sensor_id] = r.row
        rows.clear()
        if not newest:
            return
        path = self._datasets[dataset].minute_file(self._lake, start, shard)
        merged = {row["sensor_id"]: row for row in read_parquet_rows(path)}
        for sensor_id, row in newest.items():
            old = merged.get(sensor_id)
            if old is None or row["version"] >= old["version"]:
                merged[sensor_id] = row
        self._write(path, dataset, [merged[k] for k in sorted(merged)])


class WriteWindowFiles(beam.PTransform):
    """Writes WindowRows to their dataset's minute files; shard = shard_of(sensor_id, shards)."""

    def __init__(self, lake: str, datasets: Mapping[str, Dataset], shards: int = 1, flush_seconds: float = 10.0):
        super().__init__()
        self._lake = lake
        self._datasets = datasets
        self._shards = shards
        self._flush_seconds = flush_seconds

    def expand(self, rows):
        shards = self._shards
        return (
            rows
            | "KeyByMinuteFile" >> beam.Map(
                lambda r: ((r.dataset, r.window_start_ms, shard_of(r.sensor_id, shards)), r))
            | "BatchByMinuteFile" >> group_per_bundle()
            | "FlushMinuteFiles" >> beam.ParDo(_WindowFileWriter(self._lake, self._datasets, self._flush_seconds))
        )

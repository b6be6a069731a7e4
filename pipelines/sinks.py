"""Idempotent Parquet sinks for unbounded input.

Why not WriteToParquet: a streaming file sink names its files per pane, and a Flink restore
replays the records read after the last checkpoint into different panes, which duplicates rows.
Here a file's name and content are a pure function of Kafka coordinates: records are grouped into
*chunks* of consecutive offsets of one Kafka partition, and each flush rewrites (atomically) the
chunk's files with every row seen so far. A replay therefore rewrites the same files with the same
rows, never adds a second copy. A chunk's state is released once every offset of it has been seen,
so memory is bounded by chunk_size rows per open chunk. Those rows are buffered columnar (Arrow),
not as Python rows: every flush reads the whole buffer back, up to chunk_size rows per open chunk,
which as pickled dicts decoded into some twenty Python objects per row (one run each: 93.5 s of
Python CPU per million readings before, 88.5 s after, bench/PIPELINE.md).

The 1-minute datasets are keyed by window instead: one file per minute (and shard), rewritten with
the newest version of each sensor's row, so readers see one current row per sensor-minute.
"""

from __future__ import annotations

import io
import os
import pickle
import time
import uuid
from collections import defaultdict
from typing import Iterable, Mapping, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.coders import PickleCoder, coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)

from pipelines import worker_gc
from pipelines.batching import BatchCoder, group_per_bundle, shard_of
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


def read_parquet_table(path: str) -> pa.Table | None:
    """An existing lake file, or None when there is none (yet)."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as fh:
        return pq.read_table(pa.BufferReader(fh.read()))


def read_parquet_rows(path: str) -> list[dict]:
    """Rows of an existing lake file, or [] when there is none (yet)."""
    table = read_parquet_table(path)
    return [] if table is None else table.to_pylist()


def bare_schema(schema: pa.Schema) -> pa.Schema:
    """The schema without its descriptions: what buffered rows carry (state is written per bundle)."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


class ChunkRows:
    """Records of one Kafka partition, columnar: per dataset an Arrow table of its rows (bare
    schema); under None, the offsets consumed without a row (a table of kafka_offset)."""

    __slots__ = ("tables",)

    def __init__(self, tables: Mapping[str | None, pa.Table]):
        self.tables = dict(tables)

    def offsets(self) -> list[int]:
        return sorted(o for t in self.tables.values() for o in t.column("kafka_offset").to_pylist())

    @classmethod
    def concat(cls, pieces: Iterable["ChunkRows"]) -> "ChunkRows":
        parts: dict[str | None, list[pa.Table]] = defaultdict(list)
        for piece in pieces:
            for name, table in piece.tables.items():
                parts[name].append(table)
        return cls({name: tables[0] if len(tables) == 1 else pa.concat_tables(tables)
                    for name, tables in parts.items()})


class BufferedCoder(coders.Coder):
    """The buffer's state: ChunkRows as Arrow IPC streams, anything else as a BatchCoder batch.

    The two are told apart by a prefix no pickle starts with, so a savepoint written when the
    chunk buffer held pickled LakeRecords still restores (ChunkWriter converts those on read).
    """

    MAGIC = b"SLCR1"

    def __init__(self):
        self._batches = BatchCoder()

    def encode(self, value):
        if not isinstance(value, ChunkRows):
            return self._batches.encode(value)
        streams = {}
        for name, table in value.tables.items():
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            streams[name] = sink.getvalue().to_pybytes()
        return self.MAGIC + pickle.dumps(streams, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded):
        if not encoded.startswith(self.MAGIC):
            return self._batches.decode(encoded)
        streams = pickle.loads(memoryview(encoded)[len(self.MAGIC):])
        return ChunkRows({name: pa.ipc.open_stream(pa.py_buffer(data)).read_all()
                          for name, data in streams.items()})

    def is_deterministic(self):
        return False


class _BufferedWriter(beam.DoFn):
    """Buffers a key's rows and writes them on a processing-time timer armed by the first
    unflushed row, so a file is rewritten at most every ``flush_seconds`` however fast rows come,
    and an idle key costs nothing. Subclasses say what a flush writes."""

    ROWS = BagStateSpec("rows", BufferedCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    WRITTEN = ReadModifyWriteStateSpec("written", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)

    def __init__(self, lake: str, datasets: Mapping[str, Dataset], flush_seconds: float):
        self._lake = lake.rstrip("/")
        self._datasets = datasets
        self._flush_seconds = flush_seconds
        self._rows_written = Metrics.counter("sinks", "rows_written")
        self._files_written = Metrics.counter("sinks", "files_written")

    def setup(self):
        worker_gc.tune()

    def process(self, element, rows=beam.DoFn.StateParam(ROWS), armed=beam.DoFn.StateParam(ARMED),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, batch = element
        self.buffer(batch, rows, armed, flush)

    def buffer(self, batch: list, rows, armed, flush) -> None:
        rows.add(self.buffered_form(batch))  # one bag entry per batch: one state append per key per bundle
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

    def buffered_form(self, batch: list):
        """What a batch is kept as in state until the flush."""
        return batch

    @staticmethod
    def buffered(rows) -> Iterable:
        """The buffered records, in the order they came."""
        for batch in rows.read() or ():
            yield from batch

    def _write(self, path: str, dataset: str, group: list[dict]) -> None:
        self._write_table(path, dataset, pa.Table.from_pylist(group, schema=self._datasets[dataset].schema))

    def _write_table(self, path: str, dataset: str, table: pa.Table) -> None:
        write_parquet_atomically(path, table)
        self._rows_written.inc(table.num_rows)
        self._files_written.inc()


class ChunkWriter(_BufferedWriter):
    """Keyed by Kafka partition: each flush rewrites the files of every chunk that gained rows, and
    a chunk whose offsets have all been seen is sealed (its rows leave state).

    Rows wait in state as ChunkRows, one entry per bundle, converted once from the bundle's
    LakeRecords; a flush works on whole columns (numpy for the offsets, Arrow for the rows)."""

    def __init__(self, lake: str, datasets: Mapping[str, Dataset], chunk_size: int, flush_seconds: float):
        super().__init__(lake, datasets, flush_seconds)
        self._chunk_size = chunk_size
        self._chunks_sealed = Metrics.counter("sinks", "chunks_sealed")
        self._bare = {name: bare_schema(d.schema) for name, d in datasets.items() if d.files == "chunk"}
        missing = [name for name, schema in self._bare.items() if "kafka_offset" not in schema.names]
        if missing:
            raise ValueError(f"chunk datasets need a kafka_offset column: {missing}")

    def buffered_form(self, batch: Iterable[LakeRecord] | ChunkRows) -> ChunkRows:
        if isinstance(batch, ChunkRows):
            return batch
        rows: dict[str, list[dict]] = defaultdict(list)
        consumed: list[int] = []
        for r in batch:
            if r.dataset is None:
                consumed.append(r.kafka_offset)
            else:
                rows[r.dataset].append(r.row)
        tables: dict[str | None, pa.Table] = {
            name: pa.Table.from_pylist(group, schema=self._bare[name]) for name, group in rows.items()}
        if consumed:
            tables[None] = pa.table({"kafka_offset": pa.array(consumed, pa.int64())})
        return ChunkRows(tables)

    def flush(self, key, rows, written) -> None:
        kafka_partition = key
        entries = [self.buffered_form(e) for e in rows.read() or ()]  # older jobs buffered LakeRecords
        names: list[str | None] = list(dict.fromkeys(n for e in entries for n in e.tables))
        parts: dict[str | None, list[pa.Table]] = defaultdict(list)
        done: dict[str | None, int] = defaultdict(int)
        offsets, which, index = [], [], []  # per buffered row: its offset, dataset and row in that dataset
        for e in entries:
            for name, table in e.tables.items():
                offsets.append(table.column("kafka_offset").to_numpy())
                which.append(np.full(table.num_rows, names.index(name), np.int16))
                index.append(np.arange(done[name], done[name] + table.num_rows))
                parts[name].append(table)
                done[name] += table.num_rows
        if not offsets:
            return
        offsets, which, index = np.concatenate(offsets), np.concatenate(which), np.concatenate(index)
        # A replayed record replaces itself: the last copy of each offset wins. np.unique sorts, so
        # what is kept is in offset order, and so are the rows of every chunk.
        _, first_from_end = np.unique(offsets[::-1], return_index=True)
        kept = len(offsets) - 1 - first_from_end
        offsets, which, index = offsets[kept], which[kept], index[kept]
        tables = {name: pa.concat_tables(ts) for name, ts in parts.items()}
        counts = written.read() or {}  # chunk -> records in its files
        still_open, sealed = [], False
        chunk_ids, starts, sizes = np.unique(offsets // self._chunk_size, return_index=True, return_counts=True)
        for chunk, start, n in zip(chunk_ids.tolist(), starts.tolist(), sizes.tolist()):
            rows_of = slice(start, start + n)
            before = counts.get(chunk)
            if n != (before or 0):
                # No state about this chunk (a job started again without its checkpoint): the
                # chunk's files may already hold rows of offsets this run will never see again.
                for i, name in enumerate(names):
                    if name is not None:
                        mine = index[rows_of][which[rows_of] == i]
                        if len(mine):
                            self._write_chunk(kafka_partition, chunk, name, tables[name].take(mine),
                                              merge=before is None)
                counts[chunk] = n
            if n >= self._chunk_size:
                del counts[chunk]
                sealed = True
                self._chunks_sealed.inc()
            else:
                still_open.append(rows_of)
        if sealed:  # state shrinks; otherwise the bag already holds the open chunks' rows
            rows.clear()
            if still_open:
                which_open = np.concatenate([which[s] for s in still_open])
                index_open = np.concatenate([index[s] for s in still_open])
                rows.add(ChunkRows({name: tables[name].take(index_open[which_open == i])
                                    for i, name in enumerate(names) if (which_open == i).any()}))
        written.write(counts)

    def _write_chunk(self, kafka_partition: int, chunk: int, dataset: str, table: pa.Table, merge: bool) -> None:
        spec = self._datasets[dataset]
        table = pa.Table.from_arrays(table.columns, schema=spec.schema)  # the descriptions, for readers
        for part, group in spec.split_by_partition(table):
            path = spec.chunk_file(self._lake, part, kafka_partition, chunk)
            if merge:
                on_disk = read_parquet_table(path)
                if on_disk is not None:
                    on_disk = on_disk.select(spec.schema.names).cast(spec.schema)
                    mine = np.isin(on_disk.column("kafka_offset").to_numpy(),
                                   group.column("kafka_offset").to_numpy())
                    group = pa.concat_tables([on_disk.filter(pa.array(~mine)), group]).sort_by("kafka_offset")
            self._write_table(path, dataset, group)


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

"""Idempotent Parquet sinks for unbounded input.

Why not WriteToParquet: a streaming file sink names its files per pane, and a Flink restore
replays the records read after the last checkpoint into different panes, which duplicates rows.
Here a file's name and content are a pure function of Kafka coordinates: records are grouped into
*chunks* of consecutive offsets of one Kafka partition, and each flush rewrites (atomically) the
chunk's files with every row seen so far. A replay therefore rewrites the same files with the same
rows, never adds a second copy. A chunk's state is released once every offset of it has been seen,
so memory is bounded by chunk_size rows per open chunk.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections import defaultdict
from typing import Iterable, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.coders import PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)


class LakeRecord(NamedTuple):
    """One Kafka record's fate: which dataset and partition folder it goes to, if any.

    dataset None means "consumed, written nowhere" (a de-duplicated reading): it still counts
    towards the chunk's completeness.
    """

    kafka_partition: int
    kafka_offset: int
    dataset: str | None
    partition_path: str  # e.g. "date=2026-11-28/hour=17"
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


class _ChunkWriter(beam.DoFn):
    ROWS = BagStateSpec("rows", PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    WRITTEN = ReadModifyWriteStateSpec("written", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)

    def __init__(self, lake: str, schemas: dict[str, pa.Schema], chunk_size: int, flush_seconds: float):
        self._lake = lake.rstrip("/")
        self._schemas = schemas
        self._chunk_size = chunk_size
        self._flush_seconds = flush_seconds
        self._rows_written = Metrics.counter("sinks", "rows_written")
        self._files_written = Metrics.counter("sinks", "files_written")
        self._chunks_sealed = Metrics.counter("sinks", "chunks_sealed")

    def process(self, element, rows=beam.DoFn.StateParam(ROWS), armed=beam.DoFn.StateParam(ARMED),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, record = element
        rows.add(record)
        if not armed.read():
            flush.set(time.time() + self._flush_seconds)
            armed.write(True)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, rows=beam.DoFn.StateParam(ROWS),
                 armed=beam.DoFn.StateParam(ARMED), written=beam.DoFn.StateParam(WRITTEN)):
        kafka_partition, chunk = key
        by_offset = {r.kafka_offset: r for r in rows.read()}  # a replayed record replaces itself
        n = len(by_offset)
        if n != (written.read() or 0):
            self._write(kafka_partition, chunk, by_offset.values())
            written.write(n)
        armed.clear()  # the next record of this chunk arms the timer again; idle chunks cost nothing
        if n >= self._chunk_size:
            rows.clear()
            written.clear()
            self._chunks_sealed.inc()

    def _write(self, kafka_partition: int, chunk: int, records: Iterable[LakeRecord]) -> None:
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in sorted(records, key=lambda r: r.kafka_offset):
            if r.dataset is not None:
                groups[(r.dataset, r.partition_path)].append(r.row)
        for (dataset, part), group in groups.items():
            path = f"{self._lake}/{dataset}/{part}/part-p{kafka_partition:03d}-c{chunk:09d}.parquet"
            table = pa.Table.from_pylist(group, schema=self._schemas[dataset])
            write_parquet_atomically(path, table)
            self._rows_written.inc(len(group))
            self._files_written.inc()


class WriteLakeChunks(beam.PTransform):
    """Writes LakeRecords to <lake>/<dataset>/<partition_path>/part-p<P>-c<C>.parquet."""

    def __init__(self, lake: str, schemas: dict[str, pa.Schema], chunk_size: int = 10_000,
                 flush_seconds: float = 30.0):
        super().__init__()
        self._lake = lake
        self._schemas = schemas
        self._chunk_size = chunk_size
        self._flush_seconds = flush_seconds

    def expand(self, records):
        size = self._chunk_size
        return (
            records
            | "KeyByChunk" >> beam.Map(lambda r: ((r.kafka_partition, r.kafka_offset // size), r))
            | "FlushChunks" >> beam.ParDo(
                _ChunkWriter(self._lake, self._schemas, size, self._flush_seconds))
        )


"""The idempotent chunk sink: deterministic names, replays overwrite, state sealed when complete."""

from __future__ import annotations

import glob

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.sinks import LakeRecord, WriteLakeChunks, write_parquet_atomically

SCHEMA = pa.schema([("sensor_id", pa.string()), ("seq", pa.int64())])


def _records(offsets, partition=0, dataset="raw"):
    return [LakeRecord(partition, o, dataset, f"date=2026-11-28/hour={o % 2:02d}",
                       {"sensor_id": "1", "seq": o}) for o in offsets]


def _run(records, lake, chunk_size=4):
    with TestPipeline() as p:
        (p | beam.Create(records) | WriteLakeChunks(str(lake), {"raw": SCHEMA, "rejected": SCHEMA},
                                                    chunk_size=chunk_size, flush_seconds=0))


def _read(lake):
    files = sorted(glob.glob(f"{lake}/**/*.parquet", recursive=True))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return files, rows


def test_files_are_named_by_kafka_partition_and_chunk(tmp_path):
    _run(_records(range(10)) + _records(range(3), partition=2), tmp_path)
    files, rows = _read(tmp_path)
    names = sorted(f.split(str(tmp_path) + "/")[1] for f in files)
    assert "raw/date=2026-11-28/hour=00/part-p000-c000000000.parquet" in names
    assert "raw/date=2026-11-28/hour=01/part-p000-c000000002.parquet" in names
    assert "raw/date=2026-11-28/hour=00/part-p002-c000000000.parquet" in names
    assert len(rows) == 13


def test_replayed_records_overwrite_instead_of_duplicating(tmp_path):
    _run(_records(range(10)), tmp_path)
    first_files, first_rows = _read(tmp_path)
    # a restore replays offsets 6..9 (and the same records arrive twice within the run)
    _run(_records(range(6, 10)) * 2 + _records(range(6)), tmp_path)
    files, rows = _read(tmp_path)
    assert files == first_files
    assert sorted(r["seq"] for r in rows) == list(range(10))


def test_records_without_dataset_are_counted_but_not_written(tmp_path):
    recs = _records(range(4))
    recs[1] = recs[1]._replace(dataset=None, row=None)
    recs[2] = recs[2]._replace(dataset="rejected")
    _run(recs, tmp_path)
    files, rows = _read(tmp_path)
    assert sorted(r["seq"] for r in rows) == [0, 2, 3]
    assert any("/rejected/" in f for f in files)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "a" / "b.parquet"
    write_parquet_atomically(str(path), pa.table({"x": [1, 2]}))
    write_parquet_atomically(str(path), pa.table({"x": [3]}))
    assert pq.read_table(path).column("x").to_pylist() == [3]
    assert [p.name for p in path.parent.iterdir()] == ["b.parquet"]

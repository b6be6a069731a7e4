"""The idempotent chunk sink: deterministic names, replays overwrite, state sealed when complete."""

from __future__ import annotations

import glob
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.parsing import ms_to_datetime
from pipelines.sinks import LakeRecord, WriteLakeChunks, WriteWindowFiles, write_parquet_atomically
from pipelines.windows import WindowRow
from sensorlake.lake import BY_NAME, MINUTES, READINGS_1MIN_DATASET, Dataset
from tests.userstate import FakeState

SCHEMA = pa.schema([("sensor_id", pa.string()), ("seq", pa.int64()), ("kafka_offset", pa.int64()),
                    ("at", pa.int64())])
DAY = 1_795_824_000_000  # 2026-11-28T00:00:00Z
# Two datasets laid out like raw/readings, partitioned by the rows' "at" column (epoch ms).
DATASETS = {name: Dataset(name, SCHEMA, (("date", "DATE"), ("hour", "INTEGER")), "at", "chunk", ("kafka_offset",),
                          (), ("kafka_offset",)) for name in ("raw", "rejected")}


def _records(offsets, partition=0, dataset="raw"):
    return [LakeRecord(partition, o, dataset, {"sensor_id": "1", "seq": o, "kafka_offset": o,
                                               "at": DAY + (o % 2) * 3_600_000}) for o in offsets]


def _run(records, lake, chunk_size=4):
    with TestPipeline() as p:
        (p | beam.Create(records) | WriteLakeChunks(str(lake), DATASETS, chunk_size=chunk_size, flush_seconds=0))


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


def test_a_run_without_state_keeps_the_rows_already_in_a_chunk(tmp_path):
    """A job started again without its checkpoint resumes at the committed offset, in the middle of
    a chunk: rewriting the chunk's file must not drop the rows written before the restart."""
    _run(_records(range(3)), tmp_path, chunk_size=8)  # offsets 0..2 written, chunk not sealed
    _run(_records(range(3, 8)), tmp_path, chunk_size=8)  # the second run only sees 3..7
    files, rows = _read(tmp_path)
    assert sorted(r["seq"] for r in rows) == list(range(8))
    assert len(files) == 2  # hour=00 and hour=01 of chunk 0, nothing else


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


# --- 1-minute files ----------------------------------------------------------------------------

MINUTE = 1_795_885_200_000  # 2026-11-28T17:00:00Z


def _minute_row(sensor_id, version, mean, start=MINUTE):
    row = {"sensor_id": sensor_id, "window_start": ms_to_datetime(start),
           "window_end": ms_to_datetime(start + 60_000), "count": 1, "mean": mean, "min": mean,
           "max": mean, "stddev": None, "first_event_time": ms_to_datetime(start),
           "last_event_time": ms_to_datetime(start), "unit": "C", "version": version,
           "emitted_at": ms_to_datetime(start + 70_000 + version)}
    return WindowRow(READINGS_1MIN_DATASET, start, sensor_id, row)


def _run_minutes(rows, lake, shards=1):
    with TestPipeline() as p:
        (p | beam.Create(rows)
         | WriteWindowFiles(str(lake), BY_NAME, shards, flush_seconds=0))


def test_minute_files_hold_the_newest_version_per_sensor(tmp_path):
    _run_minutes([_minute_row("1", 0, 20.0), _minute_row("2", 0, 30.0), _minute_row("1", 1, 21.0),
                  _minute_row("1", 0, 20.0, start=MINUTE + 60_000)], tmp_path)
    path = MINUTES.minute_file(str(tmp_path), MINUTE, 0)
    assert path.endswith("curated/readings_1min/date=2026-11-28/part-1700-s00.parquet")
    rows = pq.read_table(path).to_pylist()
    assert [(r["sensor_id"], r["version"], r["mean"]) for r in rows] == [("1", 1, 21.0), ("2", 0, 30.0)]
    files, _ = _read(tmp_path)
    assert [f.rsplit("/", 1)[1] for f in files] == ["part-1700-s00.parquet", "part-1701-s00.parquet"]


def test_a_late_update_merges_with_the_file_and_never_goes_back(tmp_path):
    _run_minutes([_minute_row("1", 0, 20.0), _minute_row("2", 0, 30.0)], tmp_path)
    # a later run (another bundle, or after a restart) updates sensor 1 only, and replays an old version of 2
    _run_minutes([_minute_row("1", 1, 21.0), _minute_row("3", 0, 5.0)], tmp_path)
    _run_minutes([_minute_row("1", 0, 20.0)], tmp_path)
    rows = pq.read_table(MINUTES.minute_file(str(tmp_path), MINUTE, 0)).to_pylist()
    assert [(r["sensor_id"], r["version"], r["mean"]) for r in rows] == [
        ("1", 1, 21.0), ("2", 0, 30.0), ("3", 0, 5.0)]


def test_minute_files_are_sharded_by_sensor(tmp_path):
    _run_minutes([_minute_row(str(i), 0, float(i)) for i in range(20)], tmp_path, shards=3)
    files, rows = _read(tmp_path)
    assert len(files) == 3 and sorted(int(r["sensor_id"]) for r in rows) == list(range(20))


def test_a_sealed_chunk_leaves_state_and_an_unchanged_chunk_is_not_rewritten(tmp_path):
    from pipelines.sinks import ChunkWriter

    writer = ChunkWriter(str(tmp_path), DATASETS, chunk_size=4, flush_seconds=0)
    rows, written = FakeState(), FakeState()
    rows.add(_records(range(6)))  # chunk 0 complete (0-3), chunk 1 open (4-5)
    writer.flush(0, rows, written)
    assert written.read() == {1: 2}  # chunk 0 sealed: no count kept
    assert [o for entry in rows.read() for o in entry.offsets()] == [4, 5]
    files, _ = _read(tmp_path)
    mtimes = {f: os.stat(f).st_mtime_ns for f in files}
    writer.flush(0, rows, written)  # nothing new: no file is rewritten, state unchanged
    assert {f: os.stat(f).st_mtime_ns for f in files} == mtimes
    assert written.read() == {1: 2} and len(rows.read()) == 1


# --- the chunk buffer's state ------------------------------------------------------------------

def _flush_all(writer, entries, lake):
    rows, written = FakeState(), FakeState()
    for entry in entries:
        rows.add(entry)
    writer.flush(0, rows, written)
    return _read(lake)[1], rows, written


def test_buffered_rows_survive_the_state_coder_as_columns(tmp_path):
    from pipelines.sinks import BufferedCoder, ChunkRows, ChunkWriter

    writer = ChunkWriter(str(tmp_path), DATASETS, chunk_size=4, flush_seconds=0)
    recs = _records(range(3))
    recs[1] = recs[1]._replace(dataset=None, row=None)
    entry = writer.buffered_form(recs)
    coder = BufferedCoder()
    back = coder.decode(coder.encode(entry))
    assert isinstance(back, ChunkRows) and back.offsets() == [0, 1, 2]
    assert back.tables[None].column("kafka_offset").to_pylist() == [1]
    assert back.tables["raw"].to_pylist() == [r.row for r in recs if r.row]


def test_a_buffer_pickled_by_an_older_job_still_flushes(tmp_path):
    """A savepoint taken when the buffer held pickled LakeRecords restores into this job."""
    from pipelines.batching import Batch, BatchCoder
    from pipelines.sinks import BufferedCoder, ChunkWriter

    old = BatchCoder().encode(Batch(_records(range(3))))
    restored = BufferedCoder().decode(old)
    writer = ChunkWriter(str(tmp_path), DATASETS, chunk_size=4, flush_seconds=0)
    rows, _, written = _flush_all(writer, [restored, writer.buffered_form(_records(range(3, 6)))], tmp_path)
    assert sorted(r["seq"] for r in rows) == list(range(6))
    assert written.read() == {1: 2}


def test_the_last_copy_of_a_replayed_offset_wins_across_datasets(tmp_path):
    """A record parsed again after a restore may land elsewhere (say, rejected, then readable under
    a newer registry): the chunk holds its last fate only."""
    from pipelines.sinks import ChunkWriter

    writer = ChunkWriter(str(tmp_path), DATASETS, chunk_size=4, flush_seconds=0)
    first = _records(range(3))
    first[2] = first[2]._replace(dataset="rejected")
    again = _records([2, 1])
    again[1] = again[1]._replace(row={**again[1].row, "seq": 100})
    _, _, written = _flush_all(writer, [writer.buffered_form(first), writer.buffered_form(again)], tmp_path)
    files, _ = _read(tmp_path)
    assert not [f for f in files if "/rejected/" in f]
    raw = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert sorted((r["kafka_offset"], r["seq"]) for r in raw) == [(0, 0), (1, 100), (2, 2)]
    assert [[r["kafka_offset"] for r in pq.read_table(f).to_pylist()] for f in files] == [[0, 2], [1]]
    assert written.read() == {0: 3}


def test_a_table_splits_into_the_folders_its_rows_name():
    from sensorlake.lake import RAW, REJECTED

    def hour(h, m=0):
        return ms_to_datetime(DAY + h * 3_600_000 + m * 60_000)

    raw = pa.table({"event_time": pa.array([hour(0), hour(1), hour(0, 59), hour(25)], pa.timestamp("ms", "UTC")),
                    "seq": [0, 1, 2, 3]})
    split = [(folder, t.column("seq").to_pylist()) for folder, t in RAW.split_by_partition(raw)]
    assert split == [(RAW.partition_of({"event_time": hour(0)}), [0, 2]),
                     (RAW.partition_of({"event_time": hour(1)}), [1]),
                     ("date=2026-11-29/hour=01", [3])]
    rejected = pa.table({"kafka_timestamp": pa.array([hour(0), hour(23, 59)], pa.timestamp("ms", "UTC"))})
    assert [f for f, _ in REJECTED.split_by_partition(rejected)] == ["date=2026-11-28"]
    assert list(RAW.split_by_partition(raw.slice(0, 0))) == []


def test_a_dataset_is_partitioned_by_one_of_its_columns():
    import pytest

    with pytest.raises(ValueError, match="partition column 'when'"):
        Dataset("x", SCHEMA, (("date", "DATE"),), "when", "chunk", ("kafka_offset",), (), ())

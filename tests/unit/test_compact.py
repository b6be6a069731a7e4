"""`sensorlake compact` on a generated lake with a fixed clock (no services).

The lake spans 2026-11-19 23:00 .. 2026-11-20 03:00 UTC and "now" is 03:05, so with --older-than 2h
the date 2026-11-19 and the raw hours 23 and 00 are closed; everything else is open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import os
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sensorlake.lake import (RAW_READINGS_DATASET, READINGS_1MIN, READINGS_1MIN_DATASET, REJECTED_READINGS_DATASET,
                               SENSOR_QUALITY_DATASET)
from sensorlake import cli, compact as compaction, sql
from sensorlake.compact import CompactionError, Compactor, compact, parse_duration
from tests.lakefixture import PAST_END, past_lake

NOW = PAST_END + dt.timedelta(minutes=5)
CLOSED_DAY = "2026-11-19"
OPEN_DAY = "2026-11-20"
VIEWS = ("readings", "readings_1min", "sensor_quality", "rejected", "sensors")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return past_lake(tmp_path_factory.mktemp("template") / "lake")


@pytest.fixture
def lake(template, tmp_path):
    """A private copy of the template lake (shutil.copytree keeps the files' modification times)."""
    return dataclasses.replace(template, root=Path(shutil.copytree(template.root, tmp_path / "lake")))


def snapshot(root: Path, views: tuple[str, ...] = VIEWS) -> dict[str, list[dict]]:
    con = sql.connect(str(root))
    try:
        return {v: sql.query(con, f"SELECT * FROM {v} ORDER BY ALL").to_pylist() for v in views}
    finally:
        con.close()


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the lake (hidden ones included) with its size and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "_compaction" not in path.parts:
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def data_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


def run(root: Path, **kw) -> compaction.CompactionReport:
    return compact(root, "2h", now=NOW, **kw)


def test_compaction_keeps_every_answer_merges_closed_partitions_and_is_idempotent(lake):
    root = lake.root
    before = snapshot(root)
    open_before = {p: data_files(root / p) for p in (f"{READINGS_1MIN_DATASET}/date={OPEN_DAY}",
                                                     f"{RAW_READINGS_DATASET}/date={OPEN_DAY}/hour=01")}
    closed = root / READINGS_1MIN_DATASET / f"date={CLOSED_DAY}"
    assert len(data_files(closed)) > 50

    report = run(root)
    assert snapshot(root) == before  # every view answers exactly as before
    by_ds = {d.dataset: d for d in report.datasets}
    assert [p.label for p in by_ds[RAW_READINGS_DATASET].compacted] == [
        f"{RAW_READINGS_DATASET}/date={CLOSED_DAY}/hour=23", f"{RAW_READINGS_DATASET}/date={OPEN_DAY}/hour=00"]
    for ds in (READINGS_1MIN_DATASET, SENSOR_QUALITY_DATASET):
        assert [p.label for p in by_ds[ds].compacted] == [f"{ds}/date={CLOSED_DAY}"]
        assert by_ds[ds].files_after < by_ds[ds].files_before and by_ds[ds].open_partitions == 1
        files = data_files(root / ds / f"date={CLOSED_DAY}")
        assert len(files) == 1 and files[0].startswith("compacted-")
    # the late update's superseded version is gone from the merged files, the current one kept
    merged = pq.read_table(next((root / READINGS_1MIN_DATASET / f"date={CLOSED_DAY}").glob("*.parquet")))
    keys = list(zip(merged["sensor_id"].to_pylist(), merged["window_start"].to_pylist()))
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    assert merged.schema == READINGS_1MIN  # timestamp[ms, UTC] and column descriptions kept
    late = [u for u in lake.late_updates if u["window_start"].strftime("%Y-%m-%d") == CLOSED_DAY]
    assert late
    for u in late:
        row = merged.filter(pa.compute.and_(pa.compute.equal(merged["sensor_id"], u["sensor_id"]),
                                            pa.compute.equal(merged["window_start"], u["window_start"])))
        assert row["version"].to_pylist() == [u["version"]] and row["count"].to_pylist() == [u["count"]]
    # open partitions untouched; nothing hidden left behind
    assert {p: data_files(root / p) for p in open_before} == open_before
    assert_no_leftovers(root)
    assert "raw/readings" in report.table() and "files before" in report.table()

    files = listing(root)
    again = run(root)
    assert again.partitions_compacted == 0 and listing(root) == files  # second run: nothing to do


def test_partitions_written_recently_are_left_alone(lake):
    hour = lake.root / RAW_READINGS_DATASET / f"date={CLOSED_DAY}" / "hour=23"
    victim = hour / data_files(hour)[0]
    recent = (NOW - dt.timedelta(minutes=30)).timestamp()
    os.utime(victim, (recent, recent))  # e.g. a backfill wrote into that hour half an hour ago
    before = data_files(hour)
    report = run(lake.root, datasets=[RAW_READINGS_DATASET])
    assert report.datasets[0].busy_partitions == 1 and data_files(hour) == before
    assert len(report.datasets[0].compacted) == 1  # hour 00 still merged


def test_a_late_update_after_compaction_wins_and_is_merged_next_time(lake):
    root = lake.root
    run(root, datasets=[READINGS_1MIN_DATASET])
    day = root / READINGS_1MIN_DATASET / f"date={CLOSED_DAY}"
    con = sql.connect(str(root))
    key = "sensor_id = '2' AND window_start = '2026-11-19 23:30:00+00'"
    old = sql.query(con, f"SELECT * FROM readings_1min WHERE {key}").to_pylist()[0]
    total = sql.query(con, "SELECT count(*) AS n FROM readings_1min").to_pylist()[0]["n"]
    # the pipeline rewrites that minute's file (a late reading arrived): version + 1
    update = {k: v for k, v in old.items() if k != "date"}
    update.update(version=old["version"] + 1, count=old["count"] + 1, mean=99.0,
                  emitted_at=old["emitted_at"] + dt.timedelta(hours=5))
    path = day / "part-2330-s00.parquet"
    pq.write_table(pa.Table.from_pylist([update], schema=READINGS_1MIN), path, compression="zstd")
    assert len(data_files(day)) == 2
    got = sql.query(con, f"SELECT version, mean FROM readings_1min WHERE {key}").to_pylist()
    assert got == [{"version": old["version"] + 1, "mean": 99.0}]
    assert sql.query(con, "SELECT count(*) AS n FROM readings_1min").to_pylist()[0]["n"] == total

    assert run(root, datasets=[READINGS_1MIN_DATASET]).partitions_compacted == 0  # written just now: busy
    later = compact(root, "2h", now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3),
                    datasets=[READINGS_1MIN_DATASET])
    assert [p.label for p in later.datasets[0].compacted if p.files_before == 2] == [f"{READINGS_1MIN_DATASET}/date={CLOSED_DAY}"]
    assert len(data_files(day)) == 1
    assert sql.query(con, f"SELECT version, mean FROM readings_1min WHERE {key}").to_pylist() == got
    assert pq.read_table(day / data_files(day)[0]).num_rows == total - sql.query(
        con, f"SELECT count(*) AS n FROM readings_1min WHERE date = '{OPEN_DAY}'").to_pylist()[0]["n"]
    con.close()


def test_a_concurrent_reader_never_sees_a_partition_twice_or_half(lake):
    """A reader queries the raw files (no de-duplicating view) in a loop while compaction swaps.

    Per partition, the rows a reader sees must be exactly the old set or exactly the merged set:
    distinct keys always complete (nothing missing), row counts either before or after (never the
    sum). After every swap, compaction waits until the reader has completed a read, so the reader
    provably observes the intermediate states, not just the end.
    """
    root = lake.root
    globs = {
        "raw": (f"{root}/{RAW_READINGS_DATASET}/date=*/hour=*/*.parquet", "date, hour",
                "kafka_partition, kafka_offset"),
        "curated": (f"{root}/{READINGS_1MIN_DATASET}/date=*/*.parquet", "date", "sensor_id, window_start"),
        "quality": (f"{root}/{SENSOR_QUALITY_DATASET}/date=*/*.parquet", "date", "sensor_id, window_start"),
    }

    def read(con) -> dict:
        out = {}
        for name, (glob, parts, key) in globs.items():
            q = (f"SELECT {parts}, count(*) AS n, count(DISTINCT ({key})) AS k "
                 f"FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL")
            for r in sql.query(con, q).to_pylist():
                out[(name, str(r["date"]), r.get("hour"))] = (r["n"], r["k"])
        return out

    import duckdb
    probe = duckdb.connect()
    before = read(probe)
    stop, reads, problems, mixed = threading.Event(), [0], [], [0]
    after_swap = threading.Condition()

    def reader():
        con = duckdb.connect()
        while not stop.is_set():
            try:
                seen = read(con)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                problems.append(f"read failed: {exc}")
                continue
            states = set()
            for part, (n, k) in seen.items():
                if part not in before:
                    continue  # reported below
                n0, k0 = before[part]
                if k != k0:
                    problems.append(f"{part}: {k} distinct keys, expected {k0} (rows missing)")
                if n not in (n0, k0):
                    problems.append(f"{part}: {n} rows, neither {n0} (old files) nor {k0} (merged)")
                states.add(n == n0)
            if set(seen) != set(before):
                problems.append(f"partitions {set(before) ^ set(seen)} appeared or vanished")
            with after_swap:
                reads[0] += 1
                mixed[0] += len(states) == 2 and any(b[0] != b[1] for b in before.values())
                after_swap.notify_all()

    def wait_for_a_read(_result):
        with after_swap:
            target = reads[0] + 1
            if not after_swap.wait_for(lambda: reads[0] >= target or stop.is_set(), timeout=30):
                problems.append("the reader completed no read after a swap")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        report = Compactor(root, parse_duration("2h"), now=NOW, on_swapped=wait_for_a_read).run()
    finally:
        stop.set()
        t.join(timeout=30)
    swaps = report.partitions_compacted
    assert swaps >= 4 and not problems, problems[:5]
    assert reads[0] >= swaps and mixed[0] >= 1
    final = read(probe)
    closed = {part: nk for part, nk in final.items() if part[1] == CLOSED_DAY}
    assert closed and all(n == k for n, k in closed.values())  # merged: no superseded versions left


def assert_no_leftovers(root: Path) -> None:
    assert not list(root.rglob(".*compact*")) and not list((root / "_compaction" / "journal").iterdir())


@pytest.mark.parametrize("crash_point", ["before the swap", "after the swap"])
def test_a_crash_is_repaired_by_the_next_run(lake, monkeypatch, crash_point):
    """Before the swap the merged files are staged (hidden); after it the old ones are (hidden)."""
    root, dataset, view = lake.root, SENSOR_QUALITY_DATASET, "sensor_quality"
    before = snapshot(root, (view,))

    def crash(*_args):
        raise RuntimeError("power cut")

    if crash_point == "before the swap":
        monkeypatch.setattr(compaction, "exchange_dirs", crash)
    else:
        monkeypatch.setattr(Compactor, "_finish", crash)
    with pytest.raises(RuntimeError):
        run(root, datasets=[dataset])
    swapped = [f.startswith("compacted-") for f in data_files(root / dataset / f"date={CLOSED_DAY}")] == [True]
    assert swapped == (crash_point == "after the swap")
    assert len(list((root / dataset).glob(".date=*.compact-*"))) == 1
    assert snapshot(root, (view,)) == before  # readers see the old files or the merged ones, once
    monkeypatch.undo()
    report = run(root, datasets=[dataset])  # recovers first (rolls back or finishes), then compacts
    assert report.partitions_compacted == (0 if swapped else 1)
    assert snapshot(root, (view,)) == before
    assert_no_leftovers(root)


def test_a_file_written_during_the_merge_postpones_that_partition(lake, monkeypatch):
    root = lake.root
    day = root / READINGS_1MIN_DATASET / f"date={CLOSED_DAY}"
    real_merge = compaction.merge_files

    def merge_while_pipeline_writes(con, paths, spec):
        table = real_merge(con, paths, spec)
        src = day / "part-2330-s00.parquet"
        pq.write_table(pq.read_table(src), src, compression="zstd")  # rewritten in place (new inode)
        return table

    monkeypatch.setattr(compaction, "merge_files", merge_while_pipeline_writes)
    before = data_files(day)
    report = run(root, datasets=[READINGS_1MIN_DATASET])
    assert report.datasets[0].skipped_changed == 1 and report.partitions_compacted == 0
    assert data_files(day) == before and not list(root.rglob(".*compact*"))


def test_a_file_written_just_before_the_swap_is_kept(lake, monkeypatch):
    root = lake.root
    day = root / READINGS_1MIN_DATASET / f"date={CLOSED_DAY}"
    con = sql.connect(str(root))
    row = sql.query(con, "SELECT * EXCLUDE (date) FROM readings_1min WHERE sensor_id = '4' "
                         "AND window_start = '2026-11-19 23:40:00+00'").to_pylist()[0]
    row.update(version=row["version"] + 1, mean=-1.0)
    real_exchange = compaction.exchange_dirs

    def pipeline_writes_then_swap(a, b):
        pq.write_table(pa.Table.from_pylist([row], schema=READINGS_1MIN), day / "part-2340-s01.parquet")
        real_exchange(a, b)

    monkeypatch.setattr(compaction, "exchange_dirs", pipeline_writes_then_swap)
    report = run(root, datasets=[READINGS_1MIN_DATASET])
    assert report.datasets[0].compacted[0].moved_back == 1
    assert sorted(f[:10] for f in data_files(day)) == ["compacted-", "part-2340-"]
    got = sql.query(con, "SELECT version, mean FROM readings_1min WHERE sensor_id = '4' "
                         "AND window_start = '2026-11-19 23:40:00+00'").to_pylist()
    assert got == [{"version": row["version"], "mean": -1.0}]
    con.close()


def test_one_compactor_per_lake(lake):
    lock = lake.root / "_compaction" / "lock"
    lock.parent.mkdir()
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(CompactionError, match="another compaction"):
            run(lake.root)


def test_command_line_dry_run_then_run(lake, capsys):
    root = lake.root
    files = listing(root)
    # real clock: the whole 2026-11-19/20 lake is long closed
    assert cli.main(["compact", "--lake", str(root), "--older-than", "2h", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert listing(root) == files and "dry run" in out.out and "would compact" in out.err
    assert cli.main(["compact", "--lake", str(root), "--older-than", "2h"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split()[:2] == ["dataset", "partitions"]
    for ds in (RAW_READINGS_DATASET, REJECTED_READINGS_DATASET, READINGS_1MIN_DATASET, SENSOR_QUALITY_DATASET):
        row = next(line.split() for line in lines if line.startswith(ds))
        assert int(row[3]) > int(row[4])  # files before > after
    assert "[1/" in out.err  # progress
    assert cli.main(["compact", "--lake", str(root / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"sensorlake: error: lake folder {root / 'nope'} does not exist"


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1d12h", 129600), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_refusals():
    with pytest.raises(CompactionError, match="duration"):
        parse_duration("soon")
    with pytest.raises(CompactionError, match="local lake"):
        compact("s3://bucket/lake")
    with pytest.raises(CompactionError, match="unknown dataset"):
        compact(Path(__file__).parent, datasets=["nope"])

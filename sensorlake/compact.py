"""`sensorlake compact`: merge the small files of closed lake partitions into few large ones.

The pipeline writes one file per minute window (curated/, quality/) or per Kafka chunk (raw/,
rejected/). A month of 1-minute rows is then tens of thousands of files, and a query pays for
every one of them. Compaction rewrites a *closed* partition (its time range ended more than
``--older-than`` ago, and no file in it was written for that long either) into one file (or a
few, ``max_rows`` each), sorted by sensor and time so that Parquet statistics let a one-sensor
query skip most row groups.

What a merge keeps
------------------
* curated/readings_1min and quality/sensor_quality_1min: one row per (sensor_id, window_start),
  the highest ``version``, then the latest ``emitted_at`` (the rule the SQL views apply);
* raw/readings and rejected/readings: one row per Kafka record (kafka_partition, kafka_offset); a
  replayed chunk file carries the same records again, never new ones.

Atomic swap protocol (local filesystem)
---------------------------------------
Readers (DuckDB, pyarrow, Spark) list ``<dataset>/date=*/.../*.parquet`` and skip names starting
with ``.``. So a partition is rewritten as a whole folder, never file by file:

1. Under the lake's lock (``<lake>/_compaction/lock``, flock: one compactor per lake), list the
   partition's ``*.parquet`` files and read each through one open file descriptor, recording its
   identity (name, inode, size, mtime) from ``fstat`` of that descriptor: exactly what was read.
2. Write the merged file(s) into a hidden sibling folder ``.<partition>.compact-<run>`` (no glob
   of a reader matches it), fsync the files and the folder.
3. List the partition again. If a file appeared, disappeared or changed since step 1 (the
   pipeline wrote a late update), give up on this partition for this run: delete the staging
   folder; a later run retries.
4. Write a journal entry (``<lake>/_compaction/journal/<run>-<n>.json``: partition, staging folder,
   outputs, source identities), then swap the two folders with one ``renameat2(RENAME_EXCHANGE)``
   system call. That swap is atomic: every path lookup sees either the old folder or the new one,
   so a reader lists either all old files or all merged files of the partition, never both and
   never a partly written set. The old files are now in the hidden folder.
5. Reconcile: a file the pipeline finished writing between step 3 and the swap is in the hidden
   folder but not among the sources; it is moved (``rename``, atomic) into the partition, where the
   views' version rule makes it current. Then the hidden folder is deleted and the journal entry
   removed.

A crash at any point leaves a state the next run repairs before doing anything else: a journal
entry whose outputs are in the partition means the swap happened (finish step 5); otherwise, and
for a hidden staging folder without a journal entry, the swap never happened and the staging
folder is deleted. Running compaction again on an already compacted partition does nothing (it
holds only ``compacted-*`` files or a single file).

Concurrency with the running pipeline: only closed, quiet partitions are touched. A pipeline write
racing the swap either lands before it (step 5 keeps it) or after it (it goes into the new folder);
a write whose temporary file was created in the old folder fails its final rename with ENOENT
after the swap, and the pipeline retries the bundle (sinks are idempotent). A reader that listed the
old files right before the swap and opens them afterwards gets "file not found" rather than wrong
rows; ``sensorlake sql`` retries such a query. Raw chunk files are rewritten by the pipeline while
their Kafka chunk is open; a merged raw partition that later receives a rewritten chunk file holds
those records twice until the next compaction run removes the duplicates (key: Kafka partition and
offset); the quiet-period rule makes that rare (it needs a backfill into an hour already compacted).

The swap needs Linux (renameat2, glibc >= 2.28) and a local filesystem that supports
RENAME_EXCHANGE (ext4, xfs, btrfs, tmpfs); elsewhere, and for object-store lakes (``s3://``),
compaction refuses to run rather than giving up atomicity.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from sensorlake import lake as layout
from sensorlake.lake import Dataset
from sensorlake.sql import local_lake, stored_files

UTC = dt.timezone.utc
OUTPUT_PREFIX = "compacted-"
STATE_DIR = layout.COMPACTION_DIR
STAGING_MARKER = "compact-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class CompactionError(Exception):
    """Compaction cannot run (one line for the user)."""


# Every dataset of the lake, with its unique key, the copy that wins and the merged files' order.
SPECS: dict[str, Dataset] = layout.BY_NAME


# ----------------------------------------------------------------------------- small helpers
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(text: str) -> dt.timedelta:
    """'2h', '90m', '1d12h', '45s' or plain seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return dt.timedelta(seconds=float(text))
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise CompactionError(f"cannot read duration {text!r} (examples: 2h, 90m, 1d, 45s)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return dt.timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _data_files(folder: Path) -> list[os.DirEntry]:
    """The files a reader's glob picks up: *.parquet, not hidden (.tmp files and staging excluded)."""
    try:
        return sorted((e for e in os.scandir(folder)
                       if e.is_file(follow_symlinks=False) and e.name.endswith(".parquet")
                       and not layout.is_hidden(e.name)), key=lambda e: e.name)
    except FileNotFoundError:
        return []


def _identity(name: str, st: os.stat_result) -> dict:
    return {"name": name, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exchange_dirs(a: Path, b: Path) -> None:
    """Atomically swaps two directories (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        raise CompactionError("atomic folder swap needs Linux with glibc >= 2.28 (renameat2)")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise CompactionError(f"the filesystem of {a.parent} cannot swap folders atomically "
                                  "(RENAME_EXCHANGE); compaction refuses to run without it")
        raise OSError(err, os.strerror(err), str(a))


# ----------------------------------------------------------------------------- partitions
@dataclass
class Partition:
    dataset: str
    path: Path
    start: dt.datetime
    end: dt.datetime

    @property
    def label(self) -> str:
        depth = len(layout.BY_NAME[self.dataset].keys)
        return "/".join([self.dataset, *self.path.parts[-depth:]])


def list_partitions(lake: Path, spec: Dataset) -> list[Partition]:
    return [Partition(spec.name, path, start, start + spec.span) for path, start in spec.partitions(lake)]


def _tree_stats(base: Path) -> tuple[int, int]:
    files, size, _ = stored_files(base)
    return files, size


# ----------------------------------------------------------------------------- merge
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def merge_files(con: duckdb.DuckDBPyConnection, paths: list[str], spec: Dataset) -> pa.Table:
    """Reads the files, keeps one row per ``spec.unique_key`` (the winner) and sorts them.

    The result has the dataset's Arrow schema (field descriptions, timestamp[ms, UTC]) whenever
    the files have its columns; files of an older or newer layout keep their own columns.
    """
    prefer = ", ".join(f"{_ident(k)} {'DESC' if d == 'descending' else 'ASC'}" for k, d in spec.winner)
    sql = (f"SELECT * FROM read_parquet($files, hive_partitioning = false{{union}}) "
           f"QUALIFY row_number() OVER (PARTITION BY {', '.join(map(_ident, spec.unique_key))} ORDER BY {prefer}) = 1 "
           f"ORDER BY {', '.join(map(_ident, spec.sort))}")
    try:
        table = con.sql(sql.format(union=""), params={"files": paths}).to_arrow_table()
    except (duckdb.BinderException, duckdb.InvalidInputException, duckdb.ConversionException):
        # Files of different layouts (a column added between pipeline versions): align by name.
        # Not the default because it reads every footer before the scan (slower).
        table = con.sql(sql.format(union=", union_by_name = true"), params={"files": paths}).to_arrow_table()
    for schema in (spec.schema, pq.read_schema(paths[-1])):
        if schema is not None and table.schema.names == schema.names:
            return table.cast(schema)  # safe cast: fails rather than truncating a value
    return table


@dataclass
class PartitionResult:
    label: str
    action: str                 # compacted | would compact | changed (skipped this run)
    files_before: int
    bytes_before: int
    rows_before: int
    files_after: int = 0
    bytes_after: int = 0
    rows_after: int = 0
    moved_back: int = 0         # files the pipeline wrote during the swap, kept


@dataclass
class DatasetReport:
    dataset: str
    partitions: int = 0
    open_partitions: int = 0    # time range not closed yet
    busy_partitions: int = 0    # written to within older-than
    compacted: list[PartitionResult] = field(default_factory=list)
    skipped_changed: int = 0
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0


@dataclass
class CompactionReport:
    datasets: list[DatasetReport]
    dry_run: bool

    @property
    def partitions_compacted(self) -> int:
        return sum(1 for d in self.datasets for p in d.compacted if p.action == "compacted")

    def table(self) -> str:
        head = f"{'dataset':<30} {'partitions':>10} {'merged':>7} {'files before':>12} {'after':>7} " \
               f"{'bytes before':>13} {'after':>10}"
        lines = [head, "-" * len(head)]
        for d in self.datasets:
            merged = len([p for p in d.compacted if p.action in ("compacted", "would compact")])
            lines.append(f"{d.dataset:<30} {d.partitions:>10} {merged:>7} {d.files_before:>12} {d.files_after:>7} "
                         f"{_fmt_bytes(d.bytes_before):>13} {_fmt_bytes(d.bytes_after):>10}")
        skipped = [f"{d.dataset}: {d.open_partitions} open, {d.busy_partitions} recently written"
                   + (f", {d.skipped_changed} changed during the run" if d.skipped_changed else "")
                   for d in self.datasets]
        lines.append("not compacted (yet): " + "; ".join(skipped))
        if self.dry_run:
            lines.append("dry run: nothing was changed ('after' = what a real run would leave)")
        return "\n".join(lines)


class Compactor:
    def __init__(self, lake: str | Path, older_than: dt.timedelta, now: dt.datetime | None = None,
                 max_rows: int = 5_000_000, progress: Callable[[str], None] | None = None,
                 on_swapped: Callable[[PartitionResult], None] | None = None):
        self.lake = local_lake(lake, CompactionError, "compaction")
        self.older_than = older_than
        self.now = now
        self.max_rows = max_rows
        self.progress = progress or (lambda msg: None)
        self.on_swapped = on_swapped
        self.run_id = dt.datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        self.state = self.lake / STATE_DIR
        self._journal_seq = 0
        self._con = duckdb.connect()

    # ------------------------------------------------------------------ public
    def run(self, datasets: list[str] | None = None, dry_run: bool = False) -> CompactionReport:
        names = datasets or list(SPECS)
        unknown = [d for d in names if d not in SPECS]
        if unknown:
            raise CompactionError(f"unknown dataset {unknown[0]!r} (choose from {', '.join(SPECS)})")
        with self._lock():
            if not dry_run:
                self.recover()
            now = self.now or dt.datetime.now(UTC)
            cutoff = now - self.older_than
            reports = []
            plans: list[tuple[DatasetReport, Dataset, Partition, list[os.DirEntry]]] = []
            for name in names:
                spec = SPECS[name]
                rep = DatasetReport(name)
                rep.files_before, rep.bytes_before = _tree_stats(self.lake / name)
                for part in list_partitions(self.lake, spec):
                    rep.partitions += 1
                    files = _data_files(part.path)
                    if len(files) < 2 or all(f.name.startswith(OUTPUT_PREFIX) for f in files):
                        continue  # nothing to merge: idempotent
                    if part.end > cutoff:
                        rep.open_partitions += 1
                        continue
                    newest = max(f.stat().st_mtime_ns for f in files)
                    if newest > cutoff.timestamp() * 1e9:
                        rep.busy_partitions += 1
                        continue
                    plans.append((rep, spec, part, files))
                reports.append(rep)
            for i, (rep, spec, part, files) in enumerate(plans, 1):
                result = self._dry(part, files) if dry_run else self._compact(spec, part)
                if result.action == "changed":
                    rep.skipped_changed += 1
                else:
                    rep.compacted.append(result)
                self.progress(f"[{i}/{len(plans)}] {part.label}: {result.files_before} files "
                              f"{_fmt_bytes(result.bytes_before)} -> "
                              + (f"{result.files_after} file(s) {_fmt_bytes(result.bytes_after)}, "
                                 f"rows {result.rows_before} -> {result.rows_after}" if result.action == "compacted"
                                 else result.action))
            for rep in reports:
                if dry_run:
                    rep.files_after = rep.files_before - sum(p.files_before - 1 for p in rep.compacted)
                    rep.bytes_after = rep.bytes_before
                else:
                    rep.files_after, rep.bytes_after = _tree_stats(self.lake / rep.dataset)
            return CompactionReport(reports, dry_run)

    # ------------------------------------------------------------------ one partition
    def _dry(self, part: Partition, files: list[os.DirEntry]) -> PartitionResult:
        size = sum(f.stat().st_size for f in files)
        rows = sum(pq.ParquetFile(f.path).metadata.num_rows for f in files)
        return PartitionResult(part.label, "would compact", len(files), size, rows)

    def _compact(self, spec: Dataset, part: Partition) -> PartitionResult:
        entries = _data_files(part.path)
        # Identities first, contents second: if a file is replaced after its stat, the re-check
        # below sees a different identity and this partition is left alone.
        sources = [_identity(e.name, e.stat()) for e in entries]
        paths = [e.path for e in entries]
        try:
            merged = merge_files(self._con, paths, spec)
            rows_before = self._con.sql("SELECT count(*) FROM read_parquet($files, hive_partitioning = false)",
                                        params={"files": paths}).fetchall()[0][0]
        except duckdb.IOException:
            return PartitionResult(part.label, "changed", 0, 0, 0)  # a file vanished meanwhile
        bytes_before = sum(s["size"] for s in sources)

        staging = part.path.parent / f".{part.path.name}.{STAGING_MARKER}{self.run_id}"
        staging.mkdir()
        outputs: list[str] = []
        bytes_after = 0
        for i, lo in enumerate(range(0, max(merged.num_rows, 1), self.max_rows)):
            name = f"{OUTPUT_PREFIX}{self.run_id}-{i:03d}.parquet"
            target = staging / name
            chunk = merged.slice(lo, self.max_rows)
            with open(target, "wb") as fh:
                pq.write_table(chunk, fh, compression="zstd", row_group_size=spec.row_group_rows)
                fh.flush()
                os.fsync(fh.fileno())
            outputs.append(name)
            bytes_after += target.stat().st_size
        _fsync_dir(staging)

        now_ids = [_identity(e.name, e.stat()) for e in _data_files(part.path)]
        if now_ids != sources:  # the pipeline wrote here meanwhile: leave it for a later run
            shutil.rmtree(staging)
            return PartitionResult(part.label, "changed", len(sources), bytes_before, rows_before)

        journal = self._write_journal({"partition": str(part.path), "staging": str(staging),
                                       "outputs": outputs, "sources": sources})
        exchange_dirs(staging, part.path)
        _fsync_dir(part.path.parent)
        moved = self._finish(journal)
        result = PartitionResult(part.label, "compacted", len(sources), bytes_before, rows_before,
                                 len(outputs), bytes_after, merged.num_rows, moved)
        if self.on_swapped:
            self.on_swapped(result)
        return result

    # ------------------------------------------------------------------ journal and recovery
    def _write_journal(self, entry: dict) -> Path:
        folder = self.state / "journal"
        folder.mkdir(parents=True, exist_ok=True)
        self._journal_seq += 1
        path = folder / f"{self.run_id}-{self._journal_seq:06d}.json"
        tmp = folder / f".{path.name}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
        return path

    def _finish(self, journal: Path) -> int:
        """After the swap: keep files written meanwhile, drop the old folder, close the entry."""
        entry = json.loads(journal.read_text(encoding="utf-8"))
        partition, old = Path(entry["partition"]), Path(entry["staging"])
        known = {(s["name"], s["ino"], s["size"], s["mtime_ns"]) for s in entry["sources"]}
        moved = 0
        for e in _data_files(old):
            st = e.stat()
            if (e.name, st.st_ino, st.st_size, st.st_mtime_ns) in known or e.name in entry["outputs"]:
                continue
            if not (partition / e.name).exists():
                os.rename(e.path, partition / e.name)
                moved += 1
        if moved:
            _fsync_dir(partition)
        shutil.rmtree(old, ignore_errors=True)
        journal.unlink()
        return moved

    def recover(self) -> int:
        """Completes or rolls back what a crashed run left; returns how many entries it handled."""
        handled = 0
        folder = self.state / "journal"
        for journal in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            entry = json.loads(journal.read_text(encoding="utf-8"))
            partition, staging = Path(entry["partition"]), Path(entry["staging"])
            swapped = all((partition / o).exists() for o in entry["outputs"])
            if swapped:
                self._finish(journal)
            else:
                shutil.rmtree(staging, ignore_errors=True)
                journal.unlink()
            handled += 1
        # Every journal entry is closed now; a staging folder left over was never swapped in.
        for spec in SPECS.values():
            for stray in (self.lake / spec.name).glob(spec.staging_glob(STAGING_MARKER)):
                shutil.rmtree(stray, ignore_errors=True)
                handled += 1
        return handled

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.state.mkdir(exist_ok=True)
        with open(self.state / "lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CompactionError(f"another compaction is running on this lake ({self.state / 'lock'})") from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def compact(lake: str | Path, older_than: str | dt.timedelta = "2h", datasets: list[str] | None = None,
            dry_run: bool = False, now: dt.datetime | None = None, **kwargs) -> CompactionReport:
    """Compacts the lake's closed partitions; see the module docstring for the protocol."""
    delta = older_than if isinstance(older_than, dt.timedelta) else parse_duration(older_than)
    return Compactor(lake, delta, now=now, **kwargs).run(datasets, dry_run=dry_run)


# ----------------------------------------------------------------------------- command line
HELP = "Merge the small files of closed lake partitions into few large ones (atomic, idempotent)."
DESCRIPTION = HELP + """

A partition (a date folder; an hour folder in raw/readings) is compacted when its time range ended
more than --older-than ago and none of its files was written for that long. Readers never see a
partition twice or half: the merged folder replaces the old one in one atomic swap. A second run
does nothing. Safe while the pipeline runs; run it from cron or a loop, e.g. hourly.

examples:
  sensorlake compact --older-than 2h
  sensorlake compact --dataset curated/readings_1min --dry-run"""


def configure_parser(p) -> None:
    from sensorlake.settings import LAKE_TOOL_SETTINGS, Settings

    p.add_argument("--older-than", default="2h", metavar="DURATION",
                   help="only partitions that ended (and were last written) longer ago than this, e.g. 2h, "
                        "90m, 1d (default 2h)")
    p.add_argument("--dataset", action="append", choices=list(SPECS), metavar="DATASET",
                   help=f"compact only this dataset (repeatable; default all: {', '.join(SPECS)})")
    p.add_argument("--dry-run", action="store_true", help="show what would be merged, change nothing")
    p.add_argument("--max-rows", type=int, default=5_000_000, help="rows per merged file (default 5000000)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    Settings.add_arguments(p, LAKE_TOOL_SETTINGS)


def run(args) -> int:
    import sys

    from sensorlake.settings import Settings

    settings = Settings.from_args(args)
    if args.max_rows <= 0:
        raise CompactionError("--max-rows must be positive")
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    report = compact(settings.lake, args.older_than, datasets=args.dataset, dry_run=args.dry_run,
                     max_rows=args.max_rows, progress=say)
    print(report.table())
    return 0

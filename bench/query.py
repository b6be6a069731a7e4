"""One sensor's month of 1-minute rows: query time before and after `sensorlake compact`.

Not part of pass/fail. Writes a lake of ``--days`` days x ``--sensors`` sensors of
curated/readings_1min rows the way the pipeline does (one file per minute window: 43,200 files for
30 days), then times the BI question "all 1-minute rows of one sensor for the month" through the
``readings_1min`` view (one row per sensor-minute, date filter for pruning):

* cold: a new DuckDB connection (views created) and the query, as ``sensorlake sql -c`` does;
* warm: the same query again on an open connection (median of ``--repeat`` runs).

Then it compacts the lake (every day is closed) and measures again. Prints a table and writes the
figures, with machine and version information, to ``bench/results/query-<UTC time>.json``.

    python bench/query.py                       # 30 days x 100 sensors (about 2 minutes)
    python bench/query.py --days 3 --sensors 10 # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from sensorlake.lake import READINGS_1MIN, READINGS_1MIN_DATASET, registry_version_path  # noqa: E402
from sensorlake import sql  # noqa: E402
from sensorlake.compact import compact  # noqa: E402
from tests.lakefixture import write_minute_files  # noqa: E402

UTC = dt.timezone.utc


def day_table(day: dt.datetime, sensors: list[str], rng: np.random.Generator) -> pa.Table:
    """One day of 1-minute rows for every sensor, as the pipeline computes them."""
    minutes = 1440
    n = minutes * len(sensors)
    start_ms = int(day.timestamp() * 1000)
    ws = np.repeat(start_ms + np.arange(minutes, dtype=np.int64) * 60_000, len(sensors))
    mean = rng.normal(21, 3, n)
    spread = np.abs(rng.normal(0.4, 0.1, n))
    ts = pa.timestamp("ms", tz="UTC")
    cols = {
        "sensor_id": pa.array(np.tile(np.array(sensors, dtype=object), minutes), pa.string()),
        "window_start": pa.array(ws, pa.int64()).cast(ts),
        "window_end": pa.array(ws + 60_000, pa.int64()).cast(ts),
        "count": pa.array(np.full(n, 60, dtype=np.int64)),
        "mean": pa.array(mean),
        "min": pa.array(mean - spread),
        "max": pa.array(mean + spread),
        "stddev": pa.array(spread / 2),
        "first_event_time": pa.array(ws + 100, pa.int64()).cast(ts),
        "last_event_time": pa.array(ws + 59_100, pa.int64()).cast(ts),
        "unit": pa.array(np.full(n, "C", dtype=object), pa.string()),
        "version": pa.array(np.zeros(n, dtype=np.int32)),
        "emitted_at": pa.array(ws + 72_000, pa.int64()).cast(ts),
    }
    return pa.Table.from_pydict(cols, schema=READINGS_1MIN)


def build(lake: Path, days: int, n_sensors: int, first_day: dt.datetime) -> None:
    rng = np.random.default_rng(42)
    sensors = [str(i) for i in range(1, n_sensors + 1)]
    registry = {s: {"lat": 40.4, "lng": -3.7, "unit": "C", "type": "temperature", "range": [0, 45],
                    "description": f"Bench sensor {s}", "interval_ms": 1000} for s in sensors}
    reg_path = Path(registry_version_path(str(lake), first_day))
    reg_path.parent.mkdir(parents=True)
    reg_path.write_text(json.dumps(registry))
    started = time.monotonic()
    for d in range(days):
        day = first_day + dt.timedelta(days=d)
        write_minute_files(lake, READINGS_1MIN_DATASET, day_table(day, sensors, rng))
        print(f"  wrote {day:%Y-%m-%d} ({d + 1}/{days}, {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)


def tree(base: Path) -> tuple[int, int]:
    files = [p for p in base.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts)]
    return len(files), sum(p.stat().st_size for p in files)


def measure(lake: Path, sensor: str, d0: str, d1: str, repeat: int) -> dict:
    q = (f"SELECT window_start, mean, min, max, count FROM readings_1min WHERE sensor_id = '{sensor}' "
         f"AND date BETWEEN DATE '{d0}' AND DATE '{d1}' ORDER BY window_start")
    cold = []
    rows = 0
    for _ in range(2):  # a fresh process would pay this too: connection, views, first scan
        t0 = time.perf_counter()
        con = sql.connect(str(lake))
        rows = sql.query(con, q).num_rows
        cold.append(time.perf_counter() - t0)
        con.close()
    con = sql.connect(str(lake))
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        assert sql.query(con, q).num_rows == rows
        warm.append(time.perf_counter() - t0)
    plan = "\n".join(str(r[1]) for r in con.sql("EXPLAIN ANALYZE " + q).fetchall())
    con.close()
    import re

    files_read = sum(int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", plan))
    return {"rows": rows, "cold_ms": round(min(cold) * 1000, 1), "warm_ms_median": round(statistics.median(warm) * 1000, 1),
            "warm_ms_min": round(min(warm) * 1000, 1), "files_read": files_read}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--sensors", type=int, default=100)
    p.add_argument("--repeat", type=int, default=7, help="warm runs per measurement (median reported)")
    p.add_argument("--lake", help="build the lake here (default: a temporary folder, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the lake")
    args = p.parse_args()

    first_day = (dt.datetime.now(UTC) - dt.timedelta(days=args.days + 1)).replace(hour=0, minute=0, second=0,
                                                                                   microsecond=0)
    d0, d1 = f"{first_day:%Y-%m-%d}", f"{first_day + dt.timedelta(days=args.days - 1):%Y-%m-%d}"
    lake = Path(args.lake) if args.lake else Path(tempfile.mkdtemp(prefix="sensorlake-bench-")) / "lake"
    if lake.exists() and any(lake.iterdir()):
        p.error(f"{lake} is not empty")
    lake.mkdir(parents=True, exist_ok=True)
    sensor = str(min(42, args.sensors))
    try:
        print(f"building {args.days} days x {args.sensors} sensors of 1-minute rows in {lake} ...", file=sys.stderr)
        t0 = time.monotonic()
        build(lake, args.days, args.sensors, first_day)
        build_s = time.monotonic() - t0
        base = lake / READINGS_1MIN_DATASET
        files_before, bytes_before = tree(base)
        print("measuring before compaction ...", file=sys.stderr)
        before = measure(lake, sensor, d0, d1, args.repeat)
        print("compacting ...", file=sys.stderr)
        t0 = time.monotonic()
        report = compact(lake, "2h")
        compact_s = time.monotonic() - t0
        files_after, bytes_after = tree(base)
        print("measuring after compaction ...", file=sys.stderr)
        after = measure(lake, sensor, d0, d1, args.repeat)
        second = compact(lake, "2h")
    finally:
        if not args.keep and not args.lake:
            shutil.rmtree(lake.parent, ignore_errors=True)

    rows = [("files in curated/readings_1min", files_before, files_after),
            ("bytes", bytes_before, bytes_after),
            ("rows returned (one sensor, one month)", before["rows"], after["rows"]),
            ("files read by the query", before["files_read"], after["files_read"]),
            ("cold: connect + views + query (ms)", before["cold_ms"], after["cold_ms"]),
            ("warm: query, median (ms)", before["warm_ms_median"], after["warm_ms_median"]),
            ("warm: query, best (ms)", before["warm_ms_min"], after["warm_ms_min"])]
    print(f"\n{args.days} days x {args.sensors} sensors, sensor {sensor}, {d0}..{d1}; "
          f"lake built in {build_s:.0f} s, compacted in {compact_s:.1f} s "
          f"({report.partitions_compacted} partitions; second run compacted {second.partitions_compacted})")
    print(f"{'':<40} {'before':>14} {'after':>14}")
    for name, b, a in rows:
        print(f"{name:<40} {b:>14,} {a:>14,}" if isinstance(b, int) else f"{name:<40} {b:>14} {a:>14}")
    load = os.getloadavg()
    print(f"(load average {load[0]:.1f} on {os.cpu_count()} CPUs while measuring)")

    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"query-{dt.datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({
        "days": args.days, "sensors": args.sensors, "sensor": sensor, "range": [d0, d1],
        "build_seconds": round(build_s, 1), "compact_seconds": round(compact_s, 1),
        "partitions_compacted": report.partitions_compacted, "second_run_compacted": second.partitions_compacted,
        "files": {"before": files_before, "after": files_after}, "bytes": {"before": bytes_before, "after": bytes_after},
        "before": before, "after": after,
        "machine": {"python": platform.python_version(), "duckdb": duckdb.__version__, "pyarrow": pa.__version__,
                    "cpus": os.cpu_count(), "load_average": load, "platform": platform.platform()},
    }, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

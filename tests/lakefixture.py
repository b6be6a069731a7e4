"""A small but realistic Sensorlake lake, written with the real schemas, for tests without Flink.

What :func:`build_lake` writes under ``root`` (the layout of sensorlake/lake.py):

* ``raw/readings/date=/hour=/part-pPPP-cCCCCCCCC.parquet``: every distinct reading, in files per
  Kafka partition (2) and chunk of offsets, like ``WriteLakeChunks``;
* ``curated/readings_1min/date=/part-HHMM-sSS.parquet`` and ``quality/sensor_quality_1min/...``:
  one file per minute window (shard s00), computed from the raw readings, plus **late updates**:
  for a few sensor-minutes a second row with a higher ``version`` lies in a second file
  (``part-HHMM-s01.parquet``, as after a late update written next to an older copy), and one
  sensor-minute has two rows of the same version where only ``emitted_at`` differs;
* ``rejected/readings/date=/part-...parquet``: dead letters with reason codes;
* ``raw/sensors/version=<UTC>/sensors.json``: two registry versions (the second adds a humidity
  sensor and renames one).

Sensors (reporting every 20 s, so 3 readings expected per minute): 1 healthy, 2 drops a quarter of
its readings (degraded), 3 healthy, 4 sends out-of-range spikes (bad minutes), 5 has a gap and is
silent for the last 3 hours (missing), 6 (humidity, every 30 s) exists from the second registry
version on, 99 is not in the registry (unregistered) and speaks for two hours.

Files get the modification time the pipeline would have given them (when they were last written),
so compaction's "closed and quiet" rules see a realistic lake. Everything is a pure function of
``end``, ``hours`` and ``seed``; :class:`FixtureLake` returns the figures tests compare against.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sensorlake.lake import (BY_NAME, RAW_READINGS_DATASET, READINGS_1MIN, READINGS_1MIN_DATASET,
                             REJECTED_READINGS_DATASET, SENSOR_QUALITY, SENSOR_QUALITY_DATASET, registry_version_of,
                             registry_version_path)

UTC = dt.timezone.utc
MINUTE = dt.timedelta(minutes=1)
THRESHOLDS_VERSION = "ok:c>=0.95,v>=0.99;bad:c<0.5|v<0.9"
OUT_OF_ORDERNESS = dt.timedelta(seconds=10)
RAW_CHUNK = 500  # Kafka offsets per raw file (the pipeline's chunk_size, small here)

REGISTRY_V1 = {
    "1": {"lat": 40.4168, "lng": -3.7038, "unit": "C", "type": "temperature", "range": [0, 45],
          "description": "Main Entrance", "interval_ms": 20000},
    "2": {"lat": 40.4169, "lng": -3.7040, "unit": "C", "type": "temperature", "range": [0, 45],
          "description": "Kitchen", "interval_ms": 20000},
    "3": {"lat": 40.4170, "lng": -3.7042, "unit": "C", "type": "temperature", "range": [0, 45],
          "description": "Deposit", "interval_ms": 20000},
    "4": {"lat": 40.4171, "lng": -3.7044, "unit": "C", "type": "temperature", "range": [0, 45],
          "description": "Assembly Floor", "interval_ms": 20000},
    "5": {"lat": 40.4172, "lng": -3.7046, "unit": "C", "type": "temperature", "range": [0, 45],
          "description": "Offices", "interval_ms": 20000},
}
REGISTRY_V2 = {**REGISTRY_V1,
               "3": {**REGISTRY_V1["3"], "description": "Deposit (north wall)"},
               "6": {"lat": 40.4173, "lng": -3.7048, "unit": "%", "type": "humidity", "range": [0, 100],
                     "description": "Server Room humidity", "interval_ms": 30000}}
UNREGISTERED = "99"
REJECT_REASONS = [("not_json", b"{temperature: 21"), ("missing_value", b'{"sensor_id": "1", "timestamp": 1}'),
                  ("bad_timestamp", b'{"sensor_id": "2", "value": 3, "timestamp": "yesterday"}'),
                  ("non_finite_value", b'{"sensor_id": "4", "value": NaN, "timestamp": 1764349200}'),
                  ("empty_payload", b"")]


@dataclass
class FixtureLake:
    root: Path
    start: dt.datetime
    end: dt.datetime
    registry_versions: list[tuple[str, dict]]
    rows_in_files: dict[str, int] = field(default_factory=dict)   # dataset -> physical rows
    files: dict[str, int] = field(default_factory=dict)           # dataset -> number of files
    sensor_minutes: dict[str, int] = field(default_factory=dict)  # dataset -> distinct (sensor, minute)
    rows_per_date: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> date -> view rows
    late_updates: list[dict] = field(default_factory=list)  # the row each view must return
    raw_per_sensor: dict[str, int] = field(default_factory=dict)
    out_of_range_readings: int = 0  # in closed windows (sensor_quality.out_of_range)
    raw_out_of_range: int = 0       # every raw reading outside its sensor's range

    @property
    def dates(self) -> list[str]:
        return sorted(self.rows_per_date[READINGS_1MIN_DATASET])

    @property
    def newest_registry(self) -> dict:
        return self.registry_versions[-1][1]


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, UTC)


def _registry_at(versions: list[tuple[dt.datetime, dict]], t: dt.datetime) -> dict:
    current = versions[0][1]
    for since, reg in versions:
        if since <= t:
            current = reg
    return current


def _value(rng: random.Random, sensor: str, t: dt.datetime) -> float:
    hour = t.hour + t.minute / 60
    if sensor == "6":
        return round(45 + 10 * math.sin(2 * math.pi * (hour - 3) / 24) + rng.gauss(0, 1), 2)
    if sensor == UNREGISTERED:
        return round(230 + rng.gauss(0, 2), 2)
    base = {"1": 19.0, "2": 27.0, "3": 12.0, "4": 24.0, "5": 21.0}[sensor]
    return round(base + 4 * math.sin(2 * math.pi * (hour - 9) / 24) + rng.gauss(0, 0.3), 2)


def _readings(start: dt.datetime, end: dt.datetime, v2_since: dt.datetime, seed: int) -> list[dict]:
    """Every reading the sensors sent (before de-duplication), in event-time order per sensor."""
    rng = random.Random(seed)
    out: list[dict] = []
    span = end - start
    gap = (start + span * 0.3, start + span * 0.3 + dt.timedelta(minutes=30))
    silent_from = end - dt.timedelta(hours=3)
    unreg = (start + span * 0.5, start + span * 0.5 + dt.timedelta(hours=2))
    spike_hour = (start + span * 0.7, start + span * 0.7 + dt.timedelta(hours=1))
    for sensor in ["1", "2", "3", "4", "5", "6", UNREGISTERED]:
        spec = REGISTRY_V2.get(sensor, {"interval_ms": 20000, "unit": "V", "type": "voltage"})
        step = dt.timedelta(milliseconds=spec["interval_ms"])
        t = start + dt.timedelta(milliseconds=137 * int(sensor))
        seq = 0
        while t < end:
            seq += 1
            when = t + dt.timedelta(milliseconds=rng.randint(0, 300))
            t += step
            if sensor == "6" and when < v2_since:
                continue
            if sensor == UNREGISTERED and not unreg[0] <= when < unreg[1]:
                continue
            if sensor == "5" and (when >= silent_from or gap[0] <= when < gap[1]):
                continue
            if sensor == "2" and rng.random() < 0.25:
                continue
            value = _value(rng, sensor, when)
            if sensor == "4" and (rng.random() < 0.02 or spike_hour[0] <= when < spike_hour[1] and rng.random() < 0.3):
                value = round(rng.uniform(60, 80), 2)
            out.append({"sensor_id": sensor, "event_time": when, "value": value, "unit": spec["unit"],
                        "type": spec["type"], "seq": seq, "ingest_time": when + dt.timedelta(milliseconds=400),
                        "late": False})
    # Late arrivals: readings that reached the pipeline three minutes after their window closed.
    # at fixed points of the span, so that small lakes have them in their oldest (closed) partitions
    chosen = []
    for i, frac in enumerate((0.1, 0.3, 0.45, 0.6)):
        sensor, at = ("1", "3")[i % 2], start + span * frac
        chosen.append(next(r for r in out if r["sensor_id"] == sensor and r["event_time"] >= at))
    for r in chosen:
        r["late"] = True
        r["ingest_time"] = r["event_time"].replace(second=0, microsecond=0) + dt.timedelta(minutes=4)
    return out


def _assign_kafka(readings: list[dict], rejected: list[dict]) -> None:
    """Offsets per Kafka partition in arrival order, the way the bridge would have produced them."""
    records = sorted(readings + rejected, key=lambda r: (r["ingest_time"], r.get("sensor_id", "")))
    nxt = defaultdict(int)
    for r in records:
        p = int(r["sensor_id"]) % 2 if r.get("sensor_id") else 1
        r["kafka_partition"] = p
        r["kafka_offset"] = nxt[p]
        nxt[p] += 1
        r["kafka_timestamp"] = r.get("event_time", r["ingest_time"])


def _write(path: Path, table: pa.Table, mtime: dt.datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No dictionary pages: for files of a few rows they cost more time than they save space.
    pq.write_table(table, path, compression="zstd", use_dictionary=False)
    stamp = mtime.timestamp()
    os.utime(path, (stamp, stamp))


def write_chunk_files(root: Path, dataset: str, rows: list[dict], chunk: int = RAW_CHUNK) -> int:
    """Files per (partition folder, Kafka partition, chunk of offsets), like WriteLakeChunks."""
    ds = BY_NAME[dataset]
    groups: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["kafka_partition"], r["kafka_offset"])):
        groups[(ds.partition_of(r), r["kafka_partition"], r["kafka_offset"] // chunk)].append(r)
    for (part, p, c), group in groups.items():
        table = pa.Table.from_pylist(group, schema=ds.schema)
        last = max(r["ingest_time"] for r in group) + dt.timedelta(seconds=30)  # the flush
        _write(Path(ds.chunk_file(str(root), part, p, c)), table, last)
    return len(groups)


def write_minute_files(root: Path, dataset: str, table: pa.Table, shard: int = 0, threads: int = 2) -> int:
    """One file per minute window (sensorlake.lake.Dataset.minute_file), as the pipeline does.

    Each file's modification time is its rows' newest ``emitted_at``. Returns the number of files.
    """
    table = table.sort_by([("window_start", "ascending"), ("sensor_id", "ascending")])
    starts = table["window_start"].cast(pa.int64()).to_numpy()
    emitted = table["emitted_at"].cast(pa.int64()).to_numpy()
    cuts = np.flatnonzero(np.diff(starts)) + 1
    jobs = []
    ds = BY_NAME[dataset]
    for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(starts)].tolist()):
        path = Path(ds.minute_file(str(root), int(starts[lo]), shard))
        jobs.append((path, lo, hi, int(emitted[lo:hi].max()) / 1000))
    for folder in {j[0].parent for j in jobs}:
        folder.mkdir(parents=True, exist_ok=True)

    def one(job):
        path, lo, hi, mtime = job
        pq.write_table(table.slice(lo, hi - lo), path, compression="zstd", use_dictionary=False)
        os.utime(path, (mtime, mtime))

    with ThreadPoolExecutor(threads) as pool:  # pyarrow releases the GIL while it writes
        list(pool.map(one, jobs))
    return len(jobs)


def write_day_files(root: Path, dataset: str, table: pa.Table) -> int:
    """One ``compacted-fixture-000.parquet`` per date, sorted by sensor and minute (compaction's layout)."""
    if table.num_rows == 0:
        return 0
    ds = BY_NAME[dataset]
    table = table.sort_by([("window_start", "ascending"), ("sensor_id", "ascending")])
    days = pc.strftime(table["window_start"], format="%Y-%m-%d")
    n = 0
    for day in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(days, day)).sort_by([("sensor_id", "ascending"), ("window_start", "ascending")])
        folder = ds.partition_path(part["window_start"][0].as_py())
        path = root / dataset / folder / "compacted-fixture-000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, compression="zstd", row_group_size=16384)
        mtime = pc.max(part["emitted_at"]).cast(pa.int64()).as_py() / 1000
        os.utime(path, (mtime, mtime))
        n += 1
    return n


_WINDOWS_SQL = """
WITH r AS (
  SELECT r.*, time_bucket(INTERVAL 1 MINUTE, r.event_time) AS ws, g.range_min, g.range_max,
         g.interval_ms, g.unit AS reg_unit, g.sensor_id IS NOT NULL AS reg
  FROM readings r LEFT JOIN registry g
    ON g.sensor_id = r.sensor_id AND time_bucket(INTERVAL 1 MINUTE, r.event_time) >= g.since
                                 AND time_bucket(INTERVAL 1 MINUTE, r.event_time) < g.until
  WHERE NOT r.late OR $with_late),
 inr AS (SELECT *, NOT reg OR value BETWEEN range_min AND range_max AS ok FROM r)
SELECT sensor_id, ws AS window_start, ws + INTERVAL 1 MINUTE AS window_end,
       count(*) FILTER (ok) AS count, avg(value) FILTER (ok) AS mean, min(value) FILTER (ok) AS min,
       max(value) FILTER (ok) AS max, stddev_samp(value) FILTER (ok) AS stddev,
       min(event_time) FILTER (ok) AS first_event_time, max(event_time) FILTER (ok) AS last_event_time,
       coalesce(any_value(reg_unit), any_value(unit)) AS unit,
       CASE WHEN bool_or(reg) THEN 60000.0 / any_value(interval_ms) END AS expected,
       count(*) AS received, count(*) FILTER (reg AND ok) AS in_range,
       count(*) FILTER (reg AND NOT ok) AS out_of_range, count(*) FILTER (late) AS late,
       bool_or(reg) AS reg_any
FROM inr GROUP BY sensor_id, ws
"""


def _window_rows(con: duckdb.DuckDBPyConnection, with_late: bool) -> list[dict]:
    cur = con.execute(_WINDOWS_SQL.replace("$with_late", str(with_late).upper()))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def _status(received: int, completeness: float | None, validity: float | None, registered: bool) -> str:
    if not registered:
        return "unregistered"
    if received == 0:
        return "missing"
    if completeness < 0.5 or validity < 0.9:
        return "bad"
    if completeness >= 0.95 and validity >= 0.99:
        return "ok"
    return "degraded"


def _quality(w: dict, duplicates: int) -> dict:
    registered = bool(w["reg_any"])
    expected = w["expected"] if registered else None
    received = w["received"]
    comp = min(1.0, received / expected) if registered else None
    validity = (w["in_range"] / received) if registered and received else None
    return {"sensor_id": w["sensor_id"], "window_start": w["window_start"], "window_end": w["window_end"],
            "expected": expected, "received": received, "completeness": comp, "in_range": w["in_range"],
            "out_of_range": w["out_of_range"], "range_validity": validity, "late": w["late"],
            "duplicates": duplicates, "status": _status(received, comp, validity, registered),
            "thresholds_version": THRESHOLDS_VERSION}


def build_lake(root: str | Path, end: dt.datetime | None = None, hours: int = 50, seed: int = 7,
               minute_files_hours: float | None = None, raw_chunk: int = RAW_CHUNK) -> FixtureLake:
    """Writes the fixture lake under root (which should be empty) and returns its figures.

    ``end`` (default: now, to the minute) is the newest instant with data; it spans ``hours`` back.
    ``minute_files_hours``: only the newest so many hours of curated/ and quality/ are minute files;
    older minutes are in one ``compacted-*`` file per day, as a lake that runs ``sensorlake
    compact`` looks (the late updates stay separate minute files next to them). None: all minute
    files (a lake never compacted). ``raw_chunk``: Kafka offsets per raw/rejected file.
    """
    root = Path(root)
    end = (end or dt.datetime.now(UTC)).replace(second=0, microsecond=0)
    start = end - dt.timedelta(hours=hours)
    v1_since, v2_since = start - dt.timedelta(days=1), end - dt.timedelta(hours=20)
    reg_versions = [(v1_since, REGISTRY_V1), (v2_since, REGISTRY_V2)]
    lake = FixtureLake(root, start, end, [(registry_version_of(registry_version_path(str(root), t)), reg)
                                          for t, reg in reg_versions])
    for (t, _), (stamp, reg) in zip(reg_versions, lake.registry_versions):
        path = Path(registry_version_path(str(root), t))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(reg, indent=1))

    rng = random.Random(seed + 1)
    readings = _readings(start, end, v2_since, seed)
    rejected = []
    t = start + dt.timedelta(minutes=7)
    while t < end:
        code, payload = REJECT_REASONS[len(rejected) % len(REJECT_REASONS)]
        rejected.append({"payload": payload, "reason_code": code, "reason": f"fixture: {code.replace('_', ' ')}",
                         "mqtt_topic": "sensors/1", "ingest_time": t})
        t += dt.timedelta(minutes=rng.randint(15, 40))
    _assign_kafka(readings, rejected)

    for r in readings:
        reg = _registry_at(reg_versions, r["ingest_time"])
        r["registered"] = r["sensor_id"] in reg
        r["mqtt_topic"] = f"sensors/{r['sensor_id']}"
        r["payload"] = json.dumps({"sensor_id": r["sensor_id"], "timestamp": r["event_time"].isoformat(),
                                   "value": r["value"], "seq": r["seq"],
                                   "metadata": {"unit": r["unit"], "type": r["type"]}}).encode()
    lake.files[RAW_READINGS_DATASET] = write_chunk_files(root, RAW_READINGS_DATASET, readings, raw_chunk)
    lake.files[REJECTED_READINGS_DATASET] = write_chunk_files(root, REJECTED_READINGS_DATASET, rejected, raw_chunk)
    lake.rows_in_files[RAW_READINGS_DATASET] = len(readings)
    lake.rows_in_files[REJECTED_READINGS_DATASET] = len(rejected)
    for r in readings:
        lake.raw_per_sensor[r["sensor_id"]] = lake.raw_per_sensor.get(r["sensor_id"], 0) + 1
        spec = REGISTRY_V2.get(r["sensor_id"])
        if spec and not spec["range"][0] <= r["value"] <= spec["range"][1]:
            lake.raw_out_of_range += 1

    since = None if minute_files_hours is None else end - dt.timedelta(hours=minute_files_hours)
    _windows(lake, readings, reg_versions, rng, since)
    return lake


def _windows(lake: FixtureLake, readings: list[dict], reg_versions, rng: random.Random,
             minute_files_since: dt.datetime | None) -> None:
    """curated/ and quality/ rows: every closed minute, late updates as extra versions."""
    root, start, end = lake.root, lake.start, lake.end
    closed_until = (end - OUT_OF_ORDERNESS).replace(second=0) - MINUTE  # last window start emitted
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("readings", pa.Table.from_pylist(
        [{k: r[k] for k in ("sensor_id", "event_time", "value", "unit", "late")} for r in readings]))
    reg_rows = []
    for i, (since, reg) in enumerate(reg_versions):
        until = reg_versions[i + 1][0] if i + 1 < len(reg_versions) else end + dt.timedelta(days=1)
        for sid, spec in reg.items():
            reg_rows.append({"sensor_id": sid, "since": since, "until": until, "range_min": float(spec["range"][0]),
                             "range_max": float(spec["range"][1]), "interval_ms": spec["interval_ms"],
                             "unit": spec["unit"]})
    con.register("registry", pa.Table.from_pylist(reg_rows))
    final = {(w["sensor_id"], w["window_start"]): w for w in _window_rows(con, True)}
    on_time = {(w["sensor_id"], w["window_start"]): w for w in _window_rows(con, False)}

    # Every registered sensor gets a quality row for every closed minute (missing when silent).
    minute = start
    while minute <= closed_until:
        reg = _registry_at(reg_versions, minute)
        for sid, spec in reg.items():
            if (sid, minute) not in final:
                expected = 60000 / spec["interval_ms"]
                final[(sid, minute)] = {"sensor_id": sid, "window_start": minute, "window_end": minute + MINUTE,
                                        "count": 0, "unit": spec["unit"], "expected": expected, "received": 0,
                                        "in_range": 0, "out_of_range": 0, "late": 0, "reg_any": True}
        minute += MINUTE
    final = {k: w for k, w in final.items() if k[1] <= closed_until}
    dupes = {k: 1 for k in rng.sample(sorted(k for k, w in final.items() if w["received"]), 25)}

    curated: list[dict] = []
    quality: list[dict] = []
    late_curated: list[dict] = []
    late_quality: list[dict] = []
    emit = OUT_OF_ORDERNESS + dt.timedelta(seconds=2)
    for key, w in sorted(final.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        first_emit = w["window_end"] + emit
        q = _quality(w, dupes.get(key, 0))
        if w["late"]:  # version 0 went out without the late readings; version 1 replaced it
            w0 = on_time.get(key)
            c0 = _curated(w0, 0, first_emit) if w0 else None
            q0 = {**_quality(w0, dupes.get(key, 0)), "version": 0, "emitted_at": first_emit} if w0 else None
            late_emit = w["window_end"] + dt.timedelta(minutes=3, seconds=2)
            c1, q1 = _curated(w, 1, late_emit), {**q, "version": 1, "emitted_at": late_emit}
            if c0:
                curated.append(c0)
                late_curated.append(c1)
            if q0:
                quality.append(q0)
                late_quality.append(q1)
            lake.late_updates.append({"sensor_id": key[0], "window_start": key[1], "version": 1,
                                      "count": c1["count"], "received": q1["received"], "late": q1["late"]})
            continue
        if w["received"]:
            curated.append(_curated(w, 0, first_emit))
        quality.append({**q, "version": 0, "emitted_at": first_emit})

    # A replayed emission: same version, later emitted_at; the later one is current.
    at = (start + (end - start) * 0.2).replace(second=0, microsecond=0)
    replay_key = min(k for k, w in final.items() if k[0] == "3" and k[1] >= at and w["received"] and not w["late"])
    original = next(c for c in curated if (c["sensor_id"], c["window_start"]) == replay_key)
    replay = {**original, "count": original["count"] - 1, "emitted_at": original["emitted_at"] + dt.timedelta(seconds=40)}
    late_curated.append(replay)
    lake.late_updates.append({"sensor_id": replay_key[0], "window_start": replay_key[1], "version": 0,
                              "count": replay["count"], "received": None, "late": None})

    lake.out_of_range_readings = sum(w["out_of_range"] for w in final.values())
    for dataset, schema, rows, extra in ((READINGS_1MIN_DATASET, READINGS_1MIN, curated, late_curated),
                                         (SENSOR_QUALITY_DATASET, SENSOR_QUALITY, quality, late_quality)):
        table = pa.Table.from_pylist(rows, schema=schema)
        if minute_files_since is not None:  # older minutes: as compaction left them, one file a day
            old = pc.less(table["window_start"], pa.scalar(minute_files_since, table.schema.field("window_start").type))
            lake.files[dataset] = write_day_files(root, dataset, table.filter(old))
            table = table.filter(pc.invert(old))
        else:
            lake.files[dataset] = 0
        lake.files[dataset] += write_minute_files(root, dataset, table)
        if extra:
            lake.files[dataset] += write_minute_files(root, dataset, pa.Table.from_pylist(extra, schema=schema), shard=1)
        lake.rows_in_files[dataset] = len(rows) + len(extra)
        lake.sensor_minutes[dataset] = len(rows)
        per_date: dict[str, int] = defaultdict(int)
        for r in rows:
            per_date[f"{r['window_start']:%Y-%m-%d}"] += 1
        lake.rows_per_date[dataset] = dict(per_date)


def _curated(w: dict, version: int, emitted_at: dt.datetime) -> dict:
    row = {k: w.get(k) for k in ("sensor_id", "window_start", "window_end", "count", "mean", "min", "max",
                                 "stddev", "first_event_time", "last_event_time", "unit")}
    return {**row, "version": version, "emitted_at": emitted_at}


if __name__ == "__main__":  # python -m tests.lakefixture <folder>: a demo lake to look at
    import sys
    import time

    t0 = time.time()
    fx = build_lake(sys.argv[1] if len(sys.argv) > 1 else "data", minute_files_hours=3, raw_chunk=2000)
    print(f"wrote {fx.root} ({fx.start:%Y-%m-%d %H:%M} .. {fx.end:%Y-%m-%d %H:%M} UTC) in {time.time() - t0:.1f}s: "
          f"files {fx.files}, rows {fx.rows_in_files}")


_SHARED: dict[str, FixtureLake] = {}


def shared_lake() -> FixtureLake:
    """One fixture lake per test process (ending now), for tests that only read it.

    Built on first use into a temporary folder that is removed when the process exits.
    """
    if "lake" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="sensorlake-fixture-")
        atexit.register(shutil.rmtree, folder, True)
        _SHARED["lake"] = build_lake(Path(folder) / "lake", minute_files_hours=3, raw_chunk=2000)
    return _SHARED["lake"]


@pytest.fixture(scope="module", name="lake")
def lake_fixture() -> FixtureLake:
    """The shared lake (import this fixture into a test module to use it as ``lake``)."""
    return shared_lake()


@pytest.fixture(scope="module", name="con")
def con_fixture(lake: FixtureLake):
    """A DuckDB connection with the lake's views (``sensorlake.sql.connect``) on the shared lake."""
    from sensorlake import sql

    con = sql.connect(str(lake.root))
    yield con
    con.close()


# A lake in the past with a fixed clock: compaction tests decide what is closed by passing `now`.
PAST_END = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def past_lake(root: str | Path, hours: int = 4) -> FixtureLake:
    """A small, never compacted lake ending at PAST_END: 2026-11-19 23:00 .. 2026-11-20 03:00 UTC."""
    return build_lake(root, end=PAST_END, hours=hours)

"""Storage benchmark: bytes per reading in the lake, measured on real Parquet files.

Not part of pass/fail; it prints a table and writes the figures (with machine and version info)
to ``bench/results/storage-<time>.json``. No services needed: everything runs in this process.

What is real here, and what is not:
- payloads: the generator's own ``ReadingStream`` (seeded), the seed registry plus synthetic
  sensors, one reading per sensor per second, exactly the bytes a device would publish;
- Kafka records: the bridge's own ``RecordBuilder`` (key, headers, event-time timestamp) and
  the Java-compatible murmur2 partitioner over ``--partitions`` partitions, offsets in order;
- raw rows: the pipeline's own ``ParseReadings.process`` (the row dict the job builds), grouped
  exactly like ``WriteLakeChunks`` (per Kafka partition, per chunk of ``chunk_size`` offsets, per
  date/hour folder, sorted by offset) and written by ``write_parquet_atomically`` (ZSTD, Arrow's
  default level 1), the function the job calls;
- curated/quality rows: computed here from the same readings in the shape of the
  ``READINGS_1MIN`` / ``SENSOR_QUALITY`` schemas, one file per window minute (``window_shards=1``).
  Their values are real aggregates; the job's own code path is not used (it is being built).
- arrival: Kafka offsets follow receive order, i.e. publish time plus a seeded network delay
  (exponential, mean 25 ms, as bench/bridge.py measured the bridge's latency); ingest_time
  trails receive time by a lag wandering within 0.2-5 s and never goes back within a partition.

Everything else (codecs, levels, dictionary, chunk size, sort order, JSON lines, the Kafka log)
is the same rows written differently, so the table says what each choice costs. Byte counts are
deterministic for given flags; times depend on the machine's load.

What flatters or penalises the figures: no faults (no out-of-range values, duplicates or rejects),
event times on whole seconds (the generator's slots), values with 2 decimals in 0..45, ids like
``synthetic-0001`` (14 characters; UUIDs would cost more in the payload column). Default run:
about 2 minutes and 3 GB RSS on an idle 2-core machine.

    .venv/bin/python bench/storage.py                       # 1,000,000 readings, 1,000 sensors
    .venv/bin/python bench/storage.py --readings 200000 --sensors 500
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import os
import pickle
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import zstandard  # noqa: E402
from kafka.partitioner.default import murmur2  # noqa: E402
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder  # noqa: E402

from connectors.mqtt_kafka.records import RecordBuilder  # noqa: E402
from iot_data_generator.generator import GeneratorConfig, ReadingStream, with_synthetic  # noqa: E402
from pipelines.kafka_io import KafkaRecord  # noqa: E402
from pipelines.parsing import ParseReadings  # noqa: E402
from sensorlake.lake import (RAW, RAW_READINGS, RAW_READINGS_DATASET, READINGS_1MIN,  # noqa: E402
                               SENSOR_QUALITY)
from pipelines.sinks import write_parquet_atomically  # noqa: E402
from sensorlake.quality import Thresholds  # noqa: E402
from sensorlake.registry import load_registry  # noqa: E402
from sensorlake.settings import DEFAULT_REGISTRY  # noqa: E402

UTC = timezone.utc
START = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
PIPELINE_CHUNK = 10_000  # WriteLakeChunks default (pipelines/main.py)
THRESHOLDS = Thresholds()  # the defaults the pipeline runs with

# Candidate writer settings: dictionary only where values repeat (ids, units, the 2-decimal
# values), DELTA_BINARY_PACKED for the ever-increasing integers and timestamps, payload plain.
_LOW_CARDINALITY = ["sensor_id", "unit", "type", "mqtt_topic", "registered", "value"]
_DELTA = ["event_time", "seq", "kafka_offset", "kafka_timestamp", "ingest_time"]
TUNED = {"compression": "zstd", "use_dictionary": _LOW_CARDINALITY,
         "column_encoding": {c: "DELTA_BINARY_PACKED" for c in _DELTA}}


# ---------------------------------------------------------------------- inputs
def make_registry(n: int) -> dict:
    seed = load_registry(DEFAULT_REGISTRY)
    if n <= len(seed):
        return dict(list(seed.items())[:n])
    return with_synthetic(seed, n - len(seed))


def generate(registry: dict, readings: int, seed: int) -> list:
    """Kafka records as the bridge produces them, in the order the bridge receives them.

    Offsets follow receive order (publish time plus a seeded exponential network delay, mean
    25 ms as bench/bridge.py measured), so sensors interleave as they would on a real network
    rather than in the generator's perfect round robin (which would flatter compression).
    ingest_time is the job's clock: per partition it never goes back, and trails receive time by
    a lag that wanders between 0.2 and 5 s.
    """
    stream = ReadingStream(GeneratorConfig(registry, START, seed=seed, count=readings))
    builder = RecordBuilder("iot.readings.raw", "iot.readings.dlq", "sensors", "bridge-1", 262_144)
    rng = random.Random(f"storage-bench-latency:{seed}")
    arrivals = []
    start_us = int(START.timestamp() * 1_000_000)
    for i, msg in enumerate(stream):
        receive_us = start_us + msg.meta.offset_us + int(rng.expovariate(1 / 25_000.0))
        arrivals.append((receive_us, i, msg))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    parts: dict[bytes, int] = {}
    next_offset: dict[int, int] = defaultdict(int)
    last_ingest: dict[int, int] = defaultdict(int)
    lag: dict[int, float] = defaultdict(lambda: 1000.0)
    out = []
    for receive_us, _, msg in arrivals:
        receive_ms = receive_us // 1000
        rec = builder.build(msg.topic.encode(), msg.payload, False, receive_ms)
        p = parts.get(rec.key)
        if p is None:
            p = parts[rec.key] = (murmur2(rec.key) & 0x7FFFFFFF) % ARGS.partitions
        off = next_offset[p]
        next_offset[p] += 1
        lag[p] = min(5000.0, max(200.0, lag[p] + rng.gauss(0.0, 20.0)))
        ingest_ms = max(last_ingest[p], receive_ms + int(lag[p]))
        last_ingest[p] = ingest_ms
        out.append((p, off, rec, ingest_ms))
    return out


def parse(records: list, registry: dict) -> tuple[list, list]:
    """The job's ParseReadings on each record: LakeRecords (raw rows) and typed Readings."""
    now = [0.0]
    dofn = ParseReadings(registry, clock=lambda: now[0])
    lake, readings = [], []
    for p, off, rec, ingest_ms in records:
        now[0] = ingest_ms / 1000
        kr = KafkaRecord(p, off, rec.timestamp_ms, rec.key, rec.value, dict(rec.headers))
        for out in dofn.process(kr):
            if hasattr(out, "tag"):
                readings.append(out.value)
            else:
                lake.append(out)
    return lake, readings


def chunk_tables(lake: list, chunk_size: int) -> list[tuple[str, pa.Table]]:
    """WriteLakeChunks' grouping: (Kafka partition, offset // chunk_size) then dataset/folder."""
    chunks: dict[tuple[int, int], list] = defaultdict(list)
    for r in lake:
        chunks[(r.kafka_partition, r.kafka_offset // chunk_size)].append(r)
    out = []
    for (p, c), records in sorted(chunks.items()):
        groups: dict[tuple[str, str], list] = defaultdict(list)
        for r in sorted(records, key=lambda r: r.kafka_offset):
            if r.dataset is not None:
                groups[(r.dataset, RAW.partition_of(r.row))].append(r.row)
        for (dataset, part), rows in groups.items():
            assert dataset == RAW_READINGS_DATASET, dataset  # the generator sends no faults here
            out.append((RAW.chunk_file("", part, p, c).lstrip("/"), pa.Table.from_pylist(rows, schema=RAW_READINGS)))
    return out


def regroup(tables: list[tuple[str, pa.Table]], factor: int) -> list[tuple[str, pa.Table]]:
    """Chunks of factor x chunk_size offsets: the same rows, as fewer and bigger files."""
    groups: dict[tuple, list] = defaultdict(list)
    for path, t in tables:
        folder, name = path.rsplit("/", 1)
        p = int(name[6:9])
        c = int(name[11:20])
        groups[(folder, p, c // factor)].append(t)
    return [(RAW.chunk_file("", folder.split(f"{RAW.name}/", 1)[1], p, c).lstrip("/"),
             pa.concat_tables(ts).combine_chunks())
            for (folder, p, c), ts in sorted(groups.items())]


# ---------------------------------------------------------------------- curated and quality rows
def curated_tables(readings: list, registry: dict) -> tuple[list, list]:
    """READINGS_1MIN and SENSOR_QUALITY rows per (sensor, minute), one file per minute each."""
    acc: dict[tuple[int, str], list] = defaultdict(list)
    for r in readings:
        acc[(r.event_time_ms // 60_000, r.sensor_id)].append(r)
    cur_by_min: dict[int, list] = defaultdict(list)
    q_by_min: dict[int, list] = defaultdict(list)
    for (minute, sid), rs in sorted(acc.items()):
        sensor = registry.get(sid)
        ws = datetime.fromtimestamp(minute * 60, UTC)
        we = ws + timedelta(minutes=1)
        emitted = we + timedelta(seconds=12)  # watermark (10 s bound) + flush
        inr = [r for r in rs if sensor is None or sensor.range_min <= r.value <= sensor.range_max]
        vals = [r.value for r in inr]
        n = len(vals)
        times = [r.event_time_ms for r in inr]
        cur_by_min[minute].append({
            "sensor_id": sid, "window_start": ws, "window_end": we, "count": n,
            "mean": statistics.fmean(vals) if n else None, "min": min(vals) if n else None,
            "max": max(vals) if n else None, "stddev": statistics.stdev(vals) if n > 1 else None,
            "first_event_time": datetime.fromtimestamp(min(times) / 1000, UTC) if n else None,
            "last_event_time": datetime.fromtimestamp(max(times) / 1000, UTC) if n else None,
            "unit": sensor.unit if sensor else rs[0].unit, "version": 0, "emitted_at": emitted,
        })
        expected = sensor.expected_per_minute if sensor else None
        received = len(rs)
        completeness = min(1.0, received / expected) if expected else None
        validity = len(inr) / received if received and sensor else None
        status = THRESHOLDS.status(received, completeness, validity, sensor is not None)
        q_by_min[minute].append({
            "sensor_id": sid, "window_start": ws, "window_end": we, "expected": expected,
            "received": received, "completeness": completeness, "in_range": len(inr),
            "out_of_range": received - len(inr), "range_validity": validity, "late": 0,
            "duplicates": 0, "status": status, "thresholds_version": THRESHOLDS.version, "version": 0,
            "emitted_at": emitted,
        })
    cur = [(m, pa.Table.from_pylist(rows, schema=READINGS_1MIN)) for m, rows in sorted(cur_by_min.items())]
    q = [(m, pa.Table.from_pylist(rows, schema=SENSOR_QUALITY)) for m, rows in sorted(q_by_min.items())]
    return cur, q


# ---------------------------------------------------------------------- measuring
def parquet_bytes(tables, **opts) -> tuple[int, float]:
    t0 = time.perf_counter()
    total = 0
    for _, t in tables:
        buf = io.BytesIO()
        pq.write_table(t, buf, **opts)
        total += buf.tell()
    return total, time.perf_counter() - t0


def column_bytes(tables, **opts) -> dict[str, int]:
    """Compressed bytes per column (column chunks, pages and their headers), summed over files."""
    acc: dict[str, int] = defaultdict(int)
    for _, t in tables:
        buf = io.BytesIO()
        pq.write_table(t, buf, **opts)
        md = pq.read_metadata(io.BytesIO(buf.getvalue()))
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(rg).column(c)
                acc[col.path_in_schema] += col.total_compressed_size
    return dict(acc)


def read_seconds(tables, columns=None, **opts) -> float:
    blobs = []
    for _, t in tables:
        buf = io.BytesIO()
        pq.write_table(t, buf, **opts)
        blobs.append(buf.getvalue())
    best = math.inf
    for _ in range(3):  # best of three: the first pass also warms caches
        t0 = time.perf_counter()
        for b in blobs:
            pq.read_table(io.BytesIO(b), columns=columns)
        best = min(best, time.perf_counter() - t0)
    return best


def jsonl_bytes(tables) -> dict:
    zc = zstandard.ZstdCompressor(level=3)
    out = {"none": 0, "gzip-6": 0, "zstd-3": 0}
    for _, t in tables:
        doc = b"".join(p + b"\n" for p in t.column("payload").to_pylist())
        out["none"] += len(doc)
        out["gzip-6"] += len(gzip.compress(doc, compresslevel=6))
        out["zstd-3"] += len(zc.compress(doc))
    return out


def kafka_log_bytes(records: list, per_batch: int, codec: int) -> int:
    """Bytes of Kafka v2 record batches (what sits in a partition's log segment) for records."""
    by_part: dict[int, list] = defaultdict(list)
    for p, off, rec, _ in records:
        by_part[p].append((off, rec))
    total = 0
    for recs in by_part.values():
        for i in range(0, len(recs), per_batch):
            b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                          producer_id=1, producer_epoch=0, base_sequence=0,
                                          batch_size=1 << 30)
            for j, (off, rec) in enumerate(recs[i:i + per_batch]):
                b.append(j, rec.timestamp_ms, rec.key, rec.value, rec.headers)
            total += len(b.build())
    return total


def machine_info() -> dict:
    cpu = ""
    ram = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "ram_bytes": ram, "ram_gib": round(ram / 2**30, 1) if ram else None,
            "python": platform.python_version(), "pyarrow": pa.__version__,
            "parquet_zstd_default_level": pa.Codec.default_compression_level("zstd"),
            "zstandard": zstandard.__version__, "load_avg": os.getloadavg()}


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=1_000_000, help="readings to generate (default 1,000,000)")
    ap.add_argument("--sensors", type=int, default=1_000, help="sensors, 1 reading/s each (default 1,000)")
    ap.add_argument("--partitions", type=int, default=3, help="Kafka partitions (the stack's default, 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kafka-sample", type=int, default=100_000,
                    help="records used for the Kafka log measurement (pure-Python batch builder)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ARGS = args = ap.parse_args(argv)
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    t_all = time.perf_counter()
    timings = {}

    t0 = time.perf_counter()
    registry = make_registry(args.sensors)
    records = generate(registry, args.readings, args.seed)
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lake, readings = parse(records, registry)
    timings["parse_s"] = time.perf_counter() - t0
    sample = records[: min(args.kafka_sample, len(records))]  # for the Kafka log measurement
    del records
    n = len(readings)
    payload_total = sum(len(r.row["payload"]) for r in lake)
    print(f"{n:,} readings from {len(registry):,} sensors (generator seed {args.seed}), "
          f"{args.partitions} Kafka partitions; mean payload {payload_total / n:.1f} B; "
          f"generated in {timings['generate_s']:.1f} s, parsed by ParseReadings in {timings['parse_s']:.1f} s; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (times, not bytes, depend on it)")

    # Flink state: ChunkWriter buffers every raw LakeRecord of an open chunk with PickleCoder.
    sample_lake = lake[:: max(1, len(lake) // 10_000)]
    state_bytes = sum(len(pickle.dumps(r)) for r in sample_lake) / len(sample_lake)

    t0 = time.perf_counter()
    t10k = chunk_tables(lake, PIPELINE_CHUNK)
    timings["sink_tables_s"] = time.perf_counter() - t0  # the sink's grouping + Table.from_pylist
    del lake
    t100k = regroup(t10k, 10)
    typed10k = [(p, t.drop(["payload"])) for p, t in t10k]
    typed100k = [(p, t.drop(["payload"])) for p, t in t100k]
    sort_keys = [("sensor_id", "ascending"), ("event_time", "ascending")]
    sorted100k = [(p, t.sort_by(sort_keys)) for p, t in t100k]
    sorted_typed100k = [(p, t.drop(["payload"])) for p, t in sorted100k]
    timings["tables_s"] = time.perf_counter() - t0
    timings["pipeline_write_s"] = None  # set below
    assert sum(t.num_rows for _, t in t10k) == n

    # The pipeline's own writer, to real files, as the job lays them out.
    with tempfile.TemporaryDirectory(prefix="sensorlake-storage-") as tmp:
        t0 = time.perf_counter()
        for path, t in t10k:
            write_parquet_atomically(f"{tmp}/{path}", t)
        pipeline_write_s = time.perf_counter() - t0
        timings["pipeline_write_s"] = pipeline_write_s
        files = [f"{tmp}/{p}" for p, _ in t10k]
        pipeline_bytes = sum(os.path.getsize(f) for f in files)
        assert sum(pq.read_metadata(f).num_rows for f in files) == n
        codec_seen = pq.read_metadata(files[0]).row_group(0).column(0).compression

    rows: list[dict] = []

    def add(group: str, name: str, tables, nbytes: int, seconds: float | None, note: str = "") -> None:
        rows.append({"group": group, "variant": name, "files": len(tables),
                     "rows_per_file": round(n / len(tables)), "bytes": nbytes,
                     "bytes_per_reading": nbytes / n, "write_s": seconds, "note": note})

    def pq_row(group, name, tables, note="", **opts):
        b, s = parquet_bytes(tables, **opts)
        add(group, name, tables, b, s, note)

    raw = "raw/readings (with payload)"
    typed = "typed columns only (raw without payload)"
    add(raw, "AS THE PIPELINE: zstd-1, dictionary all, 10k rows/file", t10k, pipeline_bytes,
        pipeline_write_s, f"write_parquet_atomically to disk; codec in file: {codec_seen}")
    codecs = [("none", {"compression": "none"}), ("snappy", {"compression": "snappy"}),
              ("lz4", {"compression": "lz4"}), ("gzip-6", {"compression": "gzip"}),
              ("zstd-3", {"compression": "zstd", "compression_level": 3}),
              ("zstd-9", {"compression": "zstd", "compression_level": 9})]
    for group, tables, tables100, tsorted in ((raw, t10k, t100k, sorted100k),
                                              (typed, typed10k, typed100k, sorted_typed100k)):
        if group == typed:
            pq_row(group, "zstd-1, dictionary all (pipeline settings), 10k", tables, compression="zstd")
        for name, opts in codecs:
            pq_row(group, f"{name}, dictionary all, 10k", tables, **opts)
        pq_row(group, "zstd-1, no dictionary, 10k", tables, compression="zstd", use_dictionary=False)
        pq_row(group, "zstd-1, TUNED encodings, 10k", tables, "low-cardinality dictionary + delta ints",
               **TUNED)
        if group == typed:
            pq_row(group, "zstd-1, TUNED + byte_stream_split(value), 10k", tables,
                   **{**TUNED, "column_encoding": {**TUNED["column_encoding"], "value": "BYTE_STREAM_SPLIT"},
                      "use_dictionary": [c for c in TUNED["use_dictionary"] if c != "value"]})
        pq_row(group, "zstd-3, TUNED encodings, 10k", tables, compression_level=3, **TUNED)
        pq_row(group, "zstd-1, dictionary all, 100k rows/file", tables100, compression="zstd")
        pq_row(group, "zstd-1, TUNED encodings, 100k rows/file", tables100, **TUNED)
        pq_row(group, "zstd-3, TUNED, 100k, sorted by sensor_id,event_time", tsorted,
               "what a compaction job would write", compression_level=3, **TUNED)

    t0 = time.perf_counter()
    js = jsonl_bytes(t10k)
    js_s = time.perf_counter() - t0
    for codec, b in js.items():
        add("JSON lines of the same payloads", f"{codec}, 10k lines/file", t10k, b,
            js_s if codec == "none" else None)
    js100 = jsonl_bytes(t100k)
    add("JSON lines of the same payloads", "zstd-3, 100k lines/file", t100k, js100["zstd-3"], None)

    # Where the bytes go: per column, as the pipeline writes today and with the tuned encodings.
    per_column = {"pipeline": column_bytes(t10k, compression="zstd"), "tuned": column_bytes(t10k, **TUNED)}
    per_column = {k: {c: v / n for c, v in d.items()} for k, d in per_column.items()}

    # Reading back: the cost side of the codec choice (all columns, then the BI columns only).
    reads = {}
    bi_cols = ["sensor_id", "event_time", "value"]
    for name, opts in [("zstd-1", {"compression": "zstd"}), ("snappy", {"compression": "snappy"}),
                       ("zstd-9", {"compression": "zstd", "compression_level": 9})]:
        reads[name] = {"all_columns_s": read_seconds(t10k, **opts),
                       "sensor_id,event_time,value_s": read_seconds(t10k, bi_cols, **opts)}

    # The Kafka log (compressed record batches): what retention costs on the brokers.
    kafka = {}
    for per_batch in (1, 4, 8, 16, 32, 64, 128):  # batch fill = rate per producer and partition x linger
        kafka[f"zstd, {per_batch} records/batch"] = kafka_log_bytes(sample, per_batch, DefaultRecordBatch.CODEC_ZSTD) / len(sample)
    kafka["none, 128 records/batch"] = kafka_log_bytes(sample, 128, DefaultRecordBatch.CODEC_NONE) / len(sample)

    # Curated and quality rows: one file per window minute (window_shards=1), and per day compacted.
    cur, qual = curated_tables(readings, registry)
    curated = {}
    for name, tables, schema in (("curated/readings_1min", cur, READINGS_1MIN),
                                 ("quality/sensor_quality_1min", qual, SENSOR_QUALITY)):
        nrows = sum(t.num_rows for _, t in tables)
        b, _ = parquet_bytes(tables, compression="zstd")
        empty = io.BytesIO()
        pq.write_table(schema.empty_table(), empty, compression="zstd")
        overhead = empty.tell()
        day, _ = parquet_bytes([(None, pa.concat_tables([t for _, t in tables]))], compression="zstd")
        curated[name] = {"rows": nrows, "files": len(tables), "rows_per_file": round(nrows / len(tables)),
                         "bytes": b, "bytes_per_row": b / nrows, "file_overhead_bytes": overhead,
                         "marginal_bytes_per_row": (b - overhead * len(tables)) / nrows,
                         "one_file_bytes_per_row": day / nrows}
    timings["total_s"] = time.perf_counter() - t_all

    # ------------------------------------------------------------------ print
    js_none = js["none"]
    print()
    print(f"{'dataset / variant':<58} {'files':>5} {'rows/file':>9} {'MB':>8} {'B/reading':>9} "
          f"{'vs JSONL':>8} {'write s':>7}")
    group = None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            print(f"-- {group}")
        ws = f"{r['write_s']:.2f}" if r["write_s"] is not None else ""
        print(f"   {r['variant']:<55} {r['files']:>5} {r['rows_per_file']:>9,} {r['bytes'] / 1e6:>8.2f} "
              f"{r['bytes_per_reading']:>9.1f} {r['bytes'] / js_none:>8.3f} {ws:>7}")
    print()
    print("Where the bytes go, B/reading per column (raw/readings, 10k rows/file, zstd-1):")
    print(f"   {'column':<16} {'pipeline':>9} {'tuned':>9}")
    for c in per_column["pipeline"]:
        print(f"   {c:<16} {per_column['pipeline'][c]:>9.2f} {per_column['tuned'][c]:>9.2f}")
    print(f"   {'(sum)':<16} {sum(per_column['pipeline'].values()):>9.2f} {sum(per_column['tuned'].values()):>9.2f}"
          "   (the rest of each file is its footer: schema with column descriptions, statistics)")
    print()
    print(f"Kafka log (v2 record batches, bridge's key/headers/timestamp; {len(sample):,} records):")
    for k, v in kafka.items():
        print(f"   {k:<55} {v:>9.1f} B/record")
    print()
    print("Reading back all files (pyarrow, s):")
    for k, v in reads.items():
        print(f"   {k:<10} all columns {v['all_columns_s']:.2f}   sensor_id,event_time,value "
              f"{v['sensor_id,event_time,value_s']:.2f}")
    print()
    print("Curated and quality rows (zstd-1), one file per window minute with every sensor:")
    for k, v in curated.items():
        print(f"   {k:<30} {v['rows']:>7,} rows in {v['files']} files ({v['rows_per_file']:,}/file): "
              f"{v['bytes_per_row']:.1f} B/row; file overhead {v['file_overhead_bytes']:,} B + "
              f"{v['marginal_bytes_per_row']:.1f} B/row; one file for all rows {v['one_file_bytes_per_row']:.1f} B/row")
    print(f"\nPython cost per reading in this process (one core; no Beam runner overhead): ParseReadings "
          f"{timings['parse_s'] / n * 1e6:.1f} us ({n / timings['parse_s']:,.0f}/s), the sink's grouping + "
          f"Table.from_pylist {timings['sink_tables_s'] / n * 1e6:.1f} us, Parquet write {pipeline_write_s / n * 1e6:.1f} us")
    print(f"Flink state per buffered raw row (LakeRecord, PickleCoder): {state_bytes:.0f} B "
          f"(an open {PIPELINE_CHUNK:,}-offset chunk: {state_bytes * PIPELINE_CHUNK / 1e6:.1f} MB)")
    print(f"\ntotal {timings['total_s']:.0f} s")

    result = {
        "benchmark": "storage", "started": started, "machine": machine_info(),
        "options": {"readings": args.readings, "sensors": len(registry), "partitions": args.partitions,
                    "seed": args.seed, "pipeline_chunk_rows": PIPELINE_CHUNK, "start": START.isoformat()},
        "readings": n, "mean_payload_bytes": payload_total / n, "variants": rows, "per_column_bytes_per_reading": per_column,
        "tuned_writer_options": TUNED,
        "jsonl_bytes_per_reading": {k: v / n for k, v in js.items()},
        "read_seconds": reads, "kafka_log_bytes_per_record": kafka,
        "state_bytes_per_buffered_raw_row": state_bytes, "curated": curated, "timings_s": timings,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"storage-{started}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


ARGS: argparse.Namespace


if __name__ == "__main__":
    sys.exit(main())

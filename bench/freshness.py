"""Freshness under live load: how long until a reading, and a closed minute, can be queried.

Not part of pass/fail: prints p50/p95/max and writes them with machine info to
``bench/results/freshness-<UTC time>.json`` (git-ignored). One command:

    .venv/bin/python bench/freshness.py                 # 200 sensors at 1 Hz for 5 minutes
    .venv/bin/python bench/freshness.py --sensors 1000 --minutes 10

It starts its own local stack (ports +45000, temporary home; stopped by pid at the end, also on
Ctrl-C), then the same processes `make up` runs, through their real entry points: the bridge
(`python -m connectors.mqtt_kafka`), the lake job (`sensorlake pipeline run`, its Python workers
in that process) and the generator (`python -m iot_data_generator`, the seed's five sensors plus
synthetic ones, registered, each at 1 Hz, stamped with the time it publishes).

Measured from the files themselves: a Parquet file's modification time is when its rows became
visible (sinks write a temporary file and rename it), so
  raw      = mtime of the first file version holding (sensor, seq)  - the reading's event time
  curated  = mtime of the first file version holding (sensor, minute) - the minute's end
  quality  = the same for quality/sensor_quality_1min
over readings published after a warm-up. Targets: raw p95 <= 30 s, aggregates p95 <= 75 s.
A raw row's time is split by hop: event -> in Kafka (the topic's end offsets, sampled every
0.5 s), in Kafka -> ingest (the row's ingest_time: the job's read) and ingest -> visible (the
job's buffer and flush); and its p95 is given per measured minute, so a backlog left by the start
shows as one, not as a steady state.

Then the quiet tail: the generator stops (its report says, by seq, what the broker acknowledged)
and the topic goes quiet. Every acknowledged reading must still reach raw/, within the raw flush
interval plus the bridge's and the job's own hops, without a next record to push it out.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sensorlake import lake as lake_layout  # noqa: E402
from sensorlake.local.install import install  # noqa: E402
from sensorlake.local.stack import LocalStack, isolated_settings, pid_alive  # noqa: E402
from sensorlake.memory import vm_rss_kb  # noqa: E402
from pipelines.main import parser as job_parser  # noqa: E402
from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION  # noqa: E402

PY = sys.executable
DATASETS = {"raw": lake_layout.RAW_READINGS_DATASET, "curated": lake_layout.READINGS_1MIN_DATASET,
            "quality": lake_layout.SENSOR_QUALITY_DATASET}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class FileWatch:
    """First-seen time of each row key, from the mtime of the file version that first held it.

    ``sql`` selects ``key..., reference_ms, *stamps`` from ``{files}``; ``nkey`` says how many
    leading columns are the key. With ``grows_by`` (the last column, one that only grows within a
    file: the raw chunks' kafka_offset), a rewritten file is read from past the largest value already
    seen, so the watch costs the new rows, not the whole file again: on two cores its CPU is
    taken from the job it measures (it prints what it used)."""

    def __init__(self, root: Path, sql: str, nkey: int, grows_by: str | None = None):
        self.root = root
        self.sql = sql
        self.nkey = nkey
        self.grows_by = grows_by
        self.mtimes: dict[str, float] = {}
        self.read_to: dict[str, int] = {}
        self.first: dict[tuple, tuple] = {}  # key -> (reference ms, visible_at - reference s, *stamps)
        self.db = duckdb.connect()

    def poll(self) -> None:
        changed = []
        for path in self.root.rglob("*.parquet"):
            try:
                m = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if self.mtimes.get(str(path)) != m:
                changed.append((str(path), m))
        for path, m in changed:
            sql = self.sql.format(files=f"read_parquet('{path}')")
            if self.grows_by:
                sql = f"select * from ({sql}) where {self.grows_by} > {self.read_to.get(path, -1)}"
            try:
                rows = self.db.execute(sql).fetchall()
            except (duckdb.IOException, duckdb.InvalidInputException):
                continue  # replaced while we read it: the next poll sees the new version
            self.mtimes[path] = m
            n = self.nkey
            for row in rows:
                ref_ms = row[n]
                self.first.setdefault(row[:n], (ref_ms, m - ref_ms / 1000, *row[n + 1:]))
            if self.grows_by and rows:
                self.read_to[path] = max(self.read_to.get(path, -1), max(r[-1] for r in rows))

    def latencies(self, from_ms: int, to_ms: int) -> list[float]:
        return [v[1] for v in self.first.values() if from_ms <= v[0] < to_ms]

    def split(self, from_ms: int, to_ms: int, kafka: "EndOffsets") -> dict[str, list[float]]:
        """Raw rows by hop (stamps: ingest ms, partition, offset): event -> in Kafka (generator,
        MQTT, bridge), in Kafka -> ingest (the job's read: Kafka source, bundles, the Python
        worker's queue) and ingest -> visible (the job's buffer until the flush, and the write)."""
        hops: dict[str, list[float]] = {"event_to_kafka": [], "kafka_to_ingest": [], "ingest_to_visible": []}
        for ref, lat, ingest_ms, partition, offset in (v for v in self.first.values() if from_ms <= v[0] < to_ms):
            ingest = ingest_ms / 1000
            written = kafka.written_by(partition, offset)
            if written is not None:
                hops["event_to_kafka"].append(written - ref / 1000)
                hops["kafka_to_ingest"].append(ingest - written)
            hops["ingest_to_visible"].append(lat - (ingest - ref / 1000))
        return hops


class EndOffsets:
    """When each Kafka offset was written: the topic's end offsets, sampled every ``every`` s in a
    thread of its own (a slow file scan must not stretch the samples)."""

    def __init__(self, bootstrap: str, topic: str, every: float = 0.5):
        self.bootstrap, self.topic, self.every = bootstrap, topic, every
        self.series: dict[int, tuple[list[int], list[float]]] = {}  # partition -> (end offsets, times)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="end-offsets", daemon=True)

    def start(self) -> "EndOffsets":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        try:
            while not self._stop.wait(self.every):
                try:
                    parts = consumer.partitions_for_topic(self.topic)
                    if not parts:
                        consumer.topics()  # the bridge creates the topic: refresh the metadata
                        continue
                    end = consumer.end_offsets([TopicPartition(self.topic, p) for p in parts])
                except Exception:  # noqa: BLE001 - a missed sample only widens the next interval
                    continue
                now = time.time()
                for tp, e in end.items():
                    ends, times = self.series.setdefault(tp.partition, ([], []))
                    if not ends or e > ends[-1]:
                        ends.append(e)
                        times.append(now)
        finally:
            consumer.close()

    def written_by(self, partition: int, offset: int) -> float | None:
        """The first sample at which the record was in Kafka (at most ``every`` s late)."""
        ends, times = self.series.get(partition, ([], []))
        i = bisect.bisect_right(ends, offset)
        return times[i] if i < len(times) else None


def spawn(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=REPO,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 60) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process on the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                rest = fh.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        out[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLOCK_TICKS)
    return out


def tree_usage(roots: dict[str, int]) -> dict[str, dict]:
    """Per role: RSS (kB) and CPU seconds summed over the process tree below its root pid."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    usage = {}
    for role, root in roots.items():
        pids, todo = [], [root] if root in table else []
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, []))
        usage[role] = {"rss_kb": sum(vm_rss_kb(p) for p in pids), "cpu_s": round(sum(table[p][1] for p in pids), 2),
                       "procs": len(pids)}
    return usage


def roles_cpu(stack: LocalStack, procs: dict[str, subprocess.Popen]) -> dict[str, float]:
    """CPU seconds of every running role's process tree: the stack's services and the benchmark's own."""
    roots = {n: pid for n in stack.ORDER if (pid := stack.pid(n))} | {n: p.pid for n, p in procs.items()}
    return {role: u["cpu_s"] for role, u in tree_usage(roots).items() if u["procs"]}


def quiet_tail(procs: dict, report: Path, raw: FileWatch, wait_s: float) -> dict:
    """Stops the generator and waits until raw/ holds every reading the broker acknowledged."""
    stopped_at = time.time()
    stop(procs.pop("generator"), signal.SIGINT)
    doc = json.loads(report.read_text())
    acked = {(sid, seq) for sid, r in doc["sensors"].items() for lo, hi in r["seqs_sent"] for seq in range(lo, hi + 1)}
    deadline = time.monotonic() + wait_s
    while True:
        raw.poll()
        missing = acked - raw.first.keys()
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # The newest file version seen is the one that made the last reading visible.
    last = max(raw.mtimes.values(), default=None)
    return {"acked": len(acked), "in_raw": len(acked) - len(missing), "missing": len(missing),
            "generator_elapsed_s": doc.get("elapsed_s"),
            "last_visible_after_stop_s": round(last - stopped_at, 1) if last and not missing else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=200, help="synthetic sensors besides the seed's five")
    ap.add_argument("--minutes", type=float, default=5.0, help="measured live time after the warm-up")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds of traffic not measured")
    ap.add_argument("--offset", type=int, default=45_000, help="port offset of the benchmark's stack")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="after the generator stops, wait this long for its last readings in raw/")
    job_defaults = job_parser().parse_args([])
    ap.add_argument("--flush-seconds", type=float, default=job_defaults.flush_seconds,
                    help="the job's raw flush interval (default: the job's)")
    ap.add_argument("--window-flush-seconds", type=float, default=job_defaults.window_flush_seconds,
                    help="the job's 1-minute flush interval (default: the job's)")
    a = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="sensorlake-fresh-"))
    settings = isolated_settings(home, a.offset, bridge_metrics_port=0)
    stack = LocalStack(settings, install(settings))
    procs: dict[str, subprocess.Popen] = {}
    kafka: EndOffsets | None = None
    interrupted = False

    def on_signal(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        say(f"starting the stack in {home} (ports +{a.offset})")
        stack.up(progress=lambda m: None)
        s = stack.settings
        registry = home / "sensors.json"
        subprocess.run([PY, "-m", "iot_data_generator", "--sensors", str(a.sensors), "--write-registry",
                        str(registry), "--dry-run", "--count", "1"], cwd=REPO, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
        env = {**s.as_env(), "SENSORLAKE_REGISTRY": str(registry)}
        procs["bridge"] = spawn([PY, "-m", "connectors.mqtt_kafka"], env, home / "bridge.log")
        procs["pipeline"] = spawn([PY, "-m", "sensorlake.cli", "pipeline", "run", "--flush-seconds",
                                   str(a.flush_seconds), "--window-flush-seconds", str(a.window_flush_seconds)],
                                  env, home / "pipeline.log")
        from sensorlake import flink_rest
        from pipelines.main import JOB_NAME

        deadline = time.monotonic() + 300
        while not ((job := flink_rest.find_job(s, JOB_NAME)) and job["state"] == "RUNNING"):
            if procs["pipeline"].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the job did not start; see {home / 'pipeline.log'}")
            time.sleep(2)
        kafka = EndOffsets(s.kafka_bootstrap, s.kafka_topic).start()
        say("job RUNNING; starting the generator")
        report = home / "generator-report.json"
        procs["generator"] = spawn([PY, "-m", "iot_data_generator", "--registry", str(registry),
                                    "--client-id", "bench-freshness", "--report", str(report)],
                                   env, home / "generator.log")
        measure_from_ms = int((time.time() + a.warmup) * 1000)
        lake = Path(s.lake)
        watches = {
            "raw": FileWatch(lake / DATASETS["raw"], "select sensor_id, seq, epoch_ms(event_time), "
                             "epoch_ms(ingest_time), kafka_partition, kafka_offset from {files}", nkey=2, grows_by="kafka_offset"),
            "curated": FileWatch(lake / DATASETS["curated"],
                                 "select sensor_id, epoch_ms(window_start), epoch_ms(window_end) from {files}", nkey=2),
            "quality": FileWatch(lake / DATASETS["quality"],
                                 "select sensor_id, epoch_ms(window_start), epoch_ms(window_end) from {files}", nkey=2),
        }
        end = time.monotonic() + a.warmup + a.minutes * 60 + a.flush_seconds + 90
        next_say = 0.0
        span_ms = (measure_from_ms, measure_from_ms + int(a.minutes * 60_000))
        cpu_marks: list[tuple[float, dict[str, float]]] = []  # at the start and the end of the measured span
        while time.monotonic() < end:
            if len(cpu_marks) < 2 and time.time() * 1000 >= span_ms[len(cpu_marks)]:
                cpu_marks.append((time.time(), roles_cpu(stack, procs)))
            for w in watches.values():
                w.poll()
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{name} exited ({p.returncode}); see {home / (name + '.log')}")
            if time.monotonic() > next_say:
                say("seen: " + ", ".join(f"{k} {len(w.first)}" for k, w in watches.items()))
                next_say = time.monotonic() + 30
            time.sleep(0.5)
        quiet = quiet_tail(procs, report, watches["raw"], a.quiet_wait)
        say(f"quiet tail: {quiet}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if kafka is not None:
            kafka.stop()
        for name in ("generator", "pipeline", "bridge"):
            stop(procs.get(name), signal.SIGINT if name != "bridge" else signal.SIGTERM)
        stack.down(progress=lambda m: None)
        leftover = [n for n, p in procs.items() if pid_alive(p.pid)]
        if leftover:
            say(f"warning: still running: {leftover}")
    if interrupted:
        say("interrupted")
        return 130

    stop_ms = measure_from_ms + int(a.minutes * 60_000)
    table = []
    for name, w in watches.items():  # readings published / minutes ended inside the measured span
        vals = w.latencies(measure_from_ms, stop_ms)
        table.append((name, len(vals), percentile(vals, 0.5), percentile(vals, 0.95), max(vals) if vals else None))
    print(f"\nfreshness over {a.minutes:g} min of live traffic ({a.sensors + 5} sensors at 1 Hz), "
          f"flush {a.flush_seconds:g} s / windows {a.window_flush_seconds:g} s")
    print(f"{'dataset':<10} {'rows':>8} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for name, n, p50, p95, mx in table:
        f = lambda x: f"{x:8.1f}" if x is not None else "       -"  # noqa: E731
        print(f"{name:<10} {n:>8} {f(p50)} {f(p95)} {f(mx)}")
    f50 = lambda v: f"{percentile(v, 0.5):.1f}" if v else "-"  # noqa: E731
    f95 = lambda v: f"{percentile(v, 0.95):.1f}" if v else "-"  # noqa: E731
    hops = watches["raw"].split(measure_from_ms, stop_ms, kafka)
    print("raw p50/p95 by hop: " + "; ".join(f"{name.replace('_to_', ' -> ')} {f50(v)}/{f95(v)} s"
                                             for name, v in hops.items()))
    minutes = range(measure_from_ms, stop_ms, 60_000)
    by_minute = {"total": [percentile(watches["raw"].latencies(t, t + 60_000), 0.95) for t in minutes]}
    for t in minutes:
        for name, v in watches["raw"].split(t, t + 60_000, kafka).items():
            by_minute.setdefault(name, []).append(percentile(v, 0.95))
    print("raw p95 s per measured minute:")
    for name, v in by_minute.items():
        print(f"  {name.replace('_to_', ' -> '):<20} " + " ".join(f"{x:5.1f}" if x is not None else "    -" for x in v))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"this benchmark's own CPU (file scans): {cpu.ru_utime + cpu.ru_stime:.0f} s")
    cores: dict[str, float] = {}
    if len(cpu_marks) == 2:
        (t0, c0), (t1, c1) = cpu_marks
        cores = {k: (c1[k] - c0[k]) / max(1e-9, t1 - t0) for k in c1 if k in c0}
        print("cores used over the measured minutes: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(cores.items(), key=lambda kv: -kv[1])) + f"; {sum(cores.values()):.2f} in all")
    requested = a.sensors + 5  # every sensor at 1 Hz
    sent_rate = quiet["acked"] / quiet["generator_elapsed_s"] if quiet.get("generator_elapsed_s") else None
    if sent_rate is not None:
        print(f"generator: {sent_rate:,.0f} readings/s acknowledged of the {requested:,} requested"
              + ("" if sent_rate >= 0.98 * requested else
                 " - behind its schedule; readings keep their scheduled time, so 'event -> kafka' includes "
                 "the generator's own lag"))
    print(f"quiet tail: {quiet['in_raw']:,} of {quiet['acked']:,} acknowledged readings in raw/; the last "
          f"one visible {quiet['last_visible_after_stop_s']} s after the generator stopped "
          f"(raw flush {a.flush_seconds:g} s)")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"freshness-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({
        "benchmark": "freshness", "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "measured_from_ms": measure_from_ms, "stop_ms": stop_ms,
        "results": {n: {"rows": c, "p50_s": p50, "p95_s": p95, "max_s": mx} for n, c, p50, p95, mx in table},
        "raw_hops": {name: {"p50_s": percentile(v, 0.5), "p95_s": percentile(v, 0.95), "rows": len(v)}
                     for name, v in hops.items()},
        "raw_p95_per_minute_s": by_minute, "cores": cores, "generator_readings_per_s": sent_rate,
        "requested_readings_per_s": requested,
        "benchmark_cpu_s": cpu.ru_utime + cpu.ru_stime,
        "quiet_tail": quiet,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg(),
                    "beam": BEAM_VERSION, "flink": FLINK_VERSION, "kafka": KAFKA_VERSION},
        "options": vars(a)}, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

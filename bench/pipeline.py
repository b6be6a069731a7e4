"""Pipeline throughput: our Beam job on Flink against a native Flink SQL job, on one preloaded topic.

Not part of pass/fail: it prints figures and writes them, with machine and version info, to
``bench/results/pipeline-<UTC time>.json`` (git-ignored). One command:

    .venv/bin/python bench/pipeline.py                  # 1,000,000 readings of 1,000 sensors
    .venv/bin/python bench/pipeline.py --readings 100000 --profile 40   # quick, with py-spy

What it does:
1. Starts its own local stack (Kafka, Flink JobManager + TaskManager, Beam expansion service and
   job server; ports +40000, state in a temporary folder) and stops it by pid at the end, also on
   Ctrl-C. ``--reuse-home DIR`` keeps a stack up between runs while developing.
2. Preloads N readings into a fresh topic (the stack's partition count): every sensor reports at
   1 Hz from a whole minute three hours ago, payloads in our contract JSON (as the generator
   sends them, with seq), key = sensor id, record timestamp = event time, the bridge's headers.
   Then one *closer* per sensor, stamped 75 s after the last full minute, so that every minute
   with readings can close (like the integration test's closers). Produced by several processes.
3. Runs our job (``pipelines.main.run`` in a child process, LOOPBACK: its Python workers run in
   that process, which py-spy can sample) with a fresh consumer group and lake, and times it
   until raw/readings holds every record (N + closers) and curated/ and quality/ hold every
   sensor-minute that can close. Then cancels it.
4. Runs the native reference (bench/flink_sql_reference.py, PyFlink Table API from the Flink
   venv) on the same cluster and topic, and times it until its Parquet files hold every closed
   sensor-minute. Its jars come from Maven Central (bench/flink-sql-jars/pom.xml) into the cache.
5. Prints events/s of both (from submission, and from the job's RUNNING state) and the ratio
   ours/native, every role's CPU, each Flink task's busy / back-pressured / idle time while the
   job ran (``OperatorTimes``), cross-checks the two jobs' means, and writes the JSON.

Events/s = records in the topic / seconds until the last row is readable, so sink flush delays
count: ``--flush-seconds``/``--window-flush-seconds`` (our job) and ``--checkpoint-ms`` (the
native sink commits files on checkpoints) are set alike, 5 s by default.

Run time on the 2-core machine: about 15 minutes for the default with the bundle options of
bench/PIPELINE.md (our job ~12 of them), an estimated 30 to 60 with the Flink runner's default
bundles (1.2-1.8 ms of Python CPU per event); use
``--readings 100000`` for a quick look. Figures, profiles and recommendations: bench/PIPELINE.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import multiprocessing as mp
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sensorlake import flink_rest  # noqa: E402
from sensorlake.lake import MINUTES, QUALITY, RAW, Dataset, minute_file_start  # noqa: E402
from sensorlake.settings import BEAM_VERSION, FLINK_VERSION, KAFKA_VERSION, Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
NATIVE_JOB = REPO / "bench" / "flink_sql_reference.py"
NATIVE_POM = REPO / "bench" / "flink-sql-jars" / "pom.xml"
UTC = timezone.utc
WINDOW_MS = 60_000
CLOSER_DELAY_MS = 75_000  # past the last full minute: + 60 s window + 10 s out-of-orderness + 5 s
OURS_JOB = "sensorlake-bench-ours"
NATIVE_JOB_NAME = "sensorlake-bench-native"
SERVICES = ["kafka", "flink-jobmanager", "flink-taskmanager", "expansion", "jobserver"]


class Interrupted(Exception):
    """SIGTERM: unwind like Ctrl-C, so that the stack is stopped."""


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ====================================================================== stack and settings
def rest(settings: Settings, path: str, method: str = "GET"):
    return flink_rest.call(settings, path, method=method, timeout=5)


def job_ids(settings: Settings, name: str) -> set[str]:
    try:
        return {j["jid"] for j in rest(settings, "/jobs/overview")["jobs"] if j.get("name") == name}
    except OSError:
        return set()


def flink_job(settings: Settings, name: str, exclude: set[str] = frozenset()) -> dict | None:
    """The newest job of that name (overview row) not in ``exclude`` (earlier runs), or None."""
    try:
        jobs = [j for j in rest(settings, "/jobs/overview")["jobs"] if j.get("name") == name
                and j["jid"] not in exclude]
    except OSError:
        return None
    return max(jobs, key=lambda j: j.get("start-time", 0)) if jobs else None


def job_running(settings: Settings, name: str, exclude: set[str] = frozenset()) -> bool:
    """RUNNING with every task running (not merely scheduled)."""
    j = flink_job(settings, name, exclude)
    if not j or j.get("state") != "RUNNING":
        return False
    tasks = j.get("tasks", {})
    return tasks.get("running", 0) > 0 and tasks.get("running", 0) == tasks.get("total", -1)


def cancel_job(settings: Settings, name: str, exclude: set[str] = frozenset(), timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = flink_job(settings, name, exclude)
        if not j or j["state"] in ("CANCELED", "FAILED", "FINISHED"):
            return
        if j["state"] != "CANCELLING":
            try:
                rest(settings, f"/jobs/{j['jid']}?mode=cancel", method="PATCH")
            except OSError:
                pass
        time.sleep(1)
    say(f"warning: Flink job {name} still not cancelled after {timeout:.0f}s")


# ====================================================================== the data
@dataclass(frozen=True)
class Plan:
    """Which readings exist, and so how many rows each output must end up with."""

    readings: int
    sensors: int
    t0_ms: int

    def count(self, i: int) -> int:
        return self.readings // self.sensors + (1 if i < self.readings % self.sensors else 0)

    def phase_ms(self, i: int) -> int:
        # Sensors are staggered across the second (as the generator staggers publish times).
        return i * 1000 // self.sensors

    def sensor_id(self, i: int) -> str:
        return str(i + 1)

    def last_window(self, i: int) -> int:
        last = self.t0_ms + (self.count(i) - 1) * 1000 + self.phase_ms(i)
        return last - last % WINDOW_MS

    @property
    def closer_ms(self) -> int:
        return max(self.last_window(i) for i in range(self.sensors)) + CLOSER_DELAY_MS

    @property
    def cutoff_ms(self) -> int:
        """Windows starting before this close; the closers' own minute stays open."""
        return self.closer_ms - CLOSER_DELAY_MS + WINDOW_MS

    @property
    def records(self) -> int:
        return self.readings + self.sensors

    @property
    def curated_rows(self) -> int:
        return sum((self.last_window(i) - self.t0_ms) // WINDOW_MS + 1 for i in range(self.sensors))

    @property
    def quality_rows(self) -> int:
        # Registered sensors get a row for every minute up to the cutoff, `missing` when empty.
        return self.sensors * ((self.cutoff_ms - self.t0_ms) // WINDOW_MS)


def registry_doc(plan: Plan) -> dict:
    return {plan.sensor_id(i): {"lat": 40.0 + i / 1e4, "lng": -3.7, "unit": "C", "type": "temperature",
                                "range": [-40, 85], "description": f"bench sensor {i + 1}", "interval_ms": 1000}
            for i in range(plan.sensors)}


def _iso(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
            f"{t.tm_sec:02d}.{ms % 1000:03d}000Z")


def _payload(sid: str, ms: int, value: float, seq: int) -> bytes:
    return (f'{{"sensor_id": "{sid}", "timestamp": "{_iso(ms)}", "value": {value!r}, "seq": {seq}, '
            f'"metadata": {{"unit": "C", "type": "temperature"}}}}').encode()


def _producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50, batch_size=1 << 20, max_request_size=8 << 20,
                         max_in_flight_requests_per_connection=5)


def kafka_partition(sid: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for this key (murmur2, as the bridge's
    producer and the Java clients do)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(sid.encode()) & 0x7FFFFFFF) % partitions


def _send(producer, topic: str, partition: int, sid: str, ms: int, value: float, seq: int):
    return producer.send(topic, key=sid.encode(), partition=partition, value=_payload(sid, ms, value, seq),
                         timestamp_ms=ms,
                         headers=[("mqtt_topic", f"sensors/{sid}".encode()), ("receive_ms", b"%d" % (ms + 25)),
                                  ("bridge_id", b"bench"), ("mqtt_dup", b"0")])


def produce_slice(bootstrap: str, topic: str, plan: Plan, mine: list[int], partition: dict[int, int], seed: int,
                  done) -> None:
    """The sensors of some partitions, time-major. Each partition is written by one process only,
    so it is in event-time order (two processes writing one partition at their own pace would
    interleave it minutes apart, which an event-time job with a 10 s bound drops as late)."""
    producer = _producer(bootstrap)
    rng = random.Random(seed)
    phase = {i: rng.uniform(0, 2 * math.pi) for i in mine}
    sent = 0
    for k in range(max(plan.count(i) for i in mine) if mine else 0):
        for i in mine:
            if k >= plan.count(i):
                continue
            ms = plan.t0_ms + k * 1000 + plan.phase_ms(i)
            value = round(20 + 8 * math.sin(ms / 3.6e6 + phase[i]) + rng.gauss(0, 0.2), 3)
            _send(producer, topic, partition[i], plan.sensor_id(i), ms, value, k)
            sent += 1
    producer.flush()
    producer.close()
    done.put(sent)


def preload(settings: Settings, topic: str, plan: Plan, processes: int) -> dict:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, settings.kafka_partitions, 1, topic_configs={"retention.ms": "-1"})])
    admin.close()
    started = time.monotonic()
    ctx = mp.get_context("fork")
    done = ctx.Queue()
    parts = settings.kafka_partitions
    partition = {i: kafka_partition(plan.sensor_id(i), parts) for i in range(plan.sensors)}
    processes = max(1, min(processes, parts))
    slices = [[i for i in range(plan.sensors) if partition[i] % processes == n] for n in range(processes)]
    procs = [ctx.Process(target=produce_slice, args=(settings.kafka_bootstrap, topic, plan, mine, partition, n, done),
                         daemon=True) for n, mine in enumerate(slices) if mine]
    for p in procs:
        p.start()
    try:
        sent = 0
        while any(p.exitcode is None for p in procs) and sent < plan.readings:
            try:
                sent += done.get(timeout=1)
            except Exception:  # noqa: BLE001 - queue.Empty
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a producer process failed") from None
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
    # The closers: one reading per sensor, after every other one.
    producer = _producer(settings.kafka_bootstrap)
    for i in range(plan.sensors):
        _send(producer, topic, partition[i], plan.sensor_id(i), plan.closer_ms, 20.0, plan.count(i))
    producer.flush()
    producer.close()
    seconds = time.monotonic() - started
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
    ends = consumer.end_offsets(parts)
    consumer.close()
    total = sum(ends.values())
    if total != plan.records:
        raise RuntimeError(f"topic {topic} holds {total} records, expected {plan.records}")
    return {"records": total, "seconds": round(seconds, 2), "records_per_s": round(total / seconds),
            "processes": processes, "per_partition": {tp.partition: n for tp, n in ends.items()}}


# ====================================================================== counting rows
class RowCounter:
    """Rows in Parquet files, from their footers; a file is read again only when it changed."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int, int]] = {}

    def rows(self, paths) -> int:
        import pyarrow.parquet as pq

        total = 0
        for path in paths:
            try:
                st = os.stat(path)
                key = (st.st_mtime_ns, st.st_size)
                hit = self._cache.get(path)
                if hit is None or hit[:2] != key:
                    hit = (*key, pq.read_metadata(path).num_rows)
                    self._cache[path] = hit
                total += hit[2]
            except (OSError, ValueError):  # replaced or half-visible: next round
                continue
        return total


class OursProgress:
    def __init__(self, lake: Path, plan: Plan):
        self.lake, self.plan, self.counter = lake, plan, RowCounter()

    def _minutes(self, ds: Dataset) -> int:
        files = [f for f in glob.glob(ds.glob(str(self.lake)))
                 if (m := minute_file_start(f)) is not None and self.plan.t0_ms <= m < self.plan.cutoff_ms]
        return self.counter.rows(files)

    def counts(self) -> dict[str, int]:
        return {"raw": self.counter.rows(glob.glob(RAW.glob(str(self.lake)))),
                "curated": self._minutes(MINUTES), "quality": self._minutes(QUALITY)}

    def targets(self) -> dict[str, int]:
        return {"raw": self.plan.records, "curated": self.plan.curated_rows, "quality": self.plan.quality_rows}


class NativeProgress:
    def __init__(self, out: Path, plan: Plan, with_raw: bool):
        self.out, self.plan, self.with_raw, self.counter = out, plan, with_raw, RowCounter()

    def _files(self, name: str) -> list[str]:
        # Committed files only: in-progress ones are hidden (".part-...").
        return [f for f in glob.glob(f"{self.out}/{name}/dt=*/*") if not Path(f).name.startswith(".")]

    def counts(self) -> dict[str, int]:
        c = {"minutes": self.counter.rows(self._files("minutes"))}
        if self.with_raw:
            c["raw"] = self.counter.rows(self._files("raw"))
        return c

    def targets(self) -> dict[str, int]:
        t = {"minutes": self.plan.curated_rows}
        if self.with_raw:
            t["raw"] = self.plan.records
        return t


# ====================================================================== processes and CPU
class CpuMeter:
    """CPU seconds of named processes (and their children, unless ``alone`` names them) between
    start() and stop()."""

    def __init__(self, pids: dict[str, int], alone: frozenset[str] = frozenset()):
        import psutil

        self._procs = {}
        for name, pid in pids.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                pass
        self._alone_pids = {p.pid for n, p in self._procs.items() if n in alone}
        self._start: dict[str, float] = {}

    def _cpu(self, p) -> float:
        import psutil

        total = 0.0
        for q in [p] if p.pid in self._alone_pids else [p, *p.children(recursive=True)]:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def start(self) -> None:
        self._start = {n: self._cpu(p) for n, p in self._procs.items()}
        self._t = time.monotonic()

    def stop(self) -> dict:
        wall = time.monotonic() - self._t
        return {n: {"cpu_s": round(self._cpu(p) - self._start.get(n, 0.0), 1),
                    "cores": round((self._cpu(p) - self._start.get(n, 0.0)) / wall, 2) if wall else None}
                for n, p in self._procs.items()}


class OperatorTimes:
    """Where each Flink task's time goes while a job runs: busy, back-pressured or idle, in ms per
    second (Flink's task metrics, averaged over the task's subtasks), sampled every few seconds on
    a thread. A stage that is busy while the one before it is back-pressured is the one that
    limits the job. A Beam stage's Flink thread is idle while Python works on what it was given,
    so stages all below 1,000 ms/s busy and not back-pressured point outside Flink's threads
    (bench/source_stage.py tells the source apart; bench/PIPELINE.md)."""

    METRICS = ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond")

    def __init__(self, settings: Settings, job_name: str, earlier: set[str], every: float = 2.0):
        import threading

        self._settings, self._name, self._earlier, self._every = settings, job_name, earlier, every
        self._samples: dict[str, list[dict[str, float]]] = {}
        self._names: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator-times", daemon=True)

    def start(self) -> "OperatorTimes":
        self._thread.start()
        return self

    def _run(self) -> None:
        jid = None
        while not self._stop.wait(self._every):
            try:
                if jid is None:
                    j = flink_job(self._settings, self._name, self._earlier)
                    if not j or j.get("state") != "RUNNING":
                        continue
                    jid = j["jid"]
                    self._names = {v["id"]: v["name"] for v in rest(self._settings, f"/jobs/{jid}")["vertices"]}
                for vid in self._names:
                    got = rest(self._settings, f"/jobs/{jid}/vertices/{vid}/subtasks/metrics"
                                               f"?get={','.join(self.METRICS)}&agg=avg")
                    vals = {m["id"]: float(m["avg"]) for m in got if "avg" in m}  # "NaN" comes as a string
                    if len(vals) == len(self.METRICS) and not any(math.isnan(v) for v in vals.values()):
                        self._samples.setdefault(vid, []).append(vals)
            except flink_rest.FlinkRestError:
                continue  # the job is ending, or REST is slow for a moment: the next sample counts

    def stop(self) -> list[dict]:
        """Per task, in the job graph's order: its name and its mean ms/s of each metric."""
        self._stop.set()
        self._thread.join(10)
        out = []
        for vid, name in self._names.items():
            got = self._samples.get(vid, [])
            # A legacy source's task reports NaN busy time (its own thread does the work): kept, as None.
            out.append({"task": _task_name(name), "name": name, "samples": len(got),
                        **{m: round(sum(s[m] for s in got) / len(got)) if got else None for m in self.METRICS}})
        return out


def _task_name(name: str, width: int = 90) -> str:
    """Flink's task names chain every operator's (Beam's full transform paths): keep the first and
    last operator and how many were chained."""
    ops = [o.strip() for o in name.replace("Source: ", "").split(" -> ")]
    short = ops[0] if len(ops) == 1 else f"{ops[0]} -> ... -> {ops[-1]} ({len(ops)} ops)"
    return short if len(short) <= width else short[: width - 3] + "..."


def wait_rows(what: str, progress, settings: Settings, job_name: str, earlier: set[str], submitted: float,
              timeout: float, on_first_rows=None, proc: subprocess.Popen | None = None) -> dict:
    """Polls until every target is met; prints progress; returns the timings."""
    targets = progress.targets()
    running_at = first_at = None
    last_print = 0.0
    last = (submitted, 0)
    deadline = submitted + timeout
    counts = {k: 0 for k in targets}
    while True:
        now = time.monotonic()
        if running_at is None and job_running(settings, job_name, earlier):
            running_at = now
            say(f"{what}: job RUNNING {now - submitted:.1f}s after submission")
        counts = progress.counts()
        main = next(iter(targets))
        if first_at is None and any(counts.values()):
            first_at = now
            if on_first_rows:
                on_first_rows()
        if all(counts[k] >= targets[k] for k in targets):
            break
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the job's process exited ({proc.returncode}) before all rows were written")
        j = flink_job(settings, job_name, earlier)
        if j and j["state"] in ("FAILED", "CANCELED"):
            raise RuntimeError(f"{what}: Flink job {job_name} is {j['state']}; see the TaskManager log")
        if now > deadline:
            say(f"{what}: timed out after {timeout:.0f}s with {counts} of {targets}")
            return {"complete": False, "counts": counts, "targets": targets}
        if now - last_print >= 5:
            rate = (counts[main] - last[1]) / (now - last[0]) if now > last[0] else 0
            avg = counts[main] / (now - submitted)
            say(f"{what}: {now - submitted:6.1f}s  " + "  ".join(f"{k} {counts[k]:,}/{targets[k]:,}" for k in targets)
                + f"  ({rate:,.0f} {main} rows/s now, {avg:,.0f}/s since submission)")
            last_print, last = now, (now, counts[main])
        time.sleep(1)
    done = time.monotonic()
    say(f"{what}: all rows written {done - submitted:.1f}s after submission: {counts}")
    return {"complete": True, "counts": counts, "targets": targets, "seconds_from_submit": round(done - submitted, 2),
            "seconds_from_running": round(done - running_at, 2) if running_at else None,
            "seconds_to_running": round(running_at - submitted, 2) if running_at else None,
            "seconds_to_first_rows": round(first_at - submitted, 2) if first_at else None}


# ====================================================================== our job
def ours_child(argv: list[str]) -> int:
    """Child process: submits our job (LOOPBACK: its Python workers run here) and serves it until
    SIGTERM, then cancels it. Settings come from SENSORLAKE_* (the parent's settings)."""
    p = argparse.ArgumentParser()
    p.add_argument("--beam-arg", action="append", default=[])
    a, job_argv = p.parse_known_args(argv)
    from pipelines import main as job

    settings = Settings.load()
    state: dict = {"result": None, "stop": False}

    def stop(*_):
        state["stop"] = True
        if state["result"] is not None:  # else: cancelled as soon as the submission returns
            try:
                state["result"].cancel()
            finally:
                os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    if a.beam_arg:
        state["result"] = _submit_with_options(job, job_argv, settings, a.beam_arg)
    else:
        state["result"] = job.run(job_argv, settings=settings)
    if state["stop"]:
        stop()
    print("SUBMITTED", flush=True)
    state["result"].wait_until_finish()
    return 0


def _submit_with_options(job, argv: list[str], settings: Settings, extra: list[str]):
    """pipelines.main.submit with extra Beam options (main.run takes none): for trying knobs such
    as --sdk_worker_parallelism or --max_bundle_size without editing pipelines/."""
    from pipelines import stable_ids
    from pipelines.options import flink_options
    from sensorlake.quality import Thresholds  # noqa: F401 - imported by main.build
    from pipelines.registry_source import RegistrySource, store_registry_version

    args = job.parser().parse_args(argv)
    raw = Path(settings.registry).read_bytes()
    store_registry_version(settings.lake, raw)
    registry = RegistrySource(settings.registry, settings.lake, settings.registry_refresh_s, initial=raw)
    p = stable_ids.pipeline(flink_options(settings, args.job_name, extra=extra))
    job.build(p, settings, registry, args.flush_seconds, args.chunk_size, args.group_id, args.window_flush_seconds)
    return p.run()


def start_worker_pool(settings: Settings, home: Path, port: int) -> subprocess.Popen:
    """An EXTERNAL Beam worker pool: it starts one SDK worker *process* per request, so
    --sdk_worker_parallelism can use more than one core (LOOPBACK workers are threads)."""
    log = open(home / "logs" / "worker-pool.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            # It starts workers as `python -c ...`: this venv's python first on PATH.
                            env={**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO),
                                 "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
                            start_new_session=True)


def run_ours(a, settings: Settings, stack, topic: str, plan: Plan, home: Path) -> dict:
    lake = home / f"lake-{uuid.uuid4().hex[:6]}"
    s = settings.replace(lake=str(lake), kafka_topic=topic, parallelism=a.parallelism)
    pool = None
    if a.worker_pool:
        port = settings.flink_rest_port + 10  # 48091 with the default offset
        pool = start_worker_pool(s, home, port)
        s = s.replace(environment_type="EXTERNAL", environment_config=f"127.0.0.1:{port}")
    job_argv = ["--flush-seconds", str(a.flush_seconds), "--window-flush-seconds", str(a.window_flush_seconds),
                "--group-id", f"bench-ours-{uuid.uuid4().hex[:8]}", "--job-name", OURS_JOB,
                *[f"--beam-arg={x}" for x in a.beam_arg]]
    log_path = home / "logs" / "ours.log"
    say(f"ours: submitting (parallelism {s.parallelism}, {s.environment_type}"
        f"{', ' + ' '.join(a.beam_arg) if a.beam_arg else ''}); log {log_path}")
    log = open(log_path, "ab")
    earlier = job_ids(s, OURS_JOB)
    submitted = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_ours", *job_argv], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **s.as_env()},
                            start_new_session=True)
    pids = {"ours_python": proc.pid, "taskmanager": stack.pid("flink-taskmanager"),
            "jobmanager": stack.pid("flink-jobmanager"), "kafka": stack.pid("kafka")}
    if pool:
        pids["worker_pool"] = pool.pid
    meter = CpuMeter({k: v for k, v in pids.items() if v})
    meter.start()
    operators = OperatorTimes(s, OURS_JOB, earlier).start()
    profile: dict = {}

    def on_first_rows():
        if a.profile:
            target = pool.pid if pool else proc.pid
            profile.update(start_profile(a, target, home, subprocesses=bool(pool)))

    try:
        timing = wait_rows("ours", OursProgress(lake, plan), s, OURS_JOB, earlier, submitted, a.timeout,
                           on_first_rows, proc)
        timing["cpu"] = meter.stop()
        timing["operators"] = operators.stop()
        if profile:
            timing["profile"] = finish_profile(profile)
        timing["checks"] = check_ours(lake, plan) if timing["complete"] else None
    finally:
        operators.stop()
        stop_process(proc, "ours")
        cancel_job(s, OURS_JOB, earlier)
        if profile.get("proc") and profile["proc"].poll() is None:
            stop_process(profile["proc"], "py-spy")
        if pool:
            stop_process(pool, "worker pool")
    timing.update(lake=str(lake), parallelism=s.parallelism, environment_type=s.environment_type,
                  beam_args=a.beam_arg, flush_seconds=a.flush_seconds, window_flush_seconds=a.window_flush_seconds)
    return timing


def stop_process(proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """SIGTERM to the process we started (by pid), SIGKILL if it does not go."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        say(f"{what}: still alive {timeout:.0f}s after SIGTERM, killing pid {proc.pid}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _duck(sql: str):
    import duckdb

    return duckdb.connect().execute(sql).fetchall()


def check_ours(lake: Path, plan: Plan) -> dict:
    """What the rows say beyond their number: every seq once, all readings in the quality counts."""
    raw = f"read_parquet('{RAW.glob(str(lake))}', hive_partitioning=true)"
    qual = f"read_parquet('{QUALITY.glob(str(lake))}', hive_partitioning=true)"
    cur = f"read_parquet('{MINUTES.glob(str(lake))}', hive_partitioning=true)"
    inside = f"window_start >= epoch_ms({plan.t0_ms}) and window_start < epoch_ms({plan.cutoff_ms})"
    (rows, distinct), = _duck(f"select count(*), count(distinct (sensor_id, seq)) from {raw}")
    (qrows, qkeys, received, late, max_version), = _duck(
        f"select count(*), count(distinct (sensor_id, window_start)), sum(received), sum(late), max(version) "
        f"from {qual} where {inside}")
    statuses = dict(_duck(f"select status, count(*) from {qual} where {inside} group by 1"))
    (crows, ccount), = _duck(f"select count(*), sum(count) from {cur} where {inside}")
    return {"raw_rows": rows, "raw_distinct_keys": distinct, "quality_rows": qrows, "quality_keys": qkeys,
            "quality_received": int(received or 0), "late_readings": int(late or 0),
            "max_version": max_version, "statuses": statuses, "curated_rows": crows,
            "curated_count": int(ccount or 0), "readings": plan.readings,
            "ok": rows == distinct == plan.records and qrows == qkeys == plan.quality_rows
            and int(received or 0) == plan.readings and int(ccount or 0) == plan.readings}


# ====================================================================== py-spy
PY_SPY_PIN = "py-spy==0.4.3"


def start_profile(a, pid: int, home: Path, subprocesses: bool) -> dict:
    out = home / "logs" / "pyspy.txt"
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        say(f"py-spy: not installed in this venv, no profile (.venv/bin/pip install {PY_SPY_PIN})")
        return {}
    cmd = [str(exe), "record", "--pid", str(pid), "--rate", str(a.profile_rate),
           "--duration", str(a.profile), "--format", "raw", "--output", str(out), "--nonblocking"]
    if a.profile_gil:
        cmd.append("--gil")
    if subprocesses:
        cmd.append("--subprocesses")
    say(f"py-spy: recording {a.profile}s of pid {pid} ({' '.join(cmd[2:])})")
    log = open(home / "logs" / "pyspy.log", "ab")
    return {"proc": subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), "out": out, "cmd": cmd}


# Stages of our job, told apart by the frames on a sample's stack (the first match wins).
STAGES = [
    ("parse (ParseReadings)", ("parsing.py",)),
    ("dedupe (_DedupeBySensor)", ("dedupe.py",)),
    ("1-minute windows (SensorMinutes, BatchByShard)", ("windows.py",)),
    ("sinks: Arrow + Parquet write", ("write_parquet_atomically", "from_pylist", "read_parquet_rows")),
    ("sinks: buffering (_BufferedWriter, state)", ("sinks.py",)),
    ("Kafka record conversion (_to_record)", ("kafka_io.py",)),
]
CODEC_FRAMES = ("coder_impl.py", "coders.py", "pickle", "dill", "cloudpickle", "row_coder", "schemas.py")
STATE_FRAMES = ("bundle_processor.py:_StateBackedIterable", "sdk_worker.py", "state")
GRPC_FRAMES = ("grpc", "data_plane.py", "_channel.py")


def finish_profile(profile: dict) -> dict:
    proc = profile["proc"]
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop_process(proc, "py-spy")
    out: Path = profile["out"]
    if not out.exists():
        return {"error": "py-spy wrote nothing; see logs/pyspy.log", "cmd": profile["cmd"]}
    summary = summarize_profile(out)
    dest = RESULTS / f"pyspy-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(out.read_bytes())
    summary.update(collapsed_stacks=str(dest.relative_to(REPO)), cmd=" ".join(profile["cmd"][1:]))
    return summary


def summarize_profile(path: Path, top: int = 15) -> dict:
    """py-spy's raw (collapsed) output -> share of samples per stage, codec, state, gRPC, and the
    functions with the most self and total time."""
    total = 0
    stages: Counter = Counter()
    self_time: Counter = Counter()
    incl: Counter = Counter()
    codec = grpc_ = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        self_time[_short(frames[-1])] += n
        for f in set(_short(f) for f in frames):
            incl[f] += n
        for name, keys in STAGES:
            if any(k in f for f in frames for k in keys):
                stages[name] += n
                break
        else:
            stages["runner/harness (gRPC, bundles, other)"] += n
        if any(k in frames[-1] or k in f for f in frames[-4:] for k in CODEC_FRAMES):
            codec += n
        if any(k in f for f in frames for k in GRPC_FRAMES):
            grpc_ += n
    pct = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0)
    return {"samples": total,
            "stages_pct": {k: pct(v) for k, v in stages.most_common()},
            "codec_in_top_frames_pct": pct(codec), "grpc_or_data_plane_pct": pct(grpc_),
            "top_self_pct": {k: pct(v) for k, v in self_time.most_common(top)},
            "top_total_pct": {k: pct(v) for k, v in incl.most_common(top * 2)}}


def _short(frame: str) -> str:
    """'process (pipelines/parsing.py:123)' -> 'process (parsing.py)': one entry per function."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(file).name})" if file else name


# ====================================================================== the native job
def native_jars(settings: Settings) -> list[Path]:
    from sensorlake.local.install import MARKER, Paths

    dest = Paths(Path(settings.cache).expanduser()).cache / f"flink-sql-jars-{FLINK_VERSION}"
    if not (dest / MARKER).exists():
        say(f"native: fetching the Kafka SQL connector and Parquet format jars from Maven Central into {dest}")
        dest.mkdir(parents=True, exist_ok=True)
        log = Paths(Path(settings.cache).expanduser()).logs / "flink-sql-jars-mvn.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as fh:
            res = subprocess.run(["mvn", "-B", "-q", "-f", str(NATIVE_POM), "dependency:copy-dependencies",
                                  "-DincludeScope=runtime", f"-DoutputDirectory={dest}"],
                                 stdout=fh, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            raise RuntimeError(f"mvn dependency:copy-dependencies failed ({res.returncode}); see {log}")
        (dest / MARKER).touch()
    return sorted(dest.glob("*.jar"))


def run_native(a, settings: Settings, stack, topic: str, plan: Plan, home: Path, preloaded: dict) -> dict:
    from sensorlake.local.install import Paths

    jars = native_jars(settings)
    flink_python = Paths(Path(settings.cache).expanduser()).flink_venv / "bin" / "python"
    out = home / f"native-{uuid.uuid4().hex[:6]}"
    cmd = [str(flink_python), str(NATIVE_JOB), "--rest", settings.flink_master,
           "--bootstrap", settings.kafka_bootstrap, "--topic", topic, "--group-id", f"bench-native-{uuid.uuid4().hex[:8]}",
           "--out", str(out), "--job-name", NATIVE_JOB_NAME, "--parallelism", str(a.native_parallelism or a.parallelism),
           "--checkpoint-ms", str(a.checkpoint_ms), *[x for j in jars for x in ("--jar", str(j))]]
    if a.native_raw:
        cmd.append("--with-raw")
    if not all(preloaded.get("per_partition", {}).values()):
        cmd += ["--idle-timeout-s", "10"]  # a partition without records would hold the watermark
    say(f"native: submitting the Flink SQL job (parallelism {a.native_parallelism or a.parallelism}, "
        f"checkpoints every {a.checkpoint_ms} ms{', with raw rows' if a.native_raw else ''})")
    meter = CpuMeter({k: v for k, v in {"taskmanager": stack.pid("flink-taskmanager"),
                                        "jobmanager": stack.pid("flink-jobmanager"),
                                        "kafka": stack.pid("kafka")}.items() if v})
    meter.start()
    earlier = job_ids(settings, NATIVE_JOB_NAME)
    submitted = time.monotonic()
    log_path = home / "logs" / "native-submit.log"
    with open(log_path, "wb") as log:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, cwd=home, timeout=300,
                             env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))})
    if res.returncode != 0:
        raise RuntimeError(f"native job submission failed ({res.returncode}); see {log_path}:\n"
                           + log_path.read_text(errors="replace")[-3000:])
    submit_s = time.monotonic() - submitted
    say(f"native: submitted in {submit_s:.1f}s: {res.stdout.decode().strip()}")
    operators = OperatorTimes(settings, NATIVE_JOB_NAME, earlier).start()
    try:
        timing = wait_rows("native", NativeProgress(out, plan, a.native_raw), settings, NATIVE_JOB_NAME,
                           earlier, submitted, a.timeout)
        timing["cpu"] = meter.stop()
        timing["operators"] = operators.stop()
    finally:
        operators.stop()
        cancel_job(settings, NATIVE_JOB_NAME, earlier)
    timing.update(out=str(out), client_submit_seconds=round(submit_s, 2), checkpoint_ms=a.checkpoint_ms,
                  with_raw=a.native_raw, jars=[j.name for j in jars])
    return timing


def compare_means(ours_lake: str, native_out: str, plan: Plan) -> dict:
    """Both jobs computed the same minutes: same keys, counts and means (all values are in range)."""
    cur = f"read_parquet('{MINUTES.glob(str(ours_lake))}', hive_partitioning=true)"
    nat = f"read_parquet('{native_out}/minutes/dt=*/*', hive_partitioning=true)"
    inside = f"epoch_ms(window_start) >= {plan.t0_ms} and epoch_ms(window_start) < {plan.cutoff_ms}"
    (both, only_ours, only_native, count_diff, max_mean_diff), = _duck(f"""
        with o as (select sensor_id, epoch_ms(window_start) w, count c, mean m from {cur} where {inside}),
             n as (select sensor_id, epoch_ms(window_start) w, "count" c, mean m from {nat} where {inside})
        select count(o.w) filter (where n.w is not null), count(*) filter (where n.w is null),
               count(*) filter (where o.w is null), count(*) filter (where o.c <> n.c),
               max(abs(o.m - n.m))
        from o full outer join n using (sensor_id, w)""")
    return {"matched_minutes": both, "only_ours": only_ours, "only_native": only_native,
            "count_differs": count_diff, "max_abs_mean_diff": max_mean_diff}


# ====================================================================== report
def machine_info() -> dict:
    import psutil

    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu,
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}


def versions() -> dict:
    from importlib.metadata import version

    out = {"apache-beam": BEAM_VERSION, "flink": FLINK_VERSION, "kafka": KAFKA_VERSION}
    for pkg in ("apache-beam", "pyarrow", "kafka-python", "duckdb", "grpcio", "py-spy"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            out[pkg] = None
    try:
        out["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    except (OSError, IndexError):
        out["java"] = None
    return out


def rate(records: int, seconds: float | None) -> float | None:
    return round(records / seconds) if seconds else None


def report(result: dict, plan: Plan) -> None:
    ours, native = result.get("ours") or {}, result.get("native") or {}
    n = plan.records
    print()
    print(f"Pipeline throughput: {plan.readings:,} readings of {plan.sensors:,} sensors + {plan.sensors:,} closers "
          f"= {n:,} records, {result['config']['partitions']} partitions")
    print(f"{'job':<34}{'to RUNNING':>12}{'wall':>10}{'events/s':>12}{'events/s':>14}")
    print(f"{'':<34}{'s':>12}{'s':>10}{'(submit)':>12}{'(RUNNING)':>14}")
    for name, t in (("ours (Beam Python on Flink)", ours), ("native (Flink SQL)", native)):
        if not t:
            continue
        if not t.get("complete"):
            print(f"{name:<34}  incomplete: {t.get('counts')} of {t.get('targets')}")
            continue
        print(f"{name:<34}{t['seconds_to_running'] or float('nan'):>12.1f}{t['seconds_from_submit']:>10.1f}"
              f"{t['events_per_s']:>12,}{t['events_per_s_running'] or 0:>14,}")
    if result.get("ratio") is not None:
        print(f"ratio ours/native: {result['ratio']:.3f} (from submission), "
              f"{result.get('ratio_running') or float('nan'):.3f} (from RUNNING)   targets: >= 10,000 events/s, >= 0.5")
    if ours.get("cpu"):
        print("CPU during ours:   " + ", ".join(f"{k} {v['cpu_s']}s ({v['cores']} cores)" for k, v in ours["cpu"].items()))
    if native.get("cpu"):
        print("CPU during native: " + ", ".join(f"{k} {v['cpu_s']}s ({v['cores']} cores)" for k, v in native["cpu"].items()))
    for name, t in (("ours", ours), ("native", native)):
        if t.get("operators"):
            print(f"Flink tasks of {name} while it ran, mean ms per second (busy / back-pressured / idle):")
            for op in t["operators"]:
                print("  " + " ".join(f"{'n/a' if op[m] is None else op[m]:>5}" for m in OperatorTimes.METRICS)
                      + f"  {op['task']}")
    if ours.get("checks"):
        print(f"ours checks: {'ok' if ours['checks']['ok'] else 'MISMATCH'} {ours['checks']}")
    if result.get("cross_check"):
        print(f"ours vs native minutes: {result['cross_check']}")
    prof = ours.get("profile")
    if prof and "stages_pct" in prof:
        print(f"py-spy ({prof['samples']} samples{', GIL holder only' if '--gil' in prof['cmd'] else ''}):")
        for k, v in prof["stages_pct"].items():
            print(f"  {v:5.1f}%  {k}")
        print("  top self time: " + "; ".join(f"{k} {v}%" for k, v in list(prof["top_self_pct"].items())[:8]))


# ====================================================================== main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readings", type=int, default=1_000_000, help="readings to preload (default 1,000,000)")
    p.add_argument("--sensors", type=int, default=1_000, help="sensors, 1 reading/s each (default 1,000)")
    p.add_argument("--hours-ago", type=float, default=3.0, help="event time of the first reading")
    p.add_argument("--producers", type=int, default=2, help="producer processes for the preload")
    p.add_argument("--port-offset", type=int, default=40_000)
    p.add_argument("--parallelism", type=int, default=None, help="Flink parallelism of both jobs "
                   "(default: Settings.parallelism, i.e. SENSORLAKE_PARALLELISM or 1)")
    p.add_argument("--native-parallelism", type=int, default=None, help="override for the native job")
    p.add_argument("--flush-seconds", type=float, default=5.0, help="our raw sink's flush interval")
    p.add_argument("--window-flush-seconds", type=float, default=5.0, help="our minute files' flush interval")
    p.add_argument("--checkpoint-ms", type=int, default=5000, help="the native job's checkpoint interval")
    p.add_argument("--beam-arg", action="append", default=[],
                   help="extra Beam pipeline option for our job, e.g. --beam-arg=--max_bundle_size=5000 (repeatable)")
    p.add_argument("--worker-pool", action="store_true",
                   help="run our Python workers in an EXTERNAL worker pool (processes) instead of LOOPBACK")
    p.add_argument("--native-raw", action="store_true",
                   help="the native job also writes every reading to Parquet (our raw/ branch's work)")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--skip-native", action="store_true")
    p.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                   help="py-spy our Python workers for this long once rows appear (0: off)")
    p.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second")
    p.add_argument("--profile-gil", action=argparse.BooleanOptionalAction, default=True,
                   help="sample only the thread holding the GIL (what limits a GIL-bound process)")
    p.add_argument("--timeout", type=float, default=1500, help="give up on a job after this many seconds")
    p.add_argument("--reuse-home", default=None,
                   help="use (and leave running) the stack in this folder, starting what is not up")
    p.add_argument("--keep-home", action="store_true", help="do not delete the temporary stack folder")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_ours"]:
        return ours_child(argv[1:])
    a = parse_args(argv)
    if a.readings < a.sensors:
        raise SystemExit("--readings must be at least --sensors")

    def on_term(*_):
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)
    from sensorlake.local.install import install
    from sensorlake.local.stack import LocalStack, isolated_settings

    home = Path(a.reuse_home).resolve() if a.reuse_home else Path(tempfile.mkdtemp(prefix="sensorlake-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    settings = isolated_settings(home, a.port_offset, bridge_metrics_port=0)
    a.parallelism = a.parallelism or settings.parallelism
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result: dict = {"benchmark": "pipeline", "started_at": stamp, "command": " ".join([sys.argv[0], *argv]),
                    "machine": machine_info(), "versions": versions()}
    stack = None
    try:
        paths = install(settings)
        stack = LocalStack(settings, paths)
        say(f"stack: starting {', '.join(SERVICES)} in {home} (ports +{a.port_offset})")
        stack.up(SERVICES, progress=lambda m: say(f"stack: {m}"))
        settings = stack.settings
        t0 = int(time.time() * 1000 - a.hours_ago * 3.6e6)
        plan = Plan(a.readings, a.sensors, t0 - t0 % WINDOW_MS)
        registry = home / "bench-sensors.json"
        registry.write_text(json.dumps(registry_doc(plan)))
        settings = settings.replace(registry=str(registry))
        topic = f"bench.readings.{uuid.uuid4().hex[:8]}"
        say(f"preload: {plan.readings:,} readings of {plan.sensors:,} sensors + {plan.sensors:,} closers into "
            f"{topic} ({settings.kafka_partitions} partitions), {a.producers} producer processes")
        result["preload"] = preload(settings, topic, plan, a.producers)
        say(f"preload: {result['preload']['records']:,} records in {result['preload']['seconds']}s "
            f"({result['preload']['records_per_s']:,}/s)")
        result["config"] = {"readings": plan.readings, "sensors": plan.sensors, "records": plan.records,
                            "partitions": settings.kafka_partitions, "topic": topic,
                            "t0": datetime.fromtimestamp(plan.t0_ms / 1000, UTC).isoformat(),
                            "expected": {"raw": plan.records, "curated": plan.curated_rows,
                                         "quality": plan.quality_rows},
                            "taskmanager_slots": settings.flink_taskmanager_slots,
                            "parallelism": a.parallelism, "native_parallelism": a.native_parallelism or a.parallelism}
        if not a.skip_ours:
            result["ours"] = run_ours(a, settings, stack, topic, plan, home)
        if not a.skip_native:
            result["native"] = run_native(a, settings, stack, topic, plan, home, result["preload"])
        for key in ("ours", "native"):
            t = result.get(key)
            if t and t.get("complete"):
                t["events_per_s"] = rate(plan.records, t["seconds_from_submit"])
                t["events_per_s_running"] = rate(plan.records, t["seconds_from_running"])
        o, n = result.get("ours") or {}, result.get("native") or {}
        if o.get("events_per_s") and n.get("events_per_s"):
            result["ratio"] = round(o["events_per_s"] / n["events_per_s"], 3)
            if o.get("events_per_s_running") and n.get("events_per_s_running"):
                result["ratio_running"] = round(o["events_per_s_running"] / n["events_per_s_running"], 3)
            result["cross_check"] = compare_means(o["lake"], n["out"], plan)
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: stopping what this run started")
        result["interrupted"] = True
    except Exception as exc:  # noqa: BLE001 - reported, and the JSON still written
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        if stack is not None and not a.reuse_home:
            say("stack: stopping (by pid)")
            stack.down(progress=lambda m: say(f"stack: {m}"))
        if not a.reuse_home and not a.keep_home:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
    if "config" in result:
        report(result, plan)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pipeline-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return 1 if result.get("interrupted") or result.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())

"""The lake job's Kafka source alone: how fast ReadKafkaBatches hands a preloaded topic to Python.

Not part of pass/fail. It starts its own stack (bench/pipeline.py's, ports +41000), preloads
``--readings`` (bench/pipeline.py's payloads, headers and closers), then runs a job that is only
the job's source, ``ReadKafkaBatches`` (KafkaIO's read and our Java ``PackPerPartition``), and a
Python DoFn that counts the records of each batch (``unpack_batch``) and nothing else, with the
lake job's options (bundles, checkpoints, object reuse). It prints records/s from submission and
from RUNNING, every role's CPU and the Flink tasks' busy / back-pressured / idle time.

Why: in bench/pipeline.py no Flink task of the lake job is busy all the time and none is
back-pressured, so either the Python stages wait on each other or the source cannot deliver
faster. If this job reads much faster than the lake job, the source is not what limits it.

    .venv/bin/python bench/source_stage.py                 # 1,000,000 readings of 1,000 sensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import apache_beam as beam

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pipeline import (  # noqa: E402 - bench/pipeline.py's stack, preload and meters
    RESULTS, SERVICES, CpuMeter, OperatorTimes, Plan, WINDOW_MS, cancel_job, job_ids, preload, say, wait_rows)

from pipelines.kafka_io import ReadKafkaBatches, unpack_batch  # noqa: E402
from pipelines.options import flink_options  # noqa: E402

JOB = "sensorlake-bench-source"


class CountRecords(beam.DoFn):
    """Counts the records of each batch; appends the bundle's count to a file at its end (one
    small write a bundle, so the counting is what Python spends)."""

    def __init__(self, path: str):
        self._path = path

    def start_bundle(self):
        self._n = 0

    def process(self, element):
        self._n += sum(1 for _ in unpack_batch(element))

    def finish_bundle(self):
        if self._n:
            with open(self._path, "a") as f:
                f.write(f"{self._n}\n")


class CountedRecords:
    """wait_rows' progress: the records the DoFn has counted, from its file."""

    def __init__(self, path: Path, target: int):
        self.path, self.target = path, target

    def counts(self) -> dict[str, int]:
        try:
            return {"records": sum(int(x) for x in self.path.read_text().split())}
        except FileNotFoundError:
            return {"records": 0}

    def targets(self) -> dict[str, int]:
        return {"records": self.target}


def run_job(settings, topic: str, target: int, home: Path, timeout: float, pids: dict[str, int]) -> dict:
    s = settings.replace(kafka_topic=topic)
    counts = home / f"counts-{uuid.uuid4().hex[:6]}.txt"
    earlier = job_ids(s, JOB)
    # This process alone: the stack's services are its children too.
    meter = CpuMeter({k: v for k, v in {"python": os.getpid(), **pids}.items() if v}, alone=frozenset({"python"}))
    meter.start()
    submitted = time.monotonic()
    p = beam.Pipeline(options=flink_options(s, JOB))
    (p | "ReadKafka" >> ReadKafkaBatches(s, group_id=f"bench-source-{uuid.uuid4().hex[:8]}")
       | "Count" >> beam.ParDo(CountRecords(str(counts))))
    p.run()  # LOOPBACK: the counting DoFn runs in this process
    operators = OperatorTimes(s, JOB, earlier).start()
    say(f"source: submitted in {time.monotonic() - submitted:.1f}s")
    try:
        timing = wait_rows("source", CountedRecords(counts, target), s, JOB, earlier, submitted, timeout)
        cpu = meter.stop()
        ops = operators.stop()
    finally:
        operators.stop()
        cancel_job(s, JOB, earlier)
    if not timing["complete"]:
        raise RuntimeError(f"timed out with {timing['counts']['records']:,} of {target:,} records counted")
    return {"records": timing["counts"]["records"], "seconds_from_submit": timing["seconds_from_submit"],
            "seconds_to_running": timing["seconds_to_running"],
            "records_per_s": round(target / timing["seconds_from_submit"]),
            "records_per_s_running": round(target / timing["seconds_from_running"])
            if timing["seconds_from_running"] else None,
            "cpu": cpu, "operators": ops}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--sensors", type=int, default=1_000)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--port-offset", type=int, default=41_000)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    from sensorlake.local.install import install
    from sensorlake.local.stack import LocalStack, isolated_settings

    home = Path(tempfile.mkdtemp(prefix="sensorlake-bench-"))
    settings = isolated_settings(home, a.port_offset, bridge_metrics_port=0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result: dict = {"benchmark": "source_stage", "started_at": stamp, "command": " ".join([sys.argv[0], *(argv or sys.argv[1:])])}
    stack = LocalStack(settings, install(settings))
    try:
        say(f"stack: starting {', '.join(SERVICES)} in {home}")
        stack.up(SERVICES, progress=lambda m: say(f"stack: {m}"))
        pids = {r: stack.pid(f"flink-{r}") for r in ("taskmanager", "jobmanager")} | {"kafka": stack.pid("kafka")}
        t0 = int(time.time() * 1000 - 3 * 3.6e6)
        plan = Plan(a.readings, a.sensors, t0 - t0 % WINDOW_MS)
        topic = f"bench.source.{uuid.uuid4().hex[:8]}"
        result["preload"] = preload(stack.settings, topic, plan, a.producers)
        say(f"preload: {plan.records:,} records into {topic}")
        result["source"] = r = run_job(stack.settings, topic, plan.records, home, a.timeout, pids)
    finally:
        say("stack: stopping (by pid)")
        stack.down(progress=lambda m: say(f"stack: {m}"))
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    print(f"\nsource alone: {r['records']:,} records in {r['seconds_from_submit']} s: "
          f"{r['records_per_s']:,}/s from submission, {r['records_per_s_running']:,}/s from RUNNING "
          f"({r['seconds_to_running']} s to RUNNING)")
    print("CPU: " + ", ".join(f"{k} {v['cpu_s']}s ({v['cores']} cores)" for k, v in r["cpu"].items()))
    for op in r["operators"]:
        print("  " + " ".join(f"{'n/a' if op[m] is None else op[m]:>5}" for m in OperatorTimes.METRICS)
              + f"  {op['task']}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"source_stage-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

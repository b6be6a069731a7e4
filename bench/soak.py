"""Soak: a steady live load through the whole local stack for a long time; memory and Kafka lag.

Not part of pass/fail: it prints a table and verdict lines and writes every sample, with machine
and version info, to ``bench/results/soak-<UTC time>.json`` (git-ignored). One command:

    .venv/bin/python bench/soak.py                        # issue 8: 5,000 msg/s for 30 minutes
    .venv/bin/python bench/soak.py --rate 1000 --minutes 4 --sample-seconds 30    # a quick look

It starts its own local stack (Mosquitto, Kafka, Flink JobManager + TaskManager, Beam expansion
service and job server; ports +50000, state in a temporary folder) and then the processes `make up`
runs, through their real entry points: the bridge (`python -m connectors.mqtt_kafka`), the lake job
(`sensorlake pipeline run`, LOOPBACK: its Python SDK workers run in that process) and the
generator(s) (`python -m iot_data_generator`). Everything binds to 127.0.0.1 and is stopped by pid
at the end, also on Ctrl-C (which ends the run early and still reports what was sampled).

Load: ``--sensors`` registered sensors (default: as many as ``--rate``, so each reports at 1 Hz;
fewer sensors report faster), live event time, split over ``--generators`` processes with
disjoint sensor ids. One generator process published about 12,000 QoS 1 msg/s to an otherwise
idle Mosquitto here, so by default a process takes at most 5,000 msg/s (the stack shares the CPUs).

Every ``--sample-seconds`` (default 60) from the first published message on:
- RSS (VmRSS of /proc/<pid>/status) of each role, summed over the role's process tree (a shell
  script and the broker it starts; the lake job's submitter and any SDK worker processes: with
  LOOPBACK the workers are threads of the submitter), and its CPU seconds;
- Kafka consumer lag of the lake job's consumer group: end offsets minus committed offsets, summed
  over the partitions. KafkaIO commits when a Flink checkpoint completes (every 10 s by default),
  so the lag is a saw-tooth between a floor (just after a commit) and about one checkpoint interval
  of traffic more. It is also polled every second between samples; each sample keeps the lowest
  value since the previous one (``lag_floor``), which the saw-tooth does not move;
- messages scheduled (rate x time), received by the bridge (its metrics), in Kafka (end offsets),
  rows in raw/readings (Parquet footers), the Flink job's state, checkpoints and restarts.

Warm-up: the first ``--warmup-minutes`` (default 5) of traffic are not the RSS growth baseline:
the JVMs (started before the traffic, with the job submission) are still filling their heaps and
caches. Growth = RSS at the end / RSS at the first sample after the warm-up - 1.

Targets (issue 8), printed as verdicts, never asserted:
- no growing lag: the least-squares slope of the lag floor over the second half of the run is
  below 1% of the publish rate per minute (0.6 s of traffic gained per minute);
- RSS growth under 10% for every role.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge import machine_info, metrics  # noqa: E402  (bench/bridge.py)
from freshness import PY, say, spawn, stop, tree_usage  # noqa: E402  (bench/freshness.py)
from pipeline import RowCounter, job_running, rest  # noqa: E402  (bench/pipeline.py)

from iot_data_generator.generator import registry_document, with_synthetic  # noqa: E402
from sensorlake import flink_rest  # noqa: E402
from pipelines.main import JOB_NAME, parser as job_parser  # noqa: E402
from sensorlake.local.install import install  # noqa: E402
from sensorlake.local.stack import LocalStack, isolated_settings, pid_alive  # noqa: E402
from sensorlake.registry import load_registry  # noqa: E402
from sensorlake.settings import BEAM_VERSION, DEFAULT_REGISTRY, FLINK_VERSION, KAFKA_VERSION  # noqa: E402

PER_GENERATOR = 5_000  # msg/s one generator process is given at most (about 12,000 measured, idle machine)
RSS_TARGET = 0.10
LAG_SLOPE_TARGET = 0.01  # of the publish rate, per minute


# ====================================================================== Kafka lag
class KafkaLag:
    """End offsets and the consumer group's committed offsets of one topic, summed over partitions."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        from kafka import KafkaAdminClient, KafkaConsumer

        self.topic, self.group = topic, group
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def sample(self) -> dict:
        """Uncommitted partitions count from offset 0 (the job reads from the earliest offset)."""
        from kafka import TopicPartition

        out: dict = {}
        try:
            parts = self.consumer.partitions_for_topic(self.topic)
            if not parts:
                self.consumer.topics()  # refreshes the metadata: the bridge may have created it since
                parts = self.consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            end = self.consumer.end_offsets(tps) if tps else {}
        except Exception as exc:  # noqa: BLE001 - a sample without Kafka figures, not a failed run
            return {"error": f"{type(exc).__name__}: {exc}"}
        committed: dict = {}
        try:
            groups = self.admin.list_group_offsets({self.group: tps}) if tps else {}
            committed = {tp: om.offset for tp, om in groups.get(self.group, {}).items()
                         if tp.topic == self.topic and om.offset >= 0}
        except Exception as exc:  # noqa: BLE001 - e.g. no group coordinator before the first commit
            out["committed_error"] = f"{type(exc).__name__}: {exc}"
        total_end = sum(end.values())
        return out | {"end": total_end, "committed": sum(committed.values()) if committed else None,
                      "lag": total_end - sum(committed.get(tp, 0) for tp in tps),
                      "partitions": {tp.partition: [end[tp], committed.get(tp)] for tp in tps}}

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


# ====================================================================== the load
def write_registries(home: Path, sensors: int, rate: float, generators: int) -> tuple[Path, list[Path], int]:
    """The lake job's registry (every sensor) and one per generator (disjoint sensor ids: two
    generators sending the same (sensor, seq) would be de-duplicated). Returns the interval (ms)."""
    seed = load_registry(DEFAULT_REGISTRY)
    interval_ms = max(1, round(1000 * sensors / rate))
    fleet = {sid: dataclasses.replace(s, interval_ms=interval_ms)
             for sid, s in with_synthetic(seed, max(0, sensors - len(seed))).items()}
    fleet = dict(list(fleet.items())[:sensors])
    everything = home / "sensors.json"
    everything.write_text(json.dumps(registry_document(fleet), indent=2))
    ids = list(fleet)
    shares = []
    for i in range(generators):
        path = home / f"sensors-generator-{i + 1}.json"
        path.write_text(json.dumps(registry_document({sid: fleet[sid] for sid in ids[i::generators]}), indent=2))
        shares.append(path)
    return everything, shares, interval_ms


def flink_job_sample(s) -> dict:
    try:
        job = flink_rest.find_job(s, JOB_NAME)
        if not job:
            return {"state": None}
        restarts = rest(s, f"/jobs/{job['jid']}/metrics?get=numRestarts")
        return {"state": job["state"], "checkpoints": flink_rest.completed_checkpoints(s, job["jid"]),
                "restarts": int(float(restarts[0]["value"])) if restarts else None}
    except (flink_rest.FlinkRestError, OSError, KeyError, ValueError, IndexError) as exc:
        return {"error": str(exc)}


HEAP_METRICS = "Status.JVM.Memory.Heap.Used,Status.JVM.Memory.Heap.Committed"


def jvm_heap_sample(s) -> dict:
    """Heap used and committed (MB) of the JobManager and the TaskManagers: a JVM's RSS grows while
    it first touches its heap, its heap used after collections grows only if something is kept."""
    out = {}
    try:
        targets = {"jobmanager": "/jobmanager/metrics"}
        for tm in rest(s, "/taskmanagers").get("taskmanagers", []):
            targets[f"taskmanager-{len(targets)}"] = f"/taskmanagers/{tm['id']}/metrics"
        for name, path in targets.items():
            values = {m["id"]: float(m["value"]) for m in rest(s, f"{path}?get={HEAP_METRICS}")}
            out[name] = {"used_mb": round(values["Status.JVM.Memory.Heap.Used"] / 2**20, 1),
                         "committed_mb": round(values["Status.JVM.Memory.Heap.Committed"] / 2**20, 1)}
    except (flink_rest.FlinkRestError, OSError, KeyError, ValueError) as exc:
        out["error"] = str(exc)
    return out


# ====================================================================== summary
def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / den if den else None


def summarize(samples: list[dict], roles: list[str], warmup_s: float, rate: float) -> dict:
    after_warmup = [x for x in samples if x["t_s"] >= warmup_s]
    measured = after_warmup or samples[-1:]
    rss = {}
    for role in [*roles, "total"]:
        series = [x["rss_kb"].get(role, 0) for x in measured]
        first, last = series[0], series[-1]
        cpu = [x["cpu_s"].get(role, 0.0) for x in measured]
        span = measured[-1]["t_s"] - measured[0]["t_s"]
        rss[role] = {"first_kb": first, "last_kb": last, "max_kb": max(series),
                     "growth": (last - first) / first if first else None,
                     "cores": (cpu[-1] - cpu[0]) / span if span > 0 else None}
    lags = [(x["t_s"], x["kafka"]["lag"]) for x in samples if x["kafka"].get("lag") is not None]
    floors = [(x["t_s"], x["lag_floor"]) for x in samples if x["lag_floor"] is not None]
    end_t = samples[-1]["t_s"]
    slope = slope_per_min([(t, v) for t, v in floors if t >= end_t / 2])
    lag = {"first": lags[0][1] if lags else None, "max": max(v for _, v in lags) if lags else None,
           "last": lags[-1][1] if lags else None, "last_floor": floors[-1][1] if floors else None,
           "slope_second_half_per_min": slope_per_min([(t, v) for t, v in lags if t >= end_t / 2]),
           "floor_slope_second_half_per_min": slope,
           "slope_target_per_min": LAG_SLOPE_TARGET * rate * 60,
           "last_floor_seconds_of_traffic": floors[-1][1] / rate if floors and rate else None,
           "committed_ever": any(x["kafka"].get("committed") is not None for x in samples)}
    over = [r for r in roles if rss[r]["growth"] is not None and rss[r]["growth"] >= RSS_TARGET]
    # A JVM's heap used is a saw-tooth; a sample lower than the one before follows a collection,
    # and those samples (what stayed live, plus what was allocated since) are what can show a leak.
    heap = {}
    for jvm in sorted({k for x in measured for k in x.get("jvm_heap", {}) if k != "error"}):
        used = [x["jvm_heap"][jvm]["used_mb"] for x in measured if jvm in x.get("jvm_heap", {})]
        after_gc = [b for a, b in zip(used, used[1:]) if b < a]
        heap[jvm] = {"after_collections_mb": after_gc, "max_mb": max(used) if used else None}
    # None: not measured (no lag figures / too few samples in the second half / none after the warm-up)
    no_growing_lag = None if slope is None else lag["committed_ever"] and slope < lag["slope_target_per_min"]
    return {"baseline_t_s": measured[0]["t_s"], "end_t_s": measured[-1]["t_s"], "rss": rss, "jvm_heap": heap, "lag": lag,
            "verdicts": {"no_growing_lag": no_growing_lag,
                         "rss_growth_under_10pct": (not over) if len(after_warmup) >= 2 else None,
                         "rss_over_target": over}}


def verdict(ok: bool | None, why_not: str = "") -> str:
    return {True: "MET", False: f"NOT MET{why_not}", None: "NOT MEASURED (run too short)"}[ok]


def print_report(summary: dict, roles: list[str], rate: float) -> None:
    mb = lambda kb: f"{kb / 1024:9.0f}"  # noqa: E731
    print(f"\nRSS per role (MB), from the first sample after the warm-up (t={summary['baseline_t_s'] / 60:.1f} min) "
          f"to the end (t={summary['end_t_s'] / 60:.1f} min)")
    print(f"{'role':<20}{'after warm-up':>14}{'end':>10}{'growth %':>10}{'max':>10}{'cores':>8}")
    for role in [*roles, "total"]:
        r = summary["rss"][role]
        growth = f"{100 * r['growth']:+10.1f}" if r["growth"] is not None else f"{'-':>10}"
        cores = f"{r['cores']:8.2f}" if r["cores"] is not None else f"{'-':>8}"
        print(f"{role:<20}{mb(r['first_kb']):>14}{mb(r['last_kb']):>10}{growth}{mb(r['max_kb']):>10}{cores}")
    if summary["jvm_heap"]:
        print("\nJVM heap used (MB, Flink's metrics) in the samples that follow a collection, and the highest")
        for jvm, h in summary["jvm_heap"].items():
            print(f"{jvm:<20}{', '.join(f'{v:.0f}' for v in h['after_collections_mb']) or '-':>30}{h['max_mb'] or 0:>10.0f}")
    lag = summary["lag"]
    f = lambda v: f"{v:,.0f}" if v is not None else "-"  # noqa: E731
    print(f"\nKafka consumer lag (messages): first {f(lag['first'])}, max {f(lag['max'])}, last {f(lag['last'])}; "
          f"least-squares slope over the second half {f(lag['slope_second_half_per_min'])} msgs/min")
    print(f"lag floor (lowest per sample interval): last {f(lag['last_floor'])}"
          + (f" ({lag['last_floor_seconds_of_traffic']:.1f} s of traffic)"
             if lag["last_floor_seconds_of_traffic"] is not None else "")
          + f"; slope over the second half {f(lag['floor_slope_second_half_per_min'])} msgs/min")
    v = summary["verdicts"]
    why = "" if lag["committed_ever"] else " (the job never committed an offset)"
    print(f"verdict: no growing lag (floor slope < {f(lag['slope_target_per_min'])} msgs/min, "
          f"1% of {rate:,.0f} msg/s): "
          f"{verdict(v['no_growing_lag'], why)}")
    over = ", ".join(f"{r} {100 * summary['rss'][r]['growth']:+.1f}%" for r in v["rss_over_target"])
    print(f"verdict: RSS growth under {100 * RSS_TARGET:.0f}% for every role: "
          f"{verdict(v['rss_growth_under_10pct'], ' (' + over + ')')}")


def progress_line(x: dict, prev: dict | None, roles: list[str]) -> str:
    k = x["kafka"]
    rate = ""
    if prev and x["t_s"] > prev["t_s"] and k.get("end") is not None and prev["kafka"].get("end") is not None:
        dt = x["t_s"] - prev["t_s"]
        rate = (f" in {(k['end'] - prev['kafka']['end']) / dt:,.0f}/s"
                f" consumed {((k.get('committed') or 0) - (prev['kafka'].get('committed') or 0)) / dt:,.0f}/s")
    floor = f" (floor {x['lag_floor']:,})" if x["lag_floor"] is not None else ""
    kafka = (f"kafka {k['end']:,} committed {k['committed'] or 0:,} lag {k['lag']:,}{floor}{rate}" if "end" in k
             else f"kafka ? ({k.get('error')})")
    rss = " ".join(f"{r.replace('flink-', '')} {x['rss_kb'].get(r, 0) / 1024:.0f}" for r in roles)
    return (f"t={x['t_s'] / 60:5.1f} min  sent~{x['scheduled']:,} bridge {x['bridge_received']:,}  {kafka}  "
            f"raw {x['raw_rows']:,}  job {x['job'].get('state')}  load {x['load_avg'][0]:.1f}  RSS MB: {rss}")


# ====================================================================== main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="messages per second over all sensors")
    ap.add_argument("--minutes", type=float, default=30.0, help="minutes of traffic")
    ap.add_argument("--sample-seconds", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--warmup-minutes", type=float, default=5.0,
                    help="minutes of traffic before the RSS growth baseline")
    ap.add_argument("--sensors", type=int, default=0, help="sensors (default: as many as --rate, 1 Hz each)")
    ap.add_argument("--generators", type=int, default=0,
                    help=f"generator processes (default: one per {PER_GENERATOR:,} msg/s)")
    ap.add_argument("--port-offset", type=int, default=50_000, help="port offset of the benchmark's stack")
    ap.add_argument("--keep-home", action="store_true", help="keep the temporary stack folder (logs, lake)")
    a = ap.parse_args(argv)
    sensors = a.sensors or max(1, round(a.rate))
    generators = a.generators or max(1, math.ceil(a.rate / PER_GENERATOR))
    group = job_parser().parse_args([]).group_id

    home = Path(tempfile.mkdtemp(prefix="sensorlake-soak-"))
    settings = isolated_settings(home, a.port_offset, bridge_metrics_port=9464 + a.port_offset)
    stack = LocalStack(settings, install(settings))
    s = stack.settings
    procs: dict[str, subprocess.Popen] = {}
    samples: list[dict] = []
    ended, failed = "end", None
    lag, rate, interval_ms = None, a.rate, None

    def on_signal(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    machine = machine_info(s)
    try:
        say(f"starting the stack in {home} (ports +{a.port_offset})")
        stack.up(progress=lambda m: None)
        registry, shares, interval_ms = write_registries(home, sensors, a.rate, generators)
        rate = sensors * 1000 / interval_ms  # what the rounded intervals give
        env = {**s.as_env(), "SENSORLAKE_REGISTRY": str(registry)}
        procs["bridge"] = spawn([PY, "-m", "connectors.mqtt_kafka"], env, home / "bridge.log")
        procs["pipeline"] = spawn([PY, "-m", "sensorlake.cli", "pipeline", "run"], env, home / "pipeline.log")
        deadline = time.monotonic() + 300
        while not job_running(s, JOB_NAME):
            if procs["pipeline"].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the job did not start; see {home / 'pipeline.log'}")
            time.sleep(2)
        lag = KafkaLag(s.kafka_bootstrap, s.kafka_topic, group)
        say(f"job RUNNING; {sensors:,} sensors at {rate:,.0f} msg/s from {generators} generator process(es), "
            f"{a.minutes:g} min, a sample every {a.sample_seconds:g} s")
        names = ["generator"] if generators == 1 else [f"generator-{i + 1}" for i in range(generators)]
        for name, share in zip(names, shares):
            procs[name] = spawn([PY, "-m", "iot_data_generator", "--registry", str(share), "--client-id",
                                 f"bench-soak-{name}", "--report", str(home / f"{name}.json")],
                                {**env, "SENSORLAKE_LOG_LEVEL": "WARNING"}, home / f"{name}.log")
        t0 = time.monotonic()
        roles = [*stack.ORDER, "bridge", "pipeline", *names]
        raw_rows = RowCounter()
        k = 0
        while True:
            due, polled = t0 + k * a.sample_seconds, []
            while time.monotonic() < due and failed is None:
                failed = next((f"{n} exited ({p.returncode}); see {home / (n + '.log')}"
                               for n, p in procs.items() if p.poll() is not None), None)
                polled.append(lag.sample().get("lag"))
                time.sleep(min(1.0, max(0.0, due - time.monotonic())))
            if failed:
                break
            t = time.monotonic() - t0
            roots = {n: stack.pid(n) or -1 for n in stack.ORDER} | {n: p.pid for n, p in procs.items()}
            usage = tree_usage(roots)
            x = {"t_s": round(t, 1), "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "rss_kb": {r: usage[r]["rss_kb"] for r in roles}, "cpu_s": {r: usage[r]["cpu_s"] for r in roles},
                 "procs": {r: usage[r]["procs"] for r in roles}, "kafka": lag.sample(),
                 "scheduled": round(rate * t),
                 "bridge_received": int(metrics(s.bridge_metrics_port).get(
                     "sensorlake_bridge_messages_received_total", 0)),
                 "raw_rows": raw_rows.rows(str(p) for p in (Path(s.lake) / "raw" / "readings").rglob("*.parquet")),
                 "job": flink_job_sample(s), "jvm_heap": jvm_heap_sample(s), "load_avg": os.getloadavg()}
            x["rss_kb"]["total"] = sum(x["rss_kb"].values())
            polled = [v for v in [*polled, x["kafka"].get("lag")] if v is not None]
            x["lag_floor"] = min(polled) if polled else None
            x["cpu_s"]["total"] = round(sum(x["cpu_s"].values()), 2)
            say(progress_line(x, samples[-1] if samples else None, roles))
            samples.append(x)
            if x["job"].get("state") is None and "error" not in x["job"]:  # RESTARTING is sampled on
                failed = f"the Flink job is gone (failed or cancelled); see {home / 'logs'}"
                break
            if t >= a.minutes * 60 - 1:
                break
            k += 1
    except KeyboardInterrupt:
        ended = "interrupted"
    finally:
        # A second Ctrl-C must not abandon the clean-up half way (the stack would keep running).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        reports = {}
        for name in [n for n in procs if n.startswith("generator")]:
            stop(procs[name], signal.SIGINT)  # it waits for the last PUBACKs and writes its report
            try:
                reports[name] = json.loads((home / f"{name}.json").read_text())
            except (OSError, ValueError):
                pass
        for name in ("pipeline", "bridge"):
            stop(procs.get(name), signal.SIGINT if name == "pipeline" else signal.SIGTERM)
        if lag is not None:
            lag.close()
        stack.down(progress=lambda m: None)
        leftover = [n for n, p in procs.items() if pid_alive(p.pid)]
        if leftover:
            say(f"warning: still running: {leftover}")
    if failed:
        ended = "failed"
        say(f"stopped early: {failed}")
    if not samples:
        say(f"no samples; logs in {home}")
        return 1

    summary = summarize(samples, roles, a.warmup_minutes * 60, rate)
    gen = {n: {c: r["totals"][c] for c in ("sent", "unacked", "refused")} | {
        "elapsed_s": r["elapsed_s"], "rate": r["totals"]["sent"] / r["elapsed_s"] if r["elapsed_s"] else None,
        "fell_behind": "falling behind" in (home / f"{n}.log").read_text(errors="replace")}
        for n, r in reports.items()}
    print(f"\nsoak: {sensors:,} sensors, {rate:,.0f} msg/s from {generators} generator process(es), "
          f"{samples[-1]['t_s'] / 60:.1f} min of traffic, {len(samples)} samples ({ended})")
    for n, g in gen.items():
        print(f"{n}: sent {g['sent']:,} in {g['elapsed_s']:.0f} s ({g['rate'] or 0:,.0f} msg/s)"
              + (", fell behind the schedule" if g["fell_behind"] else ""))
    if summary["baseline_t_s"] < a.warmup_minutes * 60:
        print(f"note: no sample after the {a.warmup_minutes:g}-minute warm-up; the baseline is the last sample")
    print_report(summary, roles, rate)

    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    machine.update(memory_kb=int(meminfo["MemTotal"].split()[0]), load_avg_end=os.getloadavg(),
                   beam=BEAM_VERSION, flink=FLINK_VERSION)
    path.write_text(json.dumps({
        "benchmark": "soak", "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "ended": ended, "failure": failed, "machine": machine, "kafka": KAFKA_VERSION,
        "options": vars(a), "load": {"sensors": sensors, "rate": rate, "generators": generators,
                                     "interval_ms": interval_ms, "consumer_group": group},
        "settings": {k: v for k, v in s.redacted().items() if k not in ("home", "lake", "cache")},
        "summary": summary, "generators": gen, "samples": samples}, indent=2))
    print(f"written: {path}")
    if failed or a.keep_home:
        print(f"stack folder kept: {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return {"end": 0, "interrupted": 130}.get(ended, 1)


if __name__ == "__main__":
    sys.exit(main())

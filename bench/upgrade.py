"""An upgrade through a savepoint: the lake job of an older commit stops mid-stream with a
savepoint, and this checkout's job goes on from it. Nothing may be lost or written twice.

Not part of pass/fail (it needs an older commit, which CI's clone has, but it takes minutes and
is about releases, not about a change): run it before a release, against the commit the
deployments run.

    .venv/bin/python bench/upgrade.py --old 5b38e56            # 200,000 readings, stop at 40 %

What it does: makes a git worktree of ``--old``; starts bench/pipeline.py's stack (ports +42000)
and preloads ``--readings`` (1 Hz per sensor, seq-numbered, with closers so that every minute can
close); runs the old commit's job (its own bench/pipeline.py ``_ours`` child, so its own
``pipelines/``) until ``--stop-at`` of the raw rows are in the lake; stops it with a savepoint;
runs this checkout's job from that savepoint on the same lake until every row is there; then
checks the lake as bench/pipeline.py does (every record once in raw/, one curated and one quality
row per closed sensor-minute, each counting every reading once). The Java side (the job server
and expansion service) is this checkout's for both jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pipeline import (  # noqa: E402 - bench/pipeline.py's stack, preload and checks
    OURS_JOB, RESULTS, SERVICES, WINDOW_MS, OursProgress, Plan, check_ours, flink_job, job_ids, preload,
    registry_doc, say, stop_process, wait_rows)

from sensorlake import flink_rest  # noqa: E402


def start_job(repo: Path, settings, lake: Path, group: str, log: Path, savepoint: str = "") -> subprocess.Popen:
    """bench/pipeline.py's ``_ours`` child of the given checkout: it submits that checkout's job
    (LOOPBACK: its Python workers run in the child) and cancels it on SIGTERM."""
    argv = ["--flush-seconds", "5", "--window-flush-seconds", "5", "--group-id", group, "--job-name", OURS_JOB]
    if savepoint:
        argv += ["--savepoint-path", savepoint]
    s = settings.replace(lake=str(lake))
    return subprocess.Popen([sys.executable, str(repo / "bench" / "pipeline.py"), "_ours", *argv], cwd=repo,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, **s.as_env(), "PYTHONPATH": str(repo)},
                            start_new_session=True)


def root_exception(settings, earlier: set[str]) -> str:
    """The innermost cause of the newest job's root exception in Flink (why a restore fails)."""
    job = flink_job(settings, OURS_JOB, earlier)
    if not job:
        return "no job"
    try:
        got = flink_rest.call(settings, f"/jobs/{job['jid']}/exceptions")
    except flink_rest.FlinkRestError as exc:
        return str(exc)
    trace = got.get("root-exception") or ""
    causes = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("Caused by")]
    return (causes[-1] if causes else trace.splitlines()[0] if trace else f"state {job['state']}")[:300]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the commit whose job takes the savepoint")
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--sensors", type=int, default=1_000)
    ap.add_argument("--stop-at", type=float, default=0.4, help="share of the raw rows written before the stop")
    ap.add_argument("--port-offset", type=int, default=42_000)
    ap.add_argument("--timeout", type=float, default=900, help="give up on the old job after this many seconds")
    ap.add_argument("--new-timeout", type=float, default=300,
                    help="give up on the new job after this many seconds (a failed restore restarts for ever)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    from sensorlake.local.install import install
    from sensorlake.local.stack import LocalStack, isolated_settings

    home = Path(tempfile.mkdtemp(prefix="sensorlake-upgrade-"))
    (home / "logs").mkdir()
    old_tree = home / "old"
    got = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(old_tree), a.old],
                         capture_output=True, text=True)
    if got.returncode != 0:
        raise SystemExit(f"upgrade: cannot check out {a.old}: {got.stderr.strip()}")
    old_commit = subprocess.run(["git", "-C", str(old_tree), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    new_commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result: dict = {"benchmark": "upgrade", "started_at": stamp, "old": old_commit, "new": new_commit}
    settings = isolated_settings(home, a.port_offset, bridge_metrics_port=0)
    stack = LocalStack(settings, install(settings))
    procs: list[subprocess.Popen] = []
    try:
        say(f"stack: starting {', '.join(SERVICES)} in {home}")
        stack.up(SERVICES, progress=lambda m: say(f"stack: {m}"))
        settings = stack.settings
        t0 = int(time.time() * 1000 - 3 * 3.6e6)
        plan = Plan(a.readings, a.sensors, t0 - t0 % WINDOW_MS)
        registry = home / "bench-sensors.json"
        registry.write_text(json.dumps(registry_doc(plan)))
        topic = f"bench.upgrade.{uuid.uuid4().hex[:8]}"
        settings = settings.replace(registry=str(registry), kafka_topic=topic)
        preload(settings, topic, plan, 2)
        lake, group = home / "lake", f"bench-upgrade-{uuid.uuid4().hex[:8]}"
        progress = OursProgress(lake, plan)

        say(f"old job ({old_commit}): running until {a.stop_at:.0%} of the raw rows are in the lake")
        earlier = job_ids(settings, OURS_JOB)
        old = start_job(old_tree, settings, lake, group, home / "logs" / "old.log")
        procs.append(old)
        want = int(plan.records * a.stop_at)
        deadline = time.monotonic() + a.timeout
        while (before := progress.counts()["raw"]) < want:
            if old.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the old job ended or timed out with {before:,} raw rows; see {home}/logs/old.log")
            time.sleep(1)
        job = flink_job(settings, OURS_JOB, earlier)
        t_stop = time.monotonic()
        savepoint = flink_rest.stop_with_savepoint(settings, job["jid"], f"file://{home / 'savepoints'}")
        stopped = progress.counts()
        say(f"old job: stopped with a savepoint after {time.monotonic() - t_stop:.1f}s at {stopped}: {savepoint}")
        stop_process(old, "old job's process")

        say(f"new job ({new_commit}): from the savepoint until every row is in the lake")
        earlier = job_ids(settings, OURS_JOB)
        submitted = time.monotonic()
        new = start_job(REPO, settings, lake, group, home / "logs" / "new.log", savepoint)
        procs.append(new)
        timing = wait_rows("new", progress, settings, OURS_JOB, earlier, submitted, a.new_timeout, proc=new)
        checks = check_ours(lake, plan) if timing["complete"] else None
        if not timing["complete"]:
            result["error"] = f"the new job did not finish: {root_exception(settings, earlier)}"
        result.update(plan={"readings": plan.readings, "sensors": plan.sensors, "records": plan.records},
                      stopped_at=stopped, savepoint=savepoint, new=timing, checks=checks)
    except (RuntimeError, flink_rest.FlinkRestError) as exc:  # a failed restore is this run's answer
        result["error"] = str(exc)
        say(f"upgrade: {exc}")
    finally:
        for p in procs:
            stop_process(p, "job process")
        say("stack: stopping (by pid)")
        stack.down(progress=lambda m: say(f"stack: {m}"))
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    ok = bool(result.get("checks") and result["checks"]["ok"])
    print(f"\nupgrade {old_commit} -> {new_commit} through a savepoint at {result.get('stopped_at')}: "
          f"{'ok' if ok else 'FAILED'} {result.get('checks') or result.get('error')}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"upgrade-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The Flink REST calls Sensorlake needs, in one client: find, watch, stop and cancel the lake job.

Used by ``sensorlake pipeline run`` (``--if-absent``, watching), the services' health probes, the
tests and the benchmarks. Stop-with-savepoint is how the streaming job is upgraded or moved without
losing or repeating anything: the savepoint holds the Kafka offsets, the de-duplication state and
the open 1-minute windows, and ``sensorlake pipeline run --savepoint-path <location>`` continues
from it. Standard library only, so probes and ``local status`` stay fast.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

# Job states after which a job is gone for good (SUSPENDED: its JobManager lost leadership).
ENDED = frozenset({"FINISHED", "CANCELED", "FAILED", "SUSPENDED"})


class FlinkRestError(OSError):
    """A Flink REST call failed or an operation did not complete; the message says which."""


class JobGone(FlinkRestError):
    """Flink does not know the job (HTTP 404): e.g. its JobManager restarted without it."""


def _base(settings) -> str:
    return settings.flink_rest


def call(settings, path: str, body: dict | None = None, method: str = "GET", timeout: float = 10.0) -> Any:
    """One REST call; its JSON answer ({} when empty). FlinkRestError on any failure."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{_base(settings)}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own Flink
            raw = r.read()
        return json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        kind = JobGone if exc.code == 404 else FlinkRestError
        raise kind(f"Flink REST {method} {path}: HTTP {exc.code}") from exc
    except (OSError, ValueError) as exc:
        raise FlinkRestError(f"Flink REST {method} {path} failed: {exc}") from exc


def jobs(settings, timeout: float = 10.0) -> list[dict]:
    return call(settings, "/jobs/overview", timeout=timeout).get("jobs", [])


def find_job(settings, name: str) -> dict | None:
    """The newest job of that name that has not ended ({"jid", "name", "state", ...}), or None."""
    live = [j for j in jobs(settings) if j.get("name") == name and j.get("state") not in ENDED]
    return max(live, key=lambda j: j.get("start-time", 0)) if live else None


def live_job(settings, name: str, wait_s: float = 120.0) -> dict | None:
    """Like find_job, but waits up to wait_s for the REST API, and waits out a job still CANCELLING
    so that what follows never overlaps it. OSError when Flink stays unreachable."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            named = [j for j in jobs(settings, timeout=5) if j.get("name") == name and j.get("state") not in ENDED]
        except FlinkRestError as exc:
            if time.monotonic() > deadline:
                raise OSError(f"Flink REST API {_base(settings)} unreachable: {exc.__cause__ or exc}") from exc
            time.sleep(2)
            continue
        if any(j.get("state") == "CANCELLING" for j in named) and time.monotonic() < deadline:
            time.sleep(2)
            continue
        live = [j for j in named if j.get("state") != "CANCELLING"]
        return live[0] if live else None


def watch(settings, jid: str, say: Callable[[str], None], poll_s: float = 5.0, unreachable_s: float = 120.0) -> int:
    """Follows a job until it ends: 0 if it finished or was cancelled, 1 otherwise."""
    unreachable_since = None
    while True:
        try:
            state = call(settings, f"/jobs/{jid}", timeout=5).get("state")
            unreachable_since = None
        except JobGone:
            say(f"job {jid} is gone from Flink")
            return 1
        except FlinkRestError:
            state = None
        if state is None:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > unreachable_s:
                say(f"Flink REST API {_base(settings)} unreachable for {unreachable_s:.0f}s")
                return 1
        elif state in ENDED:
            say(f"job {jid} ended: {state}")
            return 0 if state in ("FINISHED", "CANCELED") else 1
        time.sleep(poll_s)


def completed_checkpoints(settings, jid: str) -> int:
    return int(call(settings, f"/jobs/{jid}/checkpoints").get("counts", {}).get("completed", 0))


def stop_with_savepoint(settings, jid: str, target_dir: str, timeout: float = 300.0) -> str:
    """Stops the job after a savepoint into target_dir; returns the savepoint's location."""
    trigger = call(settings, f"/jobs/{jid}/stop", {"drain": False, "targetDirectory": target_dir}, "POST")
    request_id = trigger["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = call(settings, f"/jobs/{jid}/savepoints/{request_id}")
        if status.get("status", {}).get("id") == "COMPLETED":
            op = status.get("operation", {})
            if "location" in op:
                return op["location"]
            cause = op.get("failure-cause", {}).get("stack-trace", "")
            raise FlinkRestError(f"savepoint of job {jid} failed: {cause.splitlines()[0] if cause else op}")
        time.sleep(1)
    raise FlinkRestError(f"savepoint of job {jid} not done after {timeout:.0f}s")


def cancel_job(settings, name: str, result=None, timeout: float = 60.0) -> None:
    """Cancels every job of that name that has not ended, and waits until Flink says they have.

    The Beam job service's cancel (``result.cancel()``) only stops the job server's wait for a
    remote Flink job, the job itself keeps running; with LOOPBACK workers gone with the submitting
    process, it would restart forever. So the job is also cancelled through Flink's REST API.
    """
    if result is not None:
        try:
            result.cancel()
        except Exception:  # noqa: BLE001 - the REST call below is what counts
            pass
    deadline = time.monotonic() + timeout
    while (job := find_job(settings, name)) is not None:
        if job["state"] != "CANCELLING":
            try:
                call(settings, f"/jobs/{job['jid']}?mode=cancel", method="PATCH")
            except FlinkRestError:
                pass  # it may have ended meanwhile; find_job tells
        if time.monotonic() > deadline:
            raise FlinkRestError(f"job {name} ({job['jid']}) still {job['state']} after {timeout:.0f}s")
        time.sleep(1)


def job_running(settings, name: str) -> bool:
    """A job of that name is RUNNING (the pipeline's readiness and health check)."""
    return any(j.get("name") == name and j.get("state") == "RUNNING" for j in jobs(settings, timeout=3))


def overview(settings) -> dict:
    return call(settings, "/overview", timeout=3)


def taskmanagers(settings) -> list[dict]:
    return call(settings, "/taskmanagers", timeout=3).get("taskmanagers", [])

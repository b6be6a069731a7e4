"""The few Flink REST calls the job's lifecycle needs: find a job by name, stop it with a savepoint.

Stop-with-savepoint is how the streaming job is upgraded or moved without losing or repeating
anything: the savepoint holds the Kafka offsets, the de-duplication state and the open 1-minute
windows, and ``sensorlake pipeline run --savepoint-path <location>`` continues from it.
"""

from __future__ import annotations

import json
import time
import urllib.request

from sensorlake.settings import Settings

LIVE = {"CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING"}


class FlinkRestError(RuntimeError):
    """A Flink REST call failed or an operation did not complete; the message says which."""


def _call(settings: Settings, path: str, body: dict | None = None, method: str = "GET") -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{settings.flink_rest}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - our own Flink
            raw = r.read()
    except OSError as exc:
        raise FlinkRestError(f"Flink REST {method} {path} failed: {exc}") from exc
    return json.loads(raw) if raw else {}


def find_job(settings: Settings, name: str) -> dict | None:
    """The live job of that name ({"jid", "name", "state", ...}), or None."""
    jobs = _call(settings, "/jobs/overview").get("jobs", [])
    live = [j for j in jobs if j.get("name") == name and j.get("state") in LIVE]
    return max(live, key=lambda j: j.get("start-time", 0)) if live else None


def completed_checkpoints(settings: Settings, jid: str) -> int:
    return int(_call(settings, f"/jobs/{jid}/checkpoints").get("counts", {}).get("completed", 0))


def stop_with_savepoint(settings: Settings, jid: str, target_dir: str, timeout: float = 300.0) -> str:
    """Stops the job after a savepoint into target_dir; returns the savepoint's location."""
    trigger = _call(settings, f"/jobs/{jid}/stop", {"drain": False, "targetDirectory": target_dir}, "POST")
    request_id = trigger["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _call(settings, f"/jobs/{jid}/savepoints/{request_id}")
        if status.get("status", {}).get("id") == "COMPLETED":
            op = status.get("operation", {})
            if "location" in op:
                return op["location"]
            cause = op.get("failure-cause", {}).get("stack-trace", "")
            raise FlinkRestError(f"savepoint of job {jid} failed: {cause.splitlines()[0] if cause else op}")
        time.sleep(1)
    raise FlinkRestError(f"savepoint of job {jid} not done after {timeout:.0f}s")


def cancel_job(settings: Settings, name: str, result=None, timeout: float = 60.0) -> None:
    """Cancels the live job of that name and waits until Flink says it is gone.

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
                _call(settings, f"/jobs/{job['jid']}?mode=cancel", method="PATCH")
            except FlinkRestError:
                pass  # it may have ended meanwhile; find_job tells
        if time.monotonic() > deadline:
            raise FlinkRestError(f"job {name} ({job['jid']}) still {job['state']} after {timeout:.0f}s")
        time.sleep(1)

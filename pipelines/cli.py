"""`sensorlake pipeline run`: submit the streaming job to Flink and stay with it.

The command stays in the foreground while the job runs. With LOOPBACK workers (the local stack,
the tests) the job's Python code runs in this process, so Ctrl-C or SIGTERM cancels the job. With
PROCESS or EXTERNAL workers (docker-compose) the job lives in the cluster on its own: a signal
only ends the watch and leaves the job running.

``--if-absent`` makes submission idempotent: when Flink already has a live job of that name, it
submits nothing and watches that job instead, so running the command again (a second
``docker compose up -d``, a restarted submitter container) never starts a second copy.
"""

from __future__ import annotations

import argparse
import signal
import sys

from pipelines import main
from sensorlake import flink_rest, memory
from sensorlake.registry import RegistryError
from sensorlake.settings import Settings

REST_WAIT_S = 120.0
POLL_S = 5.0


class _Stop(BaseException):
    """SIGTERM/SIGINT arrived (a BaseException, like KeyboardInterrupt: no `except Exception` eats it)."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pipeline_action", required=True, metavar="ACTION")
    run_p = sub.add_parser("run", help="submit the lake job and stay with it (Ctrl-C cancels a LOOPBACK job)")
    main.parser(run_p)
    run_p.add_argument("--if-absent", action="store_true",
                       help="submit only when Flink has no live job of this name; otherwise watch that "
                            "one (idempotent: never a second copy)")


def _say(message: str) -> None:
    print(message, flush=True)


def _error(message: str) -> int:
    print(f"sensorlake pipeline: error: {message}", file=sys.stderr, flush=True)
    return 2


def live_job(settings: Settings, name: str, wait_s: float | None = None) -> dict | None:
    return flink_rest.live_job(settings, name, REST_WAIT_S if wait_s is None else wait_s)


def watch(settings: Settings, jid: str) -> int:
    return flink_rest.watch(settings, jid, _say, poll_s=POLL_S, unreachable_s=REST_WAIT_S)


def _raise_stop(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Stop()


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)
    loopback = settings.environment_type.upper() == "LOOPBACK"
    if loopback:  # the job's Python workers are threads of this process
        memory.trim_heap_periodically()
        memory.start_from_environment()
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, _raise_stop)
        except ValueError:  # not the main thread (embedded use): the caller stops it
            pass
    result = None
    try:
        if getattr(args, "if_absent", False):
            job = live_job(settings, settings.job_name)
            if job:
                _say(f"{settings.job_name} already runs in Flink (job {job['jid']}, {job['state']}): "
                     f"not submitting a second copy; watching it")
                return watch(settings, job["jid"])
        try:
            result = main.submit(args, settings)
        except RegistryError as exc:
            return _error(str(exc))
        _say(f"submitted {settings.job_name}; " + ("Ctrl-C cancels it" if loopback else
                                                "it runs in the Flink cluster; Ctrl-C only stops watching"))
        try:
            result.wait_until_finish()
        except Exception as exc:  # noqa: BLE001 - e.g. the job server restarted under us
            job = None if loopback else live_job(settings, settings.job_name, wait_s=30)
            if job is None:
                raise
            _say(f"lost the job server ({type(exc).__name__}); {settings.job_name} runs on in Flink: watching it")
            return watch(settings, job["jid"])
        return 0
    except RuntimeError as exc:  # Beam: the job ended FAILED (or its job server went away)
        print(f"sensorlake pipeline: {settings.job_name} ended: {exc}", file=sys.stderr, flush=True)
        return 1
    except _Stop:
        if result is not None and loopback:
            _say(f"cancelling {settings.job_name} (its LOOPBACK workers live in this process)")
            try:
                flink_rest.cancel_job(settings, settings.job_name, result)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                _say(f"cancel failed: {exc}")
        elif result is not None:
            _say(f"{settings.job_name} keeps running in Flink; stopped watching")
        return 130
    except OSError as exc:
        return _error(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

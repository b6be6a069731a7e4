"""A long-lived Beam Python worker's memory: freed heap given back, and a report of what it holds.

The SDK harness decodes and frees large gRPC messages on several threads. glibc gives each thread
that contends on malloc an arena of its own (up to 8 x cores), and it returns freed memory in the
middle of an arena to the system only when ``malloc_trim`` asks, so the resident size of a busy
worker drifts upwards although nothing is kept. Two arenas and a trim every 30 s give that memory
back; both are no-ops where glibc is absent. What stays resident follows the largest amount of
data the worker has had in flight (docs/results.md, K5); ``memory_report`` says where it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time

M_ARENA_MAX = -8  # malloc.h
ARENAS = 2
TRIM_INTERVAL_S = 30.0
_trimming = threading.Event()  # set once this process trims: one trimmer per process


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def environment() -> dict[str, str]:
    """For a process about to start: the arena cap, read by glibc at its first malloc."""
    return {"MALLOC_ARENA_MAX": str(ARENAS)}


def trim_heap_periodically(interval_s: float = TRIM_INTERVAL_S) -> bool:
    """In this process: cap the arenas and trim the heap every ``interval_s``; False without glibc.
    Calling it again changes nothing."""
    libc = _libc()
    if libc is None:
        return False
    if _trimming.is_set():
        return True
    _trimming.set()
    libc.mallopt(M_ARENA_MAX, ARENAS)

    def trim():
        while True:
            time.sleep(interval_s)
            libc.malloc_trim(0)

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def vm_rss_kb(pid: int | str = "self") -> int:
    """Resident kB of a process; 0 when it is gone (or a zombie, which has no VmRSS line)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def _resident_by_kind() -> dict[str, int]:
    """Resident kB per kind of mapping (/proc/self/smaps): glibc's main heap, anonymous mappings
    (other malloc arenas, Python's object arenas, jemalloc, thread stacks) and file-backed code."""
    kinds = {"heap_rss_kb": 0, "anon_rss_kb": 0, "file_rss_kb": 0}
    kind = None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                first = line.split(maxsplit=6)
                if "-" in first[0] and len(first) >= 5:  # a mapping's header line
                    path = first[5].strip() if len(first) > 5 else ""
                    kind = "heap_rss_kb" if path == "[heap]" else "file_rss_kb" if path.startswith("/") else "anon_rss_kb"
                elif first[0] == "Rss:" and kind:
                    kinds[kind] += int(first[1])
    except OSError:
        return {}
    return kinds


def _malloc_info(libc) -> dict[str, int]:
    """glibc's view: bytes in use by malloc and bytes it holds free (what a trim could give back)."""
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return {"arena_kb": m.arena // 1024, "mmap_kb": m.hblkhd // 1024, "in_use_kb": m.uordblks // 1024,
            "free_kb": m.fordblks // 1024}


def _arrow_kb() -> dict[str, int]:
    try:
        import pyarrow
    except ImportError:
        return {}
    pool = pyarrow.default_memory_pool()
    return {"arrow_kb": pool.bytes_allocated() // 1024, "arrow_backend": pool.backend_name}


def memory_report(previous: dict | None = None, top: int = 12) -> dict:
    """What this process's memory is made of; with ``previous`` (an earlier report), the allocation
    sites that grew, when tracemalloc is on (``PYTHONTRACEMALLOC=N``).

    Nothing here walks the live objects (gc.get_objects): from a second thread that exposes tuples
    still being built by the harness's threads, which then fail ("bad argument to internal function"
    in tupleobject.c; it failed a bundle in a soak). Python's own allocator is measured by its count
    of allocated blocks instead."""
    import tracemalloc

    report: dict = {"rss_kb": vm_rss_kb(), **_resident_by_kind(), **_malloc_info(_libc()), **_arrow_kb(),
                    "python_blocks": sys.getallocatedblocks()}
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")])
        report["traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
        report["_snapshot"] = snapshot
        if previous is not None and "_snapshot" in previous:
            stats = snapshot.compare_to(previous["_snapshot"], "traceback")
            report["sites_grown"] = [
                {"kb": s.size_diff // 1024, "count": s.count_diff, "where": s.traceback.format(limit=4)}
                for s in stats[:top] if s.size_diff > 0]
    return report


def report_periodically(path: str, interval_s: float) -> None:
    """Appends a memory report as one JSON line to ``path`` every ``interval_s``; growth is measured
    against the first report, one interval in (a job starting up is not growth). For finding what
    grows in a long-running worker; tracemalloc, when on, slows the worker down."""

    def loop():
        first = None
        started = time.time()
        while True:
            time.sleep(interval_s)
            report = memory_report(first)
            first = first or report
            line = {"t_s": round(time.time() - started, 1), "pid": os.getpid(),
                    **{k: v for k, v in report.items() if not k.startswith("_")}}
            with open(path, "a") as f:
                f.write(json.dumps(line) + "\n")

    threading.Thread(target=loop, name="memory-report", daemon=True).start()


def start_from_environment(environ=os.environ) -> None:
    """``SENSORLAKE_MEMORY_REPORT=FILE`` (and ``SENSORLAKE_MEMORY_REPORT_S``, default 60) turn the
    report on in a worker process; see docs/operations.md."""
    path = environ.get("SENSORLAKE_MEMORY_REPORT")
    if path:
        report_periodically(path, float(environ.get("SENSORLAKE_MEMORY_REPORT_S", "60")))


def run_module(name: str) -> None:
    """Runs a module as __main__ with its heap trimmed periodically (the PROCESS worker's entry point)."""
    import runpy

    trim_heap_periodically()
    start_from_environment()
    runpy.run_module(name, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    import sys

    run_module(sys.argv.pop(1))

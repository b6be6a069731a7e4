"""Keeping a long-lived Beam Python worker's freed heap from staying resident (glibc malloc).

The SDK harness decodes and frees large gRPC messages on several threads. glibc gives each thread
that contends on malloc an arena of its own (up to 8 x cores), and it returns freed memory in the
middle of an arena to the system only when ``malloc_trim`` asks, so the resident size of a busy
worker drifts upwards although nothing is kept. Two arenas and a trim every 30 s give that memory
back; both are no-ops where glibc is absent. They do not make it flat: the 30-minute soak of
2026-12-02 still grew 386 -> 406 MB between its first and last ten minutes (docs/results.md, K2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
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


def run_module(name: str) -> None:
    """Runs a module as __main__ with its heap trimmed periodically (the PROCESS worker's entry point)."""
    import runpy

    trim_heap_periodically()
    runpy.run_module(name, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    import sys

    run_module(sys.argv.pop(1))

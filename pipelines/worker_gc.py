"""Garbage collection tuned for the job's Python worker process.

The worker makes a few container objects per reading (row dicts, tuples) that refcounting frees
young, and holds many long-lived ones: Beam's and our modules, the registry, the keyed state the
harness caches. With CPython's defaults (700, 10, 10) a full collection came every couple of
seconds and walked all of them each time: 12 % of the worker's CPU in a 400,000-reading run of
bench/pipeline.py (timed with ``gc.callbacks``; bench/PIPELINE.md). ``gc.freeze()`` takes what
exists when the stages are set up out of the collector's sight for good, and a first-generation
threshold of 20,000 lets the young garbage go without a collection every 700 allocations. Cyclic
garbage is still collected, a little later.
"""

from __future__ import annotations

import gc
import threading

GEN0_THRESHOLD = 20_000

_lock = threading.Lock()
_tuned = False


def tune() -> None:
    """Once per process (every stateful stage calls it from setup; stages share the process)."""
    global _tuned
    with _lock:
        if _tuned:
            return
        _tuned = True
        gc.freeze()
        gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(max(GEN0_THRESHOLD, gen0), gen1, gen2)

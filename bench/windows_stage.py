"""The 1-minute windows' Python work per reading, without Beam: shard batches, coder, windows.

No services: it makes ``--sensors`` registered sensors send one in-order reading a second each
for ``--seconds`` seconds (with seq, as bench/pipeline.py preloads them), then runs what the job's
windows do with them, ``--bundle`` readings at a time: ``BatchByShard`` (batches per shard key,
heartbeats), the batches through ``BatchCoder`` (the crossing to the keyed stage) and
``SensorMinutes.process`` with each shard's state pickled in between, as Beam's ``PickleCoder``
state does. It prints microseconds per reading for each step, ``--repeat`` times. What it leaves
out is the harness (gRPC, state round trips): bench/pipeline.py measures the whole job. It
imports the code of the repository it lives in, so two commits compare by running it from a
worktree of each (bench/raw_stage.py does the same for the raw stage).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from apache_beam.utils.timestamp import Timestamp  # noqa: E402
from raw_stage import tune_gc  # noqa: E402 - the collector as the job's worker has it

from pipelines.batching import Batch, BatchCoder  # noqa: E402
from pipelines.windows import BatchByShard, Observation, SensorMinutes, WindowSettings  # noqa: E402
from sensorlake.quality import Thresholds  # noqa: E402
from sensorlake.registry import Sensor  # noqa: E402

STEPS = ("shards", "coder", "windows")
T0 = 1_700_000_000_000


class _PickledState:
    """A ReadModifyWriteState that keeps its value pickled, as the runner keeps it for the worker."""

    def __init__(self) -> None:
        self._value: bytes | None = None

    def read(self):
        return pickle.loads(self._value) if self._value is not None else None

    def write(self, value) -> None:
        self._value = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def readings(sensors: int, seconds: int) -> list[Observation]:
    return [Observation(f"s{i % sensors}", T0 + (i // sensors) * 1000, 20.0 + (i % 7) * 0.25, i // sensors,
                        T0 + (i // sensors) * 1000 + 25, "C", 0)
            for i in range(sensors * seconds)]


def run_once(observations: list[Observation], registry: dict, bundle: int) -> tuple[dict[str, float], int]:
    shards = BatchByShard(5_000, WindowSettings().shards)
    shards.setup()
    windows = SensorMinutes(lambda: registry, Thresholds(), WindowSettings(), clock=lambda: T0 / 1000)
    coder, states, rows = BatchCoder(), {}, 0
    spent = dict.fromkeys(STEPS, 0.0)
    for j in range(0, len(observations), bundle):
        a = time.perf_counter()
        shards.start_bundle()
        shards.process(Batch(observations[j:j + bundle]), Timestamp(0))
        keyed = [wv.value for wv in shards.finish_bundle()]
        b = time.perf_counter()
        keyed = [(shard, coder.decode(coder.encode(batch))) for shard, batch in keyed]
        c = time.perf_counter()
        for shard, batch in keyed:
            rows += sum(1 for _ in windows.process((shard, batch), state=states.setdefault(shard, _PickledState())))
        d = time.perf_counter()
        for step, t in zip(STEPS, (b - a, c - b, d - c)):
            spent[step] += t
    return spent, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sensors", type=int, default=1_000)
    p.add_argument("--seconds", type=int, default=240, help="readings per sensor (one a second)")
    p.add_argument("--bundle", type=int, default=20_000, help="readings per bundle")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--default-gc", action="store_true",
                   help="keep CPython's collector settings (the job's worker tunes them: pipelines/worker_gc.py)")
    a = p.parse_args(argv)
    if min(a.sensors, a.seconds, a.bundle, a.repeat) < 1:
        p.error("every option must be at least 1")
    observations = readings(a.sensors, a.seconds)
    registry = {f"s{i}": Sensor(f"s{i}", None, None, "C", "temperature", -50.0, 150.0, "") for i in range(a.sensors)}
    gc_note = tune_gc(a.default_gc)
    print(f"{len(observations):,} readings of {a.sensors:,} sensors in bundles of {a.bundle:,}, code of {REPO}, {gc_note}")
    for n in range(a.repeat):
        spent, rows = run_once(observations, registry, a.bundle)
        per = {k: v / len(observations) * 1e6 for k, v in spent.items()}
        print(f"run {n + 1}: " + "  ".join(f"{k} {v:.2f}" for k, v in per.items())
              + f"  total {sum(per.values()):.2f} µs/reading ({rows:,} rows)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

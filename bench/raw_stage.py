"""The raw stage's Python work per record, without Beam: unpack, parse, de-duplicate, columns.

No services: it packs ``--records`` bench readings (bench/pipeline.py's payloads and the bridge's
headers) into Kafka batches of ``--batch`` records, then runs the raw stage's loop over them
(``unpack_batch``, ``ParseReadings.parse``, ``SeenReadings``, ``ChunkWriter.buffered_form``, the
Observations through ``BatchCoder``) ``--repeat`` times and prints microseconds per record for
each step. What it leaves out is the harness (gRPC, state, timers): bench/pipeline.py measures the
whole job. To compare two commits, run this file from a worktree of each: it imports the code of
the repository it lives in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pipeline import _payload  # noqa: E402 - bench/pipeline.py's preload payloads

from pipelines.batching import Batch, BatchCoder  # noqa: E402
from pipelines.dedupe import SeenReadings  # noqa: E402
from pipelines.kafka_io import KafkaRecord, pack_batch, unpack_batch  # noqa: E402
from pipelines.parsing import ParseReadings  # noqa: E402
from pipelines.sinks import ChunkWriter  # noqa: E402
from sensorlake import lake  # noqa: E402

STEPS = ("unpack", "parse", "dedupe", "columns", "observations")


def batches(records: int, sensors: int, per_batch: int) -> list[tuple[int, bytes]]:
    t0 = 1_700_000_000_000
    recs = []
    for i in range(records):
        sid, ms = f"s{i % sensors}", t0 + (i // sensors) * 1000
        recs.append(KafkaRecord(0, i, ms, sid.encode(), _payload(sid, ms, 20.0 + (i % 7) * 0.25, i // sensors),
                                {"mqtt_topic": f"sensors/{sid}".encode(), "receive_ms": b"%d" % (ms + 25),
                                 "bridge_id": b"bench", "mqtt_dup": b"0"}))
    return [(0, pack_batch(recs[j:j + per_batch])) for j in range(0, records, per_batch)]


def run_once(elements, parse: ParseReadings, writer: ChunkWriter) -> dict[str, float]:
    coder, seen_state = BatchCoder(), None
    spent = dict.fromkeys(STEPS, 0.0)
    for element in elements:
        a = time.perf_counter()
        records = list(unpack_batch(element))
        b = time.perf_counter()
        now = parse.now_ms()
        outs = [parse.parse(r, now) for r in records]
        getattr(parse, "report_counts", lambda: None)()  # commits before bb4ddd9 count per record
        c = time.perf_counter()
        seen = SeenReadings().open(seen_state)
        for out, _ in outs:
            seen.fresh(out.row)
        seen_state = seen.commit()[0]
        d = time.perf_counter()
        writer.buffered_form([out for out, _ in outs])
        e = time.perf_counter()
        coder.decode(coder.encode(Batch(obs for _, obs in outs)))
        f = time.perf_counter()
        for step, t in zip(STEPS, (b - a, c - b, d - c, e - d, f - e)):
            spent[step] += t
    return spent


def tune_gc(default: bool) -> str:
    """The collector as the job's worker has it once its stages are set up (the input built here
    is frozen with what the worker would hold), unless ``default``."""
    if default:
        return "CPython's collector"
    try:
        from pipelines import worker_gc
    except ImportError:  # a commit from before the tuning
        return "CPython's collector (no pipelines/worker_gc.py in this commit)"
    worker_gc.tune()
    return "the worker's collector"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--sensors", type=int, default=1_000)
    p.add_argument("--batch", type=int, default=2_000, help="records per packed Kafka batch")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--default-gc", action="store_true",
                   help="keep CPython's collector settings (the job's worker tunes them: pipelines/worker_gc.py)")
    a = p.parse_args(argv)
    elements = batches(a.records, a.sensors, a.batch)
    gc_note = tune_gc(a.default_gc)
    parse = ParseReadings({})
    writer = ChunkWriter("/unused", lake.BY_NAME, 10_000, 10.0)  # buffered_form writes no file
    print(f"{a.records:,} records of {a.sensors:,} sensors in batches of {a.batch:,}, code of {REPO}, {gc_note}")
    for n in range(a.repeat):
        spent = run_once(elements, parse, writer)
        per = {k: v / a.records * 1e6 for k, v in spent.items()}
        print(f"run {n + 1}: " + "  ".join(f"{k} {v:.2f}" for k, v in per.items())
              + f"  total {sum(per.values()):.2f} µs/record", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The job's keyed state as the Python worker handles it: size, objects, and a read + write.

With the state cache off, the harness decodes a key's state for every bundle and holds it until the
bundle commits, so what a state decodes into is both CPU per bundle and the worker's peak of
Python objects (docs/results.md, K5). Two states are built here with the job's own code, no
services, and one pickle round trip of each is timed, as stored now and in the form before:

* de-duplication per Kafka partition (pipelines/dedupe.py): ``--sensors`` sensors at 1 Hz without
  ``seq`` (the challenge's messages) for ``--seconds``, remembered for ``--horizon-s``, one batch a
  second; now a recent tier (read and written by every batch) and an archive (read only for a
  reading older than the recent tier), before all of a sensor's times in one array, and before
  that in a list of ints;
* the 1-minute windows of ``--fleet`` sensors (pipelines/windows.py): ``--windows`` windows per
  sensor (``--open`` open ones and the closed ones within the allowed lateness), 60 readings each
  with seq; closed windows packed into bytes and seq ranges (now), every window a dict of seq
  ranges (before), or a dict with a set of keys (earlier).

    .venv/bin/python bench/state.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.dedupe import SeenReadings  # noqa: E402
from pipelines.windows import Observation, _add, _new_acc, _pack  # noqa: E402

T0 = dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc)


def round_trip(state: dict, repeat: int) -> tuple[int, float, float, int]:
    """(pickled bytes, best dump s, best load s, Python blocks it decodes into): PickleCoder's work
    for one read and one write."""
    dumps, loads, data, blocks = [], [], b"", 0
    for _ in range(repeat):
        t = time.perf_counter()
        data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        dumps.append(time.perf_counter() - t)
        before = sys.getallocatedblocks()
        t = time.perf_counter()
        back = pickle.loads(data)
        loads.append(time.perf_counter() - t)
        blocks = sys.getallocatedblocks() - before
        del back
    return len(data), min(dumps), min(loads), blocks


def windows_state(fleet: int, windows: int, form: str, open_windows: int) -> dict:
    """Per sensor, its windows' tallies as SensorMinutes keeps them (the clock fields left out);
    form: "packed" (now), "ranges" or "sets"."""
    state = {}
    for i in range(fleet):
        opened = {}
        for w in range(windows):
            acc = _new_acc("C")
            for k in range(60):
                seq = w * 60 + k
                _add(acc, Observation(f"Sensor {i}", w * 60_000 + k * 1000, 20.0 + k % 7, seq, 0, "C"), None)
            if form == "sets":
                del acc["seqs"], acc["times"]
                acc["keys"] = set(range(w * 60, w * 60 + 60))
            closed = w < windows - open_windows
            opened[w * 60_000] = _pack(acc) if form == "packed" and closed else acc
        state[f"Sensor {i}"] = {"wm": 0, "max_event": 0, "last_arrival": 0, "next": 0, "open": opened}
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=1667, help="sensors of one partition (5,000 over 3 partitions)")
    ap.add_argument("--seconds", type=int, default=3600, help="seconds of 1 Hz readings without seq")
    ap.add_argument("--horizon-s", type=int, default=3600, help="how long event times are remembered")
    ap.add_argument("--fleet", type=int, default=2500, help="sensors of the 1-minute windows' state")
    ap.add_argument("--windows", type=int, default=7, help="windows per sensor (open + within lateness)")
    ap.add_argument("--open", type=int, default=1, help="of those, open ones (1, or 2 just after a minute ends)")
    ap.add_argument("--repeat", type=int, default=3, help="round trips per form (the best is reported)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for the JSON result")
    a = ap.parse_args(argv)
    if a.sensors < 1 or a.seconds < 1 or a.repeat < 1:
        ap.error("--sensors, --seconds and --repeat must be at least 1")
    if not 0 <= a.open <= a.windows:
        ap.error("--open must be between 0 and --windows")

    seen, recent, archive = SeenReadings(time_horizon_ms=a.horizon_s * 1000), None, []
    reads = rewrites = 0
    started = time.perf_counter()
    for second in range(a.seconds):
        batch = seen.open(recent, lambda: archive)
        for i in range(a.sensors):
            at = T0 + dt.timedelta(seconds=second, milliseconds=i % 1000)
            batch.fresh({"sensor_id": f"Sensor {i}", "seq": None, "event_time": at})
        recent, pieces, rewrite = batch.commit()
        if rewrite:
            archive.clear()
        archive.extend(pieces)
        reads, rewrites = reads + batch.archive_reads, rewrites + batch.compactions
        if second and second % 600 == 0:
            print(f"  built {second:,}/{a.seconds:,} s of traffic", file=sys.stderr, flush=True)
    built = time.perf_counter() - started
    whole = {}
    for sensor, state in recent[0].items():
        older = [p[sensor] for p in archive if sensor in p]
        times = array("q", sorted(t for part in older for t in part if t >= state["times"][-1] - a.horizon_s * 1000))
        whole[sensor] = {"seqs": state["seqs"], "times": times + state["times"]}
    kept = sum(len(s["times"]) for s in whole.values())
    recent_kept = sum(len(s["times"]) for s in recent[0].values())
    figures = {"dedupe: recent tier (every batch)": round_trip(recent, a.repeat),
               "dedupe: archive (only if needed)": round_trip(archive, a.repeat),
               "dedupe: one array (before)": round_trip(whole, a.repeat)}
    whole = {k: {"seqs": v["seqs"], "times": list(v["times"])} for k, v in whole.items()}
    figures["dedupe: one list (earlier)"] = round_trip(whole, a.repeat)
    del recent, archive, whole
    for name, form in (("windows: closed ones packed", "packed"), ("windows: seq ranges (before)", "ranges"),
                       ("windows: key sets (earlier)", "sets")):
        figures[name] = round_trip(windows_state(a.fleet, a.windows, form, a.open), a.repeat)

    print(f"\nde-duplication state of one partition: {a.sensors:,} sensors, {a.seconds:,} s at 1 Hz without seq, "
          f"horizon {a.horizon_s:,} s: {kept:,} event times kept, {recent_kept:,} of them in the recent tier; "
          f"archive read {reads} times, rewritten {rewrites} times (built in {built:.1f} s)")
    print(f"1-minute windows' state: {a.fleet:,} sensors x {a.windows} windows of 60 readings with seq, "
          f"{a.open} of them open")
    print(f"{'form':<36}{'pickled MB':>11}{'dump s':>9}{'load s':>9}{'objects':>11}")
    for form, (size, dump, load, blocks) in figures.items():
        print(f"{form:<36}{size / 1e6:>11.1f}{dump:>9.3f}{load:>9.3f}{blocks:>11,}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"state-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"benchmark": "state", "args": vars(a), "event_times": kept,
                                "recent_event_times": recent_kept, "archive_reads": reads,
                                "archive_rewrites": rewrites, "build_s": built,
                                "forms": {k: {"bytes": s, "dump_s": d, "load_s": lo, "python_blocks": b}
                                          for k, (s, d, lo, b) in figures.items()}}, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

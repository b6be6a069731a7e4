"""De-duplication of readings by (sensor_id, seq), or (sensor_id, event_time) without a seq.

Duplicates reach Kafka at new offsets (QoS 1 redeliveries, a bridge restarted before its acks
went out, a generator's deliberate duplicates), so offsets cannot tell them apart; the reading's
own key can. The bridge keys every Kafka record by its sensor id, so all copies of a reading are in
one Kafka partition, and the job de-duplicates per partition (pipelines/raw_lake.py). State is per
sensor and bounded: seqs are kept as merged [lo, hi] ranges (a few ranges per sensor in practice)
within ``seq_horizon`` of the newest seq, event times within ``time_horizon_ms`` of the newest one.
The state lives in Flink checkpoints together with the Kafka offsets, so a restore replays records
against the state they were first judged with.

Without a seq (the challenge's messages) event time is compared to the millisecond: two readings
of one sensor in the same millisecond are one reading, the first to arrive is kept and the other
counted as a duplicate (docs/contract.md). At one reading a second that never happens by chance.
Those times are the bulk of the state (3,600 per sensor at 1 Hz), and the state is read and
written whole for every batch, so they are kept in an ``array('q')``: it pickles as one buffer,
where a list decoded into one Python int per time, five times slower (docs/results.md, K8).
"""

from __future__ import annotations

import bisect
from array import array


def add_seq(ranges: list[list[int]], seq: int) -> bool:
    """Adds seq to sorted, disjoint, merged ranges; False if it was already there."""
    i = bisect.bisect_right(ranges, [seq, float("inf")]) - 1
    if i >= 0 and ranges[i][0] <= seq <= ranges[i][1]:
        return False
    left = i >= 0 and ranges[i][1] == seq - 1
    right = i + 1 < len(ranges) and ranges[i + 1][0] == seq + 1
    if left and right:
        ranges[i][1] = ranges[i + 1][1]
        del ranges[i + 1]
    elif left:
        ranges[i][1] = seq
    elif right:
        ranges[i + 1][0] = seq
    else:
        ranges.insert(i + 1, [seq, seq])
    return True


def prune_seqs(ranges: list[list[int]], horizon: int) -> None:
    floor = ranges[-1][1] - horizon if ranges else 0
    while ranges and ranges[0][1] < floor:
        ranges.pop(0)
    if ranges and ranges[0][0] < floor:
        ranges[0][0] = floor


class SeenReadings:
    """Which readings each sensor has already sent: the first copy of a reading is fresh.

    The state (``by_sensor``: sensor id -> {"seqs": ranges, "times": ms}) is the caller's, kept
    in Flink state next to the Kafka offsets it describes.
    """

    def __init__(self, seq_horizon: int = 1_000_000, time_horizon_ms: int = 3_600_000):
        self._seq_horizon = seq_horizon
        self._time_horizon_ms = time_horizon_ms

    def fresh(self, by_sensor: dict, row: dict) -> bool:
        state = by_sensor.get(row["sensor_id"])
        if state is None:
            state = by_sensor[row["sensor_id"]] = {"seqs": [], "times": array("q")}
        if row["seq"] is not None:
            fresh = add_seq(state["seqs"], int(row["seq"]))
            if fresh:
                prune_seqs(state["seqs"], self._seq_horizon)
            return fresh
        t = int(row["event_time"].timestamp() * 1000)
        times = state["times"]
        if not isinstance(times, array):  # state of a job from before the arrays
            times = state["times"] = array("q", times)
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return False
        times.insert(i, t)
        floor = times[-1] - self._time_horizon_ms
        if times[0] < floor:
            del times[:bisect.bisect_left(times, floor)]
        return True


__all__ = ["SeenReadings", "add_seq", "prune_seqs"]

"""De-duplication of readings by (sensor_id, seq), or (sensor_id, event_time) without a seq.

Duplicates reach Kafka at new offsets (QoS 1 redeliveries, a bridge restarted before its acks
went out, a generator's deliberate duplicates), so offsets cannot tell them apart; the reading's
own key can. State is per sensor and bounded: seqs are kept as merged [lo, hi] ranges (a few
ranges per sensor in practice) within ``seq_horizon`` of the newest seq, event times within
``time_horizon_ms`` of the newest one. The state lives in Flink checkpoints together with the
Kafka offsets, so a restore replays records against the state they were first judged with.

Without a seq (the challenge's messages) event time is compared to the millisecond: two readings
of one sensor in the same millisecond are one reading, the first to arrive is kept and the other
counted as a duplicate (docs/contract.md). At one reading a second that never happens by chance.
"""

from __future__ import annotations

import bisect

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipelines.batching import group_per_bundle, shard_of
from pipelines.sinks import LakeRecord


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


class _DedupeBySensor(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())

    def __init__(self, seq_horizon: int, time_horizon_ms: int):
        self._seq_horizon = seq_horizon
        self._time_horizon_ms = time_horizon_ms
        self._duplicates = Metrics.counter("dedupe", "duplicates")
        self._unique = Metrics.counter("dedupe", "unique")

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        _, records = element  # one shard's records of one bundle, in Kafka order
        by_sensor: dict[str, dict] = seen.read() or {}
        changed = False
        for record in records:
            state = by_sensor.get(record.row["sensor_id"])
            if state is None:
                state = by_sensor[record.row["sensor_id"]] = {"seqs": [], "times": []}
            if self._fresh(state, record.row):
                changed = True
                self._unique.inc()
                yield record
            else:
                self._duplicates.inc()
                yield record._replace(dataset=None, row=None)  # consumed, written nowhere
        if changed:
            seen.write(by_sensor)

    def _fresh(self, state: dict, row: dict) -> bool:
        if row["seq"] is not None:
            fresh = add_seq(state["seqs"], int(row["seq"]))
            if fresh:
                prune_seqs(state["seqs"], self._seq_horizon)
            return fresh
        t = int(row["event_time"].timestamp() * 1000)
        times = state["times"]
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return False
        times.insert(i, t)
        floor = times[-1] - self._time_horizon_ms
        if times[0] < floor:
            del times[:bisect.bisect_left(times, floor)]
        return True


class DedupeReadings(beam.PTransform):
    """Passes the first copy of each reading; later copies become dataset=None LakeRecords.

    Records of other datasets (rejected payloads) pass through untouched.
    """

    def __init__(self, raw_dataset: str, seq_horizon: int = 1_000_000, time_horizon_ms: int = 3_600_000,
                 shards: int = 64):
        super().__init__()
        self._raw_dataset = raw_dataset
        self._shards = shards
        self._seq_horizon = seq_horizon
        self._time_horizon_ms = time_horizon_ms

    def expand(self, records):
        raw_ds, shards = self._raw_dataset, self._shards
        raw, other = records | "SplitRaw" >> beam.Partition(
            lambda r, _: 0 if r.dataset == raw_ds else 1, 2)
        deduped = (
            raw
            | "KeyByShard" >> beam.Map(lambda r: (shard_of(r.row["sensor_id"], shards), r))
            | "BatchByShard" >> group_per_bundle()
            | "DropDuplicates" >> beam.ParDo(_DedupeBySensor(self._seq_horizon, self._time_horizon_ms))
        )
        return (deduped, other) | "Merge" >> beam.Flatten()


__all__ = ["DedupeReadings", "LakeRecord", "add_seq", "prune_seqs"]

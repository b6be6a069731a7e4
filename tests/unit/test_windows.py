"""1-minute windows and quality rows, driven with TestStream: exact rows for each rule of docs/design.md.

Each test feeds batches of readings in arrival order (one TestStream event per batch) through
ResampleAndScore and checks every row it emits. Times: T = 2026-11-28T10:00:00Z; a reading of
second s is stamped T + s seconds and, unless a test says otherwise, arrives 0.5 s later.
"""

from __future__ import annotations

import json
import statistics
from unittest import mock
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from sensorlake.quality import Thresholds
from sensorlake.lake import READINGS_1MIN, READINGS_1MIN_DATASET, SENSOR_QUALITY, SENSOR_QUALITY_DATASET
from pipelines.batching import shard_of
from pipelines.windows import BatchByShard, Heartbeat, Observation, ResampleAndScore, SensorMinutes, WindowSettings
from sensorlake.registry import parse_registry
from tests.userstate import FakeState as _State

UTC = timezone.utc
T = 1_795_860_000_000  # 2026-11-28T10:00:00Z
NOW = (T + 3_600_000) / 1000
DAY = 86_400_000
THRESHOLDS = Thresholds()
REGISTRY = parse_registry(json.dumps({
    sid: {"unit": "C", "type": "temperature", "range": [0, 45], "description": f"sensor {sid}"}
    for sid in ("1", "2", "3")} | {
    "slow": {"unit": "%", "type": "humidity", "range": [0, 100], "interval_ms": 5000}}))

_CAPTURED: list = []  # the DirectRunner runs in this process


def _capture(row):
    _CAPTURED.append(row)  # by module reference: a pickled bound method would append to a copy


def obs(sid="1", sec=0.0, value=20.0, seq=None, arrival=None, base=T):
    t = base + int(sec * 1000)
    return Observation(sid, t, float(value), seq, T + int(sec * 1000) + 500 if arrival is None else arrival, "C")


def minute(sid="1", secs=range(60), value=lambda i: 20.0 + i % 7, base=T, seq_from=0):
    return [obs(sid, s, value(i), seq_from + s, base=base) for i, s in enumerate(secs)]


def dt(ms):
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def run(batches, registry=REGISTRY, settings=WindowSettings(), thresholds=THRESHOLDS):
    """Runs the batches through ResampleAndScore; returns (rows by dataset, counters)."""
    _CAPTURED.clear()
    stream = TestStream()
    for i, batch in enumerate(batches):  # each batch is a bundle of its own, in this order
        stream = stream.add_elements([TimestampedValue(o, o.event_time_ms / 1000) for o in batch])
        stream = stream.advance_watermark_to(T / 1000 + i)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(options=options)
    (p | stream
     | ResampleAndScore(lambda: registry, thresholds, settings, heartbeat_interval_ms=5_000, clock=lambda: NOW)
     | beam.Map(_capture))
    p.run().wait_until_finish()
    counters, direct = _counters(batches, registry, settings, thresholds)
    # The DirectRunner drops the metrics of all but the first TestStream bundle, so counters come
    # from the same DoFns driven by hand; their rows must be exactly the pipeline's rows.
    assert sorted(map(_key, direct)) == sorted(map(_key, _CAPTURED))
    rows = {READINGS_1MIN_DATASET: [], SENSOR_QUALITY_DATASET: []}
    for r in _CAPTURED:
        rows[r.dataset].append(r.row)
    for dataset, schema in ((READINGS_1MIN_DATASET, READINGS_1MIN), (SENSOR_QUALITY_DATASET, SENSOR_QUALITY)):
        for row in rows[dataset]:  # every row fits its Parquet schema
            assert set(row) == set(schema.names), row
    return rows, counters


def _key(r):
    return (r.dataset, r.sensor_id, r.window_start_ms, r.row["version"], repr(sorted(r.row.items())))


class _Counter:
    def __init__(self, counts, name):
        self._counts, self._name = counts, name

    def inc(self, n=1):
        self._counts[self._name] = self._counts.get(self._name, 0) + n


def _counters(batches, registry, settings, thresholds):
    counts: dict[str, int] = {}
    with mock.patch.object(Metrics, "counter", lambda namespace, name: _Counter(counts, name)):
        by_shard = BatchByShard(5_000, settings.shards)
        minutes = SensorMinutes(lambda: registry, thresholds, settings, clock=lambda: NOW)
    by_shard.setup()
    states: dict[int, _State] = {}
    out = []
    for batch in batches:  # one bundle each, batched per shard as the job does
        by_shard.start_bundle()
        for o in batch:
            by_shard.process(o, timestamp=Timestamp(0))
        for wv in by_shard.finish_bundle():
            shard, _ = wv.value
            out.extend(minutes.process(wv.value, states.setdefault(shard, _State())))
    return counts, out


def rows_of(rows, dataset, sid, start=T):
    return sorted((r for r in rows[dataset] if r["sensor_id"] == sid and r["window_start"] == dt(start)),
                  key=lambda r: r["version"])


def quality(rows, sid="1", start=T):
    return rows_of(rows, SENSOR_QUALITY_DATASET, sid, start)


def curated(rows, sid="1", start=T):
    return rows_of(rows, READINGS_1MIN_DATASET, sid, start)


def strip(row):
    return {k: v for k, v in row.items() if k != "emitted_at"}


def q(received, *, expected=60.0, in_range=None, out=0, late=0, dup=0, status, version=0, sid="1", start=T):
    in_range = received - out if in_range is None else in_range
    return {"sensor_id": sid, "window_start": dt(start), "window_end": dt(start + 60_000),
            "expected": expected, "received": received,
            "completeness": None if expected is None else min(1.0, received / expected),
            "in_range": in_range, "out_of_range": out,
            "range_validity": None if expected is None or received == 0 else in_range / received,
            "late": late, "duplicates": dup, "status": status,
            "thresholds_version": THRESHOLDS.version, "version": version}


def c(values, first_sec, last_sec, *, version=0, sid="1", start=T, unit="C"):
    return {"sensor_id": sid, "window_start": dt(start), "window_end": dt(start + 60_000),
            "count": len(values), "mean": pytest.approx(statistics.fmean(values)),
            "min": min(values), "max": max(values),
            "stddev": pytest.approx(statistics.stdev(values)) if len(values) > 1 else None,
            "first_event_time": dt(start + first_sec * 1000), "last_event_time": dt(start + last_sec * 1000),
            "unit": unit, "version": version}


CLOSE = [obs("1", 70, 20.0, 1000)]  # event time 10:01:10: the watermark passes 10:01:00


def test_a_perfect_minute():
    data = minute()
    rows, counters = run([data, CLOSE], registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [q(60, status="ok")]
    assert [strip(r) for r in curated(rows)] == [c([o.value for o in data], 0, 59)]
    assert quality(rows)[0]["emitted_at"] == dt(NOW * 1000)
    # the minute of the closing reading is still open: nothing emitted for it yet
    assert rows_of(rows, SENSOR_QUALITY_DATASET, "1", T + 60_000) == []
    assert counters["windows_closed"] == 1


def test_duplicates_do_not_raise_completeness_or_move_the_mean():
    data = minute()
    resent = [data[i] for i in range(0, 60, 10)]  # QoS 1 redeliveries: same seq, same values
    rows, counters = run([data[:30], resent, data[30:], CLOSE], registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [q(60, dup=6, status="ok")]
    assert [strip(r) for r in curated(rows)] == [c([o.value for o in data], 0, 59)]
    assert counters["duplicates"] == 6


def test_duplicates_without_seq_are_found_by_event_time():
    data = [o._replace(seq=None) for o in minute()]
    rows, _ = run([data, data[:3], CLOSE], registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [q(60, dup=3, status="ok")]


@pytest.mark.parametrize("received, status", [(57, "ok"), (56, "degraded"), (24, "bad")])
def test_completeness_thresholds(received, status):
    data = minute()[:received]
    rows, _ = run([data, CLOSE], registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [q(received, status=status)]
    assert quality(rows)[0]["completeness"] == pytest.approx({57: 0.95, 56: 56 / 60, 24: 0.4}[received])


def test_out_of_range_readings_are_scored_and_kept_out_of_the_mean():
    data = minute(value=lambda i: 99.0 if i % 5 == 0 else 20.0 + i % 7)  # 12 of 60 outside 0..45
    rows, _ = run([data, CLOSE], registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [q(60, out=12, status="bad")]
    assert quality(rows)[0]["range_validity"] == pytest.approx(0.8)
    inside = [o for o in data if o.value != 99.0]
    assert [strip(r) for r in curated(rows)] == [c([o.value for o in inside], 1, 59)]


def test_a_silent_registered_sensor_gets_missing_rows():
    talker = minute("1", range(0, 131))  # two minutes and ten seconds of sensor 1
    rows, counters = run([talker[i:i + 10] for i in range(0, len(talker), 10)],
                         registry={"1": REGISTRY["1"], "2": REGISTRY["2"]})
    for start in (T, T + 60_000):
        assert [strip(r) for r in quality(rows, "2", start)] == [q(0, status="missing", sid="2", start=start)]
        assert curated(rows, "2", start) == []
    assert [r["status"] for r in quality(rows, "1", T + 60_000)] == ["ok"]
    assert counters["missing_windows"] == 2


def test_expected_count_follows_the_registry_interval():
    data = [obs("slow", s, 50.0, s // 5) for s in range(0, 60, 5)] + [obs("slow", 70, 50.0, 14)]
    rows, _ = run([data], registry={"slow": REGISTRY["slow"]})
    assert [strip(r) for r in quality(rows, "slow")] == [q(12, expected=12.0, status="ok", sid="slow")]


def test_late_reading_within_lateness_updates_its_window():
    data = minute()
    gone = data[40:44]  # four readings held up somewhere; one of them turns up late
    on_time = [o for o in data if o not in gone]
    late = data[42]._replace(arrival_ms=T + 80_000)
    rows, counters = run([on_time, CLOSE, [late]], registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [
        q(56, status="degraded"),
        q(57, late=1, status="ok", version=1)]
    assert [strip(r) for r in curated(rows)] == [
        c([o.value for o in on_time], 0, 59),
        c([o.value for o in on_time + [late]], 0, 59, version=1)]
    assert counters["late_readings"] == 1


def test_reading_beyond_lateness_is_dropped_from_the_window_and_counted():
    data = minute()
    gone = data[40:44]
    later = minute("1", range(60, 430))  # the watermark passes 10:01:00 + 5 min lateness
    rows, counters = run([[o for o in data if o not in gone], later, [data[42]]],
                         registry={"1": REGISTRY["1"]})
    assert [strip(r) for r in quality(rows)] == [q(56, status="degraded")]
    assert counters["dropped_beyond_lateness"] == 1
    assert counters.get("late_readings", 0) == 0


def test_unregistered_sensor_rows():
    data = minute("ghost")
    rows, _ = run([data, [obs("ghost", 70, 20.0, 70)]], registry={})
    assert [strip(r) for r in quality(rows, "ghost")] == [
        q(60, expected=None, status="unregistered", sid="ghost")]
    assert [strip(r) for r in curated(rows, "ghost")] == [
        c([o.value for o in data], 0, 59, sid="ghost")]


def test_an_unregistered_sensor_silent_past_the_horizon_is_forgotten_after_its_windows_closed():
    """Its state would otherwise stay forever (a fleet's typos and decommissioned sensors)."""
    horizon_min = WindowSettings().horizon_ms // 60_000
    live = minute("1", range(0, 60 * (horizon_min + 3)))
    rows, counters = run([minute("ghost", range(0, 30)), live], registry={"1": REGISTRY["1"]})
    assert counters["unregistered_sensors_forgotten"] == 1
    # forgotten only after its minute had its final rows
    assert [r["received"] for r in quality(rows, "ghost")] == [30]
    # by its own partition's clock: a backlog read partition after partition must not lose it
    other = [o._replace(partition=1) for o in minute("ghost", range(0, 30))]
    _, counters = run([other, live], registry={"1": REGISTRY["1"]})
    assert counters.get("unregistered_sensors_forgotten", 0) == 0


def test_thresholds_come_from_configuration():
    strict = Thresholds(ok_completeness=1.0, ok_validity=1.0, bad_completeness=0.96, bad_validity=0.9)
    rows, _ = run([minute()[:57], CLOSE], registry={"1": REGISTRY["1"]}, thresholds=strict)
    assert quality(rows)[0]["status"] == "bad"
    assert quality(rows)[0]["thresholds_version"] == "ok:c>=1,v>=1;bad:c<0.96|v<0.9"


def test_backfill_lands_in_the_windows_of_two_days_ago():
    """Readings stamped two days ago, published now (while sensor 1 is live), are windowed by
    their own event time: sensor 2's clock is its own, the live sensor does not make them late."""
    old = minute("2", range(0, 75), base=T - 2 * DAY)
    old = [o._replace(arrival_ms=T + 500 + i * 10) for i, o in enumerate(old)]  # all arrive now
    live = minute("1", range(0, 130))
    rows, counters = run([live[:30], old, live[30:]], registry={"1": REGISTRY["1"], "2": REGISTRY["2"]})
    assert [strip(r) for r in quality(rows, "2", T - 2 * DAY)] == [
        q(60, status="ok", sid="2", start=T - 2 * DAY)]
    assert curated(rows, "2", T - 2 * DAY)[0]["count"] == 60
    assert counters.get("dropped_beyond_lateness", 0) == 0 and counters.get("late_readings", 0) == 0
    # Once sensor 2 went idle its clock moved to the present: the 2-day gap is counted, and only
    # the newest minutes of it are listed as missing.
    listed = [r for r in rows[SENSOR_QUALITY_DATASET] if r["sensor_id"] == "2" and r["status"] == "missing"]
    assert min(r["window_start"] for r in listed) >= dt(T - 60 * 60_000)
    # Every empty minute from 2 days ago 10:02 up to today 10:01 (the last heartbeat, arrival
    # 10:02:05.5, moves the clock to 10:01:55.5) is either listed or counted, none twice.
    assert len(listed) == len({r["window_start"] for r in listed}) == counters["missing_windows"]
    empty_minutes = (T + 60_000 - (T - 2 * DAY + 120_000)) // 60_000
    assert counters["missing_windows"] + counters["missing_windows_not_listed"] == empty_minutes


def test_every_window_row_appears_once_per_version():
    rows, _ = run([minute(), minute("1", range(60, 200))], registry={"1": REGISTRY["1"]})
    keys = [(r["sensor_id"], r["window_start"], r["version"]) for r in rows[SENSOR_QUALITY_DATASET]]
    assert len(keys) == len(set(keys)) == 3  # 10:00, 10:01, 10:02 closed once each
    assert sorted(k[1] for k in keys) == [dt(T), dt(T + 60_000), dt(T + 120_000)]
    assert dt(T) - timedelta(0) == keys[0][1]


def test_catching_up_a_backlog_partition_by_partition_makes_nothing_late():
    """KafkaIO reads a backlog partition after partition: sensor 2's readings (partition 1) arrive
    after sensor 1's three minutes (partition 0). Sensor 2 is idle only by its own partition's
    clock, so none of its readings is late and every minute is complete."""
    p0 = [o._replace(partition=0) for o in minute("1", range(0, 200))]
    p1 = [o._replace(partition=1) for o in minute("2", range(0, 200))]
    rows, counters = run([p0[:100], p0[100:], p1[:100], p1[100:]], registry={"1": REGISTRY["1"], "2": REGISTRY["2"]})
    current = {}
    for r in sorted(rows[SENSOR_QUALITY_DATASET], key=lambda r: r["version"]):
        current[(r["sensor_id"], r["window_start"])] = r
    assert sorted((sid, start, r["status"], r["received"]) for (sid, start), r in current.items()) == [
        (sid, dt(T + m * 60_000), "ok", 60) for sid in ("1", "2") for m in range(3)]
    # Sensor 2 was registered but not seen while partition 0 was read: its minutes were reported
    # missing first, then replaced (a higher version) once its own readings came.
    assert {r["version"] for (sid, _), r in current.items() if sid == "2"} == {1}
    assert counters.get("late_readings", 0) == counters.get("dropped_beyond_lateness", 0) == 0


def test_parallel_readers_never_move_a_sensor_by_another_partitions_clock():
    """With parallelism 2, one reader sees partition 0 only and tells every registered sensor it
    has not seen its (fast) clock. Sensor 2, read by the other reader from partition 1, must not be
    moved by it: none of its readings may turn late."""
    counts: dict[str, int] = {}
    with mock.patch.object(Metrics, "counter", lambda namespace, name: _Counter(counts, name)):
        reader0 = BatchByShard(5_000, WindowSettings().shards)
        reader1 = BatchByShard(5_000, WindowSettings().shards)
        minutes = SensorMinutes(lambda: {"1": REGISTRY["1"], "2": REGISTRY["2"]}, THRESHOLDS, clock=lambda: NOW)
    reader0.setup()
    reader1.setup()
    states: dict[int, _State] = {}
    out = []
    p0 = [o._replace(partition=0) for o in minute("1", range(0, 200))]
    # partition 1 lags 100 s of arrival time behind partition 0 (a slower reader, a backlog)
    p1 = [o._replace(partition=1, arrival_ms=o.arrival_ms - 100_000) for o in minute("2", range(0, 200))]
    for a, b in zip(p0, p1):
        for reader, o in ((reader0, a), (reader1, b)):  # a bundle per reading
            reader.start_bundle()
            reader.process(o, timestamp=Timestamp(0))
            for wv in reader.finish_bundle():
                shard, events = wv.value
                out.extend(minutes.process((shard, events), states.setdefault(shard, _State())))
    assert counts.get("late_readings", 0) == counts.get("dropped_beyond_lateness", 0) == 0
    current = {}
    for r in sorted((r for r in out if r.dataset == SENSOR_QUALITY_DATASET), key=lambda r: r.row["version"]):
        current[(r.sensor_id, r.window_start_ms)] = r.row
    assert sorted((sid, start, row["received"]) for (sid, start), row in current.items()) == [
        (sid, T + m * 60_000, 60) for sid in ("1", "2") for m in range(3)]


def test_a_window_remembers_its_readings_compactly_and_a_restored_set_still_counts():
    """A window's readings are seq ranges and an array of event times (not a set of keys); a
    window restored from an older job's savepoint (a set) keeps telling duplicates apart."""
    import pickle

    from pipelines.windows import Observation, _add, _new_acc

    def obs(seq, t):
        return Observation("s1", t, 20.0, seq, t + 50, "C")

    acc = _new_acc("C")
    assert [_add(acc, obs(q, T + q * 1000), None) for q in [*range(60), 5, 59]] == [True] * 60 + [False, False]
    assert acc["seqs"] == [[0, 59]] and (acc["received"], acc["dup"]) == (60, 2)
    assert [_add(acc, obs(None, T + ms), None) for ms in (7, 3, 7)] == [True, True, False]
    assert list(acc["times"]) == [T + 3, T + 7]
    assert pickle.loads(pickle.dumps(acc)) == acc

    old = {**_new_acc("C"), "received": 3}
    del old["seqs"], old["times"]
    old["keys"] = {1, 2, ("t", T)}
    assert [_add(old, o, None) for o in (obs(2, T), obs(None, T), obs(3, T), obs(None, T + 1))] \
        == [False, False, True, True]
    assert "keys" not in old and old["seqs"] == [[1, 3]] and list(old["times"]) == [T, T + 1]
    assert (old["received"], old["dup"]) == (5, 2)


def test_closed_windows_are_kept_packed_and_an_older_jobs_unpacked_ones_still_take_late_readings():
    """A closed window is one bytes object in state until a late reading touches it (the shard's
    state is decoded whole for every bundle); state from a job before that holds closed windows as
    dicts, and a late reading updates those to the same rows."""
    import pickle

    from pipelines.windows import _unpack

    registry = {"1": REGISTRY["1"]}
    data = minute()
    on_time = [o for o in data if o not in data[40:44]]
    late = data[42]._replace(arrival_ms=T + 80_000)

    def late_rows(restore):
        minutes = SensorMinutes(lambda: registry, THRESHOLDS, WindowSettings(), clock=lambda: NOW)
        state = _State()
        closing = list(minutes.process((0, on_time + CLOSE), state))
        assert [(r.dataset, r.window_start_ms, r.row["version"]) for r in closing] == [
            (READINGS_1MIN_DATASET, T, 0), (SENSOR_QUALITY_DATASET, T, 0)]
        opened = state.value["1"]["open"]
        assert isinstance(opened[T], bytes) and isinstance(opened[T + 60_000], dict)  # closed / open
        state.value = pickle.loads(pickle.dumps(restore(state.value)))  # to Flink and back
        rows = list(minutes.process((0, [late]), state))
        assert isinstance(state.value["1"]["open"][T], bytes)
        return [(r.dataset, strip(r.row)) for r in rows]

    def closed_as(form):
        return lambda value: {sid: {**st, "open": {s: form(_unpack(a)) for s, a in st["open"].items()}}
                              for sid, st in value.items()}

    packed = late_rows(lambda value: value)
    older = late_rows(closed_as(lambda acc: acc))  # dicts (before ff5b668)
    pickled_dicts = late_rows(closed_as(lambda acc: pickle.dumps(acc)))  # bytes of a dict (ff5b668)
    assert packed == older == pickled_dicts == [
        (READINGS_1MIN_DATASET, c([o.value for o in on_time + [late]], 0, 59, version=1)),
        (SENSOR_QUALITY_DATASET, q(57, late=1, status="ok", version=1))]


def test_a_packed_window_comes_back_equal_and_is_smaller_than_its_dict():
    """Packing keeps every tally (seq ranges, event times of readings without seq, the moments)."""
    import pickle

    from pipelines.windows import _add, _new_acc, _pack, _unpack

    acc = _new_acc("C")
    for o in minute()[:30] + [o._replace(seq=None, event_time_ms=o.event_time_ms + 1) for o in minute()[30:33]]:
        _add(acc, o, REGISTRY["1"])
    assert acc["seqs"] and len(acc["times"]) == 3
    back = _unpack(_pack(acc))
    assert back == acc and list(back) == list(acc) and back["times"].typecode == "q"
    assert len(_pack(acc)) < len(pickle.dumps(acc, pickle.HIGHEST_PROTOCOL))


def test_batch_by_shard_gives_the_same_batches_for_lists_as_for_single_readings():
    """The raw stage hands its readings over as one list per Kafka batch; the shards' batches (and
    the heartbeats among them, after the reading that moved a partition's clock) must be exactly
    what the same readings give one at a time."""
    readings = minute("1", range(0, 30)) + minute("2", range(0, 30)) + minute("1", range(30, 60))
    readings = [o._replace(partition=i % 2, arrival_ms=o.arrival_ms + (i % 2) * 3_000) for i, o in enumerate(readings)]

    def batches(elements):
        counts: dict[str, int] = {}
        with mock.patch.object(Metrics, "counter", lambda namespace, name: _Counter(counts, name)):
            by_shard = BatchByShard(5_000, 8)
        by_shard.setup()
        by_shard.start_bundle()
        for e in elements:
            by_shard.process(e, timestamp=Timestamp(0))
        return {wv.value[0]: list(wv.value[1]) for wv in by_shard.finish_bundle()}, counts

    one_by_one, counts = batches(readings)
    as_lists, counts_lists = batches([readings[:25], readings[25:70], readings[70:]])
    assert as_lists == one_by_one and counts_lists == counts
    beats = [e for e in one_by_one[0] if isinstance(e, Heartbeat)]
    assert len(beats) >= 2 and counts["heartbeats"] == 8 * len(beats)
    assert all(len([e for e in b if isinstance(e, Heartbeat)]) == len(beats) for b in one_by_one.values())
    shard_of_1 = shard_of("1", 8)
    ones = [e for e in one_by_one[shard_of_1] if not isinstance(e, Heartbeat) and e.sensor_id == "1"]
    assert [o.seq for o in ones] == list(range(60))  # arrival order kept within a shard

"""De-duplication: first copy passes, later copies are counted and written nowhere."""

from __future__ import annotations

import bisect
import datetime as dt

import pytest

from pipelines.dedupe import SeenReadings, add_seq, prune_seqs
from pipelines.registry_source import store_registry_version
from pipelines.sinks import LakeRecord

T0 = dt.datetime(2026, 11, 28, 17, 0, tzinfo=dt.timezone.utc)


def _rec(offset, sensor, seq, second=0, dataset="raw/readings"):
    row = {"sensor_id": sensor, "seq": seq, "event_time": T0 + dt.timedelta(seconds=second)}
    return LakeRecord(0, offset, dataset, row)


def test_seq_ranges_merge_and_detect_repeats():
    ranges: list[list[int]] = []
    assert [add_seq(ranges, s) for s in (5, 7, 6, 6, 1, 2, 9)] == [True, True, True, False, True, True, True]
    assert ranges == [[1, 2], [5, 7], [9, 9]]
    prune_seqs(ranges, horizon=3)
    assert ranges == [[6, 7], [9, 9]]


@pytest.mark.parametrize("seed", range(5))
def test_seq_ranges_agree_with_a_set_of_the_seqs(seed):
    """In order (the common case, decided at the last range), backwards, repeated and random."""
    import random

    rnd = random.Random(seed)
    seqs = [*range(50), *range(49, 30, -1), *(rnd.randrange(120) for _ in range(300)), 1000, 1002, 1001]
    ranges: list[list[int]] = []
    seen: set[int] = set()
    for s in seqs:
        assert add_seq(ranges, s) == (s not in seen), s
        seen.add(s)
        merged: list[list[int]] = []
        for v in sorted(seen):
            if merged and merged[-1][1] == v - 1:
                merged[-1][1] = v
            else:
                merged.append([v, v])
        assert ranges == merged, s


@pytest.mark.parametrize("with_seq", [True, False])
def test_only_the_first_copy_of_a_reading_is_fresh(with_seq):
    recs = [
        _rec(0, "1", 0 if with_seq else None, 0), _rec(1, "1", 1 if with_seq else None, 1),
        _rec(2, "2", 0 if with_seq else None, 0),
        _rec(3, "1", 0 if with_seq else None, 0),  # redelivered copy of offset 0
        _rec(4, "1", 1 if with_seq else None, 1),  # and of offset 1
        _rec(5, "2", 1 if with_seq else None, 1),
    ]
    batch = SeenReadings().open()
    assert [batch.fresh(r.row) for r in recs] == [True, True, True, False, False, True]
    assert set(batch.sensors) == {"1", "2"}


def test_event_times_are_kept_compact_and_older_state_still_works():
    """Without seq the recent tier holds a sensor's event times as an array that pickles as one
    buffer; a restored state of an older job (one dict, times as a list or a whole hour of them) is
    converted on first use, its older times moving to the archive."""
    import pickle
    from array import array

    seen = SeenReadings(time_horizon_ms=10_000, recent_ms=2_000)
    old = {"old": {"seqs": [], "times": [int(T0.timestamp() * 1000)]}}
    batch = seen.open(old)
    assert not batch.fresh(_rec(0, "old", None, 0).row)
    seconds = [*range(20), *range(10, 20)]  # then copies of the last ten seconds
    assert [batch.fresh(_rec(0, s, None, sec).row) for sec in seconds for s in ("old", "new")] \
        == [i < 20 and (sec, s) != (0, "old") for i, sec in enumerate(seconds) for s in ("old", "new")]
    (sensors, pieces), added, rewrite = batch.commit()
    for state in sensors.values():
        assert isinstance(state["times"], array)
        assert list(state["times"]) == [int((T0.timestamp() + s) * 1000) for s in (16, 17, 18, 19)]
    assert pieces == len(added) == 1 and not rewrite
    # the archive gets 0..15 s as they aged out, each within the horizon then; those now past it
    # (0..8 s) leave when the archive is rewritten
    assert {s: [t // 1000 - int(T0.timestamp()) for t in ts] for s, ts in added[0].items()} == {
        "old": list(range(16)), "new": list(range(16))}
    assert pickle.loads(pickle.dumps(sensors)) == sensors


def _one_set_per_sensor(horizon_ms):
    """The rule as one sorted list per sensor (the job's state before the tiers)."""
    state = {}

    def fresh(sensor, t):
        times = state.setdefault(sensor, [])
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return False
        times.insert(i, t)
        del times[:bisect.bisect_left(times, times[-1] - horizon_ms)]
        return True
    return fresh


def test_two_tiers_judge_every_reading_as_one_set_would_across_batches_restores_and_rewrites():
    """Three sensors for 47 s of event time, with redeliveries, readings a little and a
    lot late, replays of older ones and readings past the horizon, in batches whose state goes
    through pickle between them as in Flink: every answer is the one-set rule's, the archive is
    read only by batches holding a reading older than the recent tier, and it is rewritten when it
    reaches max_pieces, so it never holds more, and keeps every time within the horizon."""
    import pickle
    import random

    rng = random.Random(7)
    seen = SeenReadings(time_horizon_ms=12_000, recent_ms=1_000, max_pieces=6)
    reference = _one_set_per_sensor(12_000)
    base = int(T0.timestamp() * 1000)
    recent, bag = None, []
    answers, expected, reads, old_batches, rewrites = [], [], 0, 0, 0
    clock, sent = 0, []
    for _ in range(160):
        batch = seen.open(pickle.loads(pickle.dumps(recent)), lambda: [pickle.loads(p) for p in bag])
        has_old = False
        for _ in range(rng.randint(1, 8)):
            kind = rng.random()
            if kind < 0.1 and sent:  # a redelivery
                sensor, t = rng.choice(sent[-20:])
            elif kind < 0.2 and sent:  # a replay of anything sent, past the horizon too
                sensor, t = rng.choice(sent)
            else:  # a new reading, now or late
                clock += rng.choice((100, 100, 100, 37))
                lateness = rng.choice([0] * 6 + [500, 1_500, 3_000, 9_000, 13_000])
                sensor, t = rng.choice("abc"), base + max(0, clock - lateness)
                sent.append((sensor, t))
            state = batch.sensors.get(sensor)
            if state and state["times"] and t < state["times"][0] \
                    and t >= state["times"][-1] - 12_000:
                has_old = True
            row = {"sensor_id": sensor, "seq": None, "event_time": dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)}
            answers.append(batch.fresh(row))
            expected.append(reference(sensor, t))
        recent, pieces, rewrite = batch.commit()
        if rewrite:
            bag.clear()
            rewrites += 1
        bag.extend(pickle.dumps(p) for p in pieces)
        assert len(bag) <= 6 and recent[1] == len(bag)
        reads += batch.archive_reads
        old_batches += has_old
        assert batch.archive_reads <= 1 and (batch.archive_reads == 0 or has_old or rewrite)
    assert answers == expected
    assert answers.count(False) > 20 and reads >= old_batches > 5 and rewrites >= 2
    # a rewrite now, then every reading sent so far again: the rewrite kept all within the horizon
    sensors, pieces = pickle.loads(pickle.dumps(recent))
    batch = seen.open((sensors, seen.max_pieces + 1), lambda: [pickle.loads(p) for p in bag])
    recent, pieces, rewrite = batch.commit()
    assert rewrite and len(pieces) == 1
    bag = [pickle.dumps(pieces[0])]
    batch = seen.open(recent, lambda: [pickle.loads(p) for p in bag])
    replayed = [batch.fresh({"sensor_id": s, "seq": None, "event_time": dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)})
                for s, t in sent]
    assert replayed == [reference(s, t) for s, t in sent] and replayed.count(False) > 100
    for sensor, state in recent[0].items():  # the recent tier holds one to two steps
        assert state["times"][-1] // 1000 - state["times"][0] // 1000 <= 1


def test_recent_tier_must_be_shorter_than_half_the_horizon():
    with pytest.raises(ValueError, match="recent_ms"):
        SeenReadings(time_horizon_ms=10_000, recent_ms=5_000)


def test_registry_versions_are_stored_once_per_content(tmp_path):
    lake = str(tmp_path)
    first = store_registry_version(lake, b'{"1": {}}', now=T0)
    assert first.endswith("raw/sensors/version=2026-11-28T17-00-00Z/sensors.json")
    assert store_registry_version(lake, b'{"1": {}}', now=T0 + dt.timedelta(hours=1)) is None
    second = store_registry_version(lake, b'{"2": {}}', now=T0 + dt.timedelta(hours=2))
    assert second and open(second, "rb").read() == b'{"2": {}}'


def test_the_challenges_messages_are_never_merged_but_one_sensors_same_millisecond_is():
    """Without seq the key is (sensor id, event time in ms). Two minutes of the challenge's
    messages (5 sensors at 1 Hz, each publishing a few ms later every second since it sleeps after
    publishing; Sensor 5's dt without a fraction) keep every reading; a redelivery is dropped; and
    a second reading of one sensor within the same millisecond (not expected at 1 Hz) is taken for
    the same reading: the first to arrive is kept, the other counted as a duplicate."""
    import json
    from unittest import mock

    from apache_beam.metrics import Metrics

    from pipelines.kafka_io import KafkaRecord
    from pipelines.parsing import ParseReadings

    class Inc:
        def __init__(self, counts, name):
            self.counts, self.name = counts, name

        def inc(self, n=1):
            self.counts[self.name] = self.counts.get(self.name, 0) + n

    payloads = []
    for sec in range(120):
        for i in range(1, 6):
            at = T0 + dt.timedelta(seconds=sec, microseconds=(sec * 1_731 * i) % 1_000_000)
            if i == 5:
                at = at.replace(microsecond=0)
            payloads.append(json.dumps({"id": f"Sensor {i}", "dt": at.replace(tzinfo=None).isoformat(),
                                        "value": (sec * i) % 46}).encode())
    redelivered = payloads[7]
    first = json.loads(payloads[11])  # Sensor 2 at 17:00:02.xxxxxx
    same_ms = dict(first, dt=first["dt"][:-3] + ("999" if first["dt"][-3:] != "999" else "000"), value=44)
    extra = [redelivered, json.dumps(same_ms).encode()]
    counts: dict[str, int] = {}
    with mock.patch.object(Metrics, "counter", lambda namespace, name: Inc(counts, name)):
        parse = ParseReadings({}, clock=lambda: (T0 + dt.timedelta(hours=1)).timestamp())
    records = []
    for offset, payload in enumerate(payloads + extra):
        (lake_record, _reading) = parse.process(KafkaRecord(0, offset, 0, None, payload, {"mqtt_topic": b"sensors"}))
        assert lake_record.dataset == "raw/readings", lake_record.row
        records.append(lake_record)
    parse.finish_bundle()  # counts reach the job's counters once per bundle
    batch = SeenReadings().open()
    kept = [r.kafka_offset for r in records if batch.fresh(r.row)]
    assert kept == list(range(len(payloads)))  # every challenge message, none merged
    # the redelivery and the same-millisecond reading are the only ones not fresh
    assert len(records) - len(kept) == 2 and counts["parsed"] == len(records)

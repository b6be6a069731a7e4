"""De-duplication: first copy passes, later copies are counted and written nowhere."""

from __future__ import annotations

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


@pytest.mark.parametrize("with_seq", [True, False])
def test_only_the_first_copy_of_a_reading_is_fresh(with_seq):
    recs = [
        _rec(0, "1", 0 if with_seq else None, 0), _rec(1, "1", 1 if with_seq else None, 1),
        _rec(2, "2", 0 if with_seq else None, 0),
        _rec(3, "1", 0 if with_seq else None, 0),  # redelivered copy of offset 0
        _rec(4, "1", 1 if with_seq else None, 1),  # and of offset 1
        _rec(5, "2", 1 if with_seq else None, 1),
    ]
    seen, by_sensor = SeenReadings(), {}
    assert [seen.fresh(by_sensor, r.row) for r in recs] == [True, True, True, False, False, True]
    assert set(by_sensor) == {"1", "2"}


def test_event_times_are_kept_compact_and_older_state_still_works():
    """Without seq the state is the sensor's event times: an array that pickles as one buffer; a
    restored state holding them as a list (an older job) is converted on first use."""
    import pickle
    from array import array

    seen = SeenReadings(time_horizon_ms=10_000)
    by_sensor = {"old": {"seqs": [], "times": [int(T0.timestamp() * 1000)]}}
    assert not seen.fresh(by_sensor, _rec(0, "old", None, 0).row)
    seconds = [*range(20), *range(10, 20)]  # then copies of the last ten seconds
    assert [seen.fresh(by_sensor, _rec(0, s, None, sec).row) for sec in seconds for s in ("old", "new")] \
        == [i < 20 and (sec, s) != (0, "old") for i, sec in enumerate(seconds) for s in ("old", "new")]
    for state in by_sensor.values():
        assert isinstance(state["times"], array)
        assert len(state["times"]) == 11  # 9..19 s: the horizon of 10 s behind the newest, both ends kept
    assert pickle.loads(pickle.dumps(by_sensor)) == by_sensor


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
    seen, by_sensor = SeenReadings(), {}
    kept = [r.kafka_offset for r in records if seen.fresh(by_sensor, r.row)]
    assert kept == list(range(len(payloads)))  # every challenge message, none merged
    # the redelivery and the same-millisecond reading are the only ones not fresh
    assert len(records) - len(kept) == 2 and counts["parsed"] == len(records)

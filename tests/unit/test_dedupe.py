"""De-duplication: first copy passes, later copies are counted and written nowhere."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.dedupe import DedupeReadings, add_seq, prune_seqs
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
def test_duplicates_become_unwritten_records(with_seq):
    recs = [
        _rec(0, "1", 0 if with_seq else None, 0), _rec(1, "1", 1 if with_seq else None, 1),
        _rec(2, "2", 0 if with_seq else None, 0),
        _rec(3, "1", 0 if with_seq else None, 0),  # redelivered copy of offset 0
        _rec(4, "1", 1 if with_seq else None, 1),  # and of offset 1
        LakeRecord(0, 5, "rejected/readings", {"payload": b"x"}),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(recs) | DedupeReadings("raw/readings")
        assert_that(out | beam.Map(lambda r: (r.kafka_offset, r.dataset)),
                    equal_to([(0, "raw/readings"), (1, "raw/readings"), (2, "raw/readings"),
                              (3, None), (4, None), (5, "rejected/readings")]))


def test_registry_versions_are_stored_once_per_content(tmp_path):
    lake = str(tmp_path)
    first = store_registry_version(lake, b'{"1": {}}', now=T0)
    assert first.endswith("raw/sensors/version=2026-11-28T17-00-00Z/sensors.json")
    assert store_registry_version(lake, b'{"1": {}}', now=T0 + dt.timedelta(hours=1)) is None
    second = store_registry_version(lake, b'{"2": {}}', now=T0 + dt.timedelta(hours=2))
    assert second and open(second, "rb").read() == b'{"2": {}}'

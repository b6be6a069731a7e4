"""GroupPerBundle: one (key, Batch) per key per bundle, values in arrival order, one pickle each."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines.batching import Batch, BatchCoder, GroupPerBundle, group_per_bundle, shard_of
from pipelines.windows import Heartbeat, Observation


def _bundle(dofn, elements):
    dofn.start_bundle()
    for i, e in enumerate(elements):
        dofn.process(e, timestamp=Timestamp(100 - i))
    return [(wv.value, wv.timestamp) for wv in dofn.finish_bundle()]


def test_values_are_grouped_per_key_in_arrival_order_with_the_earliest_timestamp():
    out = _bundle(GroupPerBundle(), [("a", 1), ("b", 2), ("a", 3), ("a", 2)])
    assert out == [(("a", [1, 3, 2]), Timestamp(97)), (("b", [2]), Timestamp(97))]
    assert all(isinstance(batch, Batch) for (_, batch), _ in out)
    assert _bundle(GroupPerBundle(), []) == []


def test_sensors_spread_over_shards_stably():
    ids = [str(i) for i in range(1000)]
    shards = [shard_of(i, 64) for i in ids]
    assert shards == [shard_of(i, 64) for i in ids]  # same key on every worker and run
    assert set(shards) == set(range(64)) and max(map(shards.count, set(shards))) < 40


def test_batch_coder_round_trips_named_tuples():
    batch = Batch([Observation("1", 0, 1.5, None, 3, "C"), Heartbeat(((0, 1), (1, 2)))])
    coder = BatchCoder()
    back = coder.decode(coder.encode(batch))
    assert back == batch and isinstance(back, Batch) and type(back[0]) is Observation


def test_batch_coder_keeps_types_and_order_of_uniform_mixed_and_plain_batches():
    from datetime import datetime, timezone

    from pipelines.sinks import LakeRecord

    coder = BatchCoder()
    when = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc)
    uniform = Batch([LakeRecord(p, o, "raw", {"sensor_id": "Sensor 1", "event_time": when, "seq": o})
                     for p in range(2) for o in range(3)])
    mixed = Batch([Heartbeat(((0, 1),)), Observation("1", 0, 1.5, None, 3, "C"), Heartbeat(())])
    plain = Batch([("k", 1), {"a": 1}, None])
    for batch in (uniform, mixed, plain, Batch()):
        back = coder.decode(coder.encode(batch))
        assert isinstance(back, Batch) and back == batch
        assert list(map(type, back)) == list(map(type, batch))
    assert back == [] and coder.decode(coder.encode(uniform))[4].row["event_time"] == when
    # What the previous coder (and the sinks' PickleCoder) wrote into savepoints still reads.
    import pickle

    assert coder.decode(pickle.dumps(list(uniform))) == uniform


def test_in_a_pipeline_every_value_arrives_once_in_its_keys_batches():
    values = [(k, i) for i in range(50) for k in "abc"]
    with TestPipeline() as p:
        out = (p | beam.Create(values) | group_per_bundle()
               | beam.FlatMap(lambda kv: [(kv[0], v) for v in kv[1]]))
        assert_that(out, equal_to(values))

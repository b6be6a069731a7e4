"""One element per key per bundle in front of every keyed stage.

On the portable Flink runner each element that crosses from Python to Flink and back costs tens of
microseconds of harness work (gRPC framing, decode, encode, and a keyed-state read and commit in the
stateful stage), whatever it holds; the measured share was about 80 % of the job's Python time when
every reading crossed alone (bench/PIPELINE.md). ``GroupPerBundle`` buffers ``(key, value)`` pairs
for the length of a bundle and hands them on as ``(key, Batch)``; a ``Batch`` crosses as one
pickle, and the stateful DoFn behind it reads and writes its state once per batch.

Order within a key is kept (a batch is in arrival order, and one key's batches travel one path), so
a stateful DoFn sees exactly the sequence it would have seen element by element.
"""

from __future__ import annotations

import functools
import pickle
import zlib
from typing import Any, Tuple

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp


def shard_of(sensor_id: str, shards: int) -> int:
    """The key a sensor's state lives under: sensors are spread over ``shards`` keys, because the
    harness reads and commits state once per key per bundle (one gRPC round trip each), so a key
    per sensor makes a fleet of thousands pay thousands of round trips every bundle."""
    return zlib.crc32(sensor_id.encode()) % shards


class Batch(list):
    """The values of one key from one bundle, in arrival order."""


def _is_named_tuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


class BatchCoder(coders.Coder):
    """A whole batch as one pickle: repeated classes and strings are written once per batch.

    NamedTuples (the job's records) travel as plain tuples plus their class: pickling a NamedTuple
    calls its Python-level ``__getnewargs__`` once per record, which made pickling the largest
    cost of a batch (bench/PIPELINE.md); plain tuples are pickled, and rebuilt, in C.
    """

    def encode(self, value):
        kinds = list(map(type, value))
        classes = list(dict.fromkeys(kinds))
        if 0 < len(classes) < 256 and all(map(_is_named_tuple, classes)):
            tuples = list(map(tuple, value))
            if len(classes) == 1:
                return pickle.dumps((classes[0], tuples), protocol=pickle.HIGHEST_PROTOCOL)
            index = {c: i for i, c in enumerate(classes)}
            which = bytes(map(index.__getitem__, kinds))
            return pickle.dumps((classes, which, tuples), protocol=pickle.HIGHEST_PROTOCOL)
        return pickle.dumps((list(value),), protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded):
        parts = pickle.loads(encoded)
        if isinstance(parts, list):  # written before the tuple forms (a savepoint of an older job)
            return Batch(parts)
        if len(parts) == 1:
            return Batch(parts[0])
        if len(parts) == 2:
            cls, tuples = parts
            return Batch(map(functools.partial(tuple.__new__, cls), tuples))
        classes, which, tuples = parts
        new = [functools.partial(tuple.__new__, c) for c in classes]
        return Batch([new[i](t) for i, t in zip(which, tuples)])

    def is_deterministic(self):
        return False

    def to_type_hint(self):
        return Batch


beam.coders.registry.register_coder(Batch, BatchCoder)

KeyedBatch = Tuple[Any, Batch]


class GroupPerBundle(beam.DoFn):
    """(key, value) -> (key, Batch of values), once per key per bundle.

    Only for the global window (the job's windows are kept in keyed state, not Beam windows); a
    batch carries the earliest timestamp of its bundle, so it is never later than its values.
    """

    def start_bundle(self):
        self._groups: dict[Any, Batch] = {}
        self._earliest = MAX_TIMESTAMP

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        key, value = element
        if timestamp < self._earliest:
            self._earliest = timestamp
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Batch()
        group.append(value)
        return ()  # everything comes out in finish_bundle

    def finish_bundle(self):
        ts = self._earliest if self._earliest < MAX_TIMESTAMP else Timestamp(0)
        for key, group in self._groups.items():
            yield GlobalWindows.windowed_value((key, group), timestamp=ts)
        self._groups = {}


def group_per_bundle() -> beam.ParDo:
    """The ParDo, typed so that its output uses BatchCoder behind a deterministic key coder."""
    return beam.ParDo(GroupPerBundle()).with_output_types(KeyedBatch)

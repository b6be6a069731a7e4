"""The batch format ReadKafkaBatches.java writes, read back by pipelines/kafka_io.unpack_batch."""

from __future__ import annotations

import struct

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.kafka_io import KafkaRecord, pack_batch, unpack_batch


def java_bytes(*fields: bytes | None) -> bytes:
    """DataOutputStream's view of one length-prefixed field list (int32 big-endian, -1 = null)."""
    out = b""
    for f in fields:
        out += struct.pack(">i", -1) if f is None else struct.pack(">i", len(f)) + f
    return out


def test_unpacks_the_layout_java_writes_byte_for_byte():
    batch = (struct.pack(">qq", 41, 1_795_885_200_123) + java_bytes(b"Sensor 1", b'{"v":1}')
             + struct.pack(">i", 2) + java_bytes(b"mqtt_topic", b"sensors", b"receive_ms", b"1795885200150")
             + struct.pack(">qq", 42, 1_795_885_200_999) + java_bytes(None, None)
             + struct.pack(">i", 1) + java_bytes("m\u00e9t\u00e9o".encode(), None))
    assert list(unpack_batch((3, batch))) == [
        KafkaRecord(3, 41, 1_795_885_200_123, b"Sensor 1", b'{"v":1}',
                    {"mqtt_topic": b"sensors", "receive_ms": b"1795885200150"}),
        KafkaRecord(3, 42, 1_795_885_200_999, None, None, {"m\u00e9t\u00e9o": None}),
    ]


def test_empty_values_are_not_nulls():
    records = [KafkaRecord(0, 7, 0, b"", b"", {})]
    assert list(unpack_batch((0, pack_batch(records)))) == records


def test_a_large_batch_round_trips_in_offset_order():
    records = [KafkaRecord(1, 1000 + i, 1_700_000_000_000 + i, str(i % 7).encode(),
                           b'{"sensor_id":"%d","value":%d}' % (i % 7, i), {"mqtt_topic": b"sensors/%d" % (i % 7)})
               for i in range(5_000)]
    assert list(unpack_batch((1, pack_batch(records)))) == records


def test_unpack_in_a_pipeline_gives_each_record_once():
    batches = [(0, pack_batch([KafkaRecord(0, o, o, None, b"x%d" % o, {}) for o in range(3)])),
               (2, pack_batch([KafkaRecord(2, 9, 9, b"k", b"y", {})]))]
    with BeamPipeline() as p:
        out = (p | beam.Create(batches) | beam.FlatMap(unpack_batch)
               | beam.Map(lambda r: (r.partition, r.offset, r.value)))
        assert_that(out, equal_to([(0, 0, b"x0"), (0, 1, b"x1"), (0, 2, b"x2"), (2, 9, b"y")]))

"""Reading Kafka with Beam's KafkaIO (Java, in our expansion service), packed per partition.

Beam's own Python ``ReadFromKafka`` hands every record over as a schema'd Row, and decoding those
rows in Python cost more than everything the job does with them (bench/PIPELINE.md). Our Java
transform ``ReadKafkaBatches`` (flink/jobserver) packs each bundle's records per partition into
one bytes element instead, and ``unpack_batch`` reads it with ``struct``.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple

import apache_beam as beam
import grpc
from apache_beam.transforms.external import (ExpansionAndArtifactRetrievalStub, ExternalTransform,
                                             ImplicitSchemaPayloadBuilder)

from sensorlake.settings import Settings


class KafkaRecord(NamedTuple):
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


READ_KAFKA_BATCHES_URN = "beam:transform:io.sensorlake:read_kafka_batches:v1"
_HEAD = struct.Struct(">qq")  # offset, timestamp_ms
_LEN = struct.Struct(">i")
_HEAD_LEN = struct.Struct(">qqi")  # offset, timestamp_ms, the key's length


def pack_batch(records: list[KafkaRecord]) -> bytes:
    """The batch format of ReadKafkaBatches.java (for tests; the job's batches come from Java)."""
    out = bytearray()

    def field(b):
        out.extend(_LEN.pack(-1) if b is None else _LEN.pack(len(b)) + b)

    for r in records:
        out.extend(_HEAD.pack(r.offset, r.timestamp_ms))
        field(r.key)
        field(r.value)
        out.extend(_LEN.pack(len(r.headers)))
        for k, v in r.headers.items():
            field(k.encode())
            field(v)
    return bytes(out)


def unpack_batch(element: tuple[int, bytes]) -> Iterator[KafkaRecord]:
    """(partition, batch) -> its records, in offset order.

    One loop without helper calls, header names decoded once per batch: this runs for every record
    of the job, and with a helper call per field it was about a fifth of the raw stage's loop
    (bench/PIPELINE.md)."""
    partition, buf = element
    head, length, new = _HEAD_LEN.unpack_from, _LEN.unpack_from, tuple.__new__
    names: dict[bytes, str] = {}
    pos, end = 0, len(buf)
    while pos < end:
        offset, ts, n = head(buf, pos)
        pos += 20
        if n < 0:
            key = None
        else:
            key = buf[pos:pos + n]
            pos += n
        (n,) = length(buf, pos)
        pos += 4
        if n < 0:
            value = None
        else:
            value = buf[pos:pos + n]
            pos += n
        (count,) = length(buf, pos)
        pos += 4
        headers = {}
        for _ in range(count):
            (n,) = length(buf, pos)
            if n < 0:
                raise ValueError(f"a header without a name at byte {pos} of a batch of partition {partition}")
            raw = buf[pos + 4:pos + 4 + n]
            pos += 4 + n
            name = names.get(raw)
            if name is None:
                name = names[raw] = raw.decode()
            (n,) = length(buf, pos)
            pos += 4
            if n < 0:
                headers[name] = None
            else:
                headers[name] = buf[pos:pos + n]
                pos += n
        yield new(KafkaRecord, (partition, offset, ts, key, value, headers))


class ExpansionService:
    """The expansion service at HOST:PORT over a plain gRPC channel.

    Beam opens an expansion service given as an address string with
    ``grpc.local_channel_credentials()``, which connects to loopback and UNIX sockets only ("Endpoint
    is neither UDS or TCP loopback address"): in docker compose the service is another container
    (``expansion:8097``). Beam accepts any context manager that yields the stub instead.
    """

    OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]

    def __init__(self, address: str):
        self.address = address
        self._channel = None

    def __enter__(self) -> ExpansionAndArtifactRetrievalStub:
        self._channel = grpc.insecure_channel(self.address, options=self.OPTIONS)
        return ExpansionAndArtifactRetrievalStub(self._channel)

    def __exit__(self, *exc) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        return f"ExpansionService({self.address!r})"


class ReadKafkaBatches(beam.PTransform):
    """(kafka partition, packed batch) elements covering every record of the topic, from the
    committed offsets on (unpack_batch reads them).

    The CreateTime policy makes the watermark follow the producers' (the bridge's) event time.
    Offsets are committed on checkpoint finalisation and the reader state is in Flink checkpoints.
    """

    def __init__(self, settings: Settings, group_id: str, topic: str | None = None):
        super().__init__()
        self._settings = settings
        self._group_id = group_id
        self._topic = topic or settings.kafka_topic

    def expand(self, pbegin):
        return pbegin | "ReadKafkaBatches" >> ExternalTransform(
            READ_KAFKA_BATCHES_URN,
            ImplicitSchemaPayloadBuilder({
                "bootstrap_servers": self._settings.kafka_bootstrap,
                "topic": self._topic,
                "group_id": self._group_id,
            }),
            ExpansionService(self._settings.expansion_endpoint))


class ReadKafkaRecords(ReadKafkaBatches):
    """Every record of the topic with its coordinates, one element each (ReadKafkaBatches unpacked)."""

    def expand(self, pbegin):
        return super().expand(pbegin) | "Unpack" >> beam.FlatMap(unpack_batch)

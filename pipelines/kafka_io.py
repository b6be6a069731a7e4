"""Reading Kafka with Beam's KafkaIO (a Java cross-language transform) and our expansion service."""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import grpc
from apache_beam.io.kafka import ReadFromKafka
from apache_beam.transforms.external import ExpansionAndArtifactRetrievalStub

from sensorlake.settings import Settings


class KafkaRecord(NamedTuple):
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def _to_record(row) -> KafkaRecord:
    headers = {}
    for h in row.headers or []:
        # KafkaIO hands headers over as rows of (key, value).
        headers[h.key] = h.value
    return KafkaRecord(int(row.partition), int(row.offset), int(row.timestamp), row.key, row.value, headers)


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


class ReadKafkaRecords(beam.PTransform):
    """Every record of the topic with its coordinates, from the committed offsets on.

    The CreateTime policy makes the watermark follow the producers' (the bridge's) event time.
    Offsets are committed on checkpoint finalisation and the reader state is in Flink checkpoints.
    """

    def __init__(self, settings: Settings, group_id: str, topic: str | None = None):
        super().__init__()
        self._settings = settings
        self._group_id = group_id
        self._topic = topic or settings.kafka_topic

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadFromKafka" >> ReadFromKafka(
                consumer_config={
                    "bootstrap.servers": self._settings.kafka_bootstrap,
                    "group.id": self._group_id,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": "false",
                },
                topics=[self._topic],
                with_metadata=True,
                commit_offset_in_finalize=True,
                timestamp_policy=ReadFromKafka.create_time_policy,
                expansion_service=ExpansionService(self._settings.expansion_endpoint),
            )
            | "ToKafkaRecord" >> beam.Map(_to_record)
        )

"""The Kafka side of the bridge: topics, a durable ordered producer, and what a failure means.

Producer settings and why:
- ``acks=all`` + idempotence: a confirmed record is on every in-sync replica, and producer
  retries never duplicate or reorder (idempotence keeps order with up to 5 requests in flight,
  so ``max_in_flight_requests_per_connection=1`` is not needed).
- unlimited retries and a long ``delivery_timeout_ms``: while Kafka is down records wait in the
  producer and the bridge simply stops acking MQTT; if one does expire, the acker re-sends it.
- ``linger_ms`` + compression: batches; ``zstd`` when the ``zstandard`` module is present
  (apache-beam already installs it), else ``gzip`` from the standard library. lz4/snappy would
  need extra native packages.
"""

from __future__ import annotations

import logging
import threading

from kafka import KafkaAdminClient, KafkaProducer
from kafka import errors as Errors
from kafka.codec import has_zstd
from kafka.future import Future
from kafka.partitioner.default import DefaultPartitioner

from connectors.mqtt_kafka import acks
from sensorlake.logs import log_event
from sensorlake.settings import Settings

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_MS = 10 * 60 * 1000
BOOTSTRAP_TIMEOUT_MS = 5_000


def compression_type() -> str:
    return "zstd" if has_zstd() else "gzip"


class KeyCachePartitioner(DefaultPartitioner):
    """The default (Java-compatible murmur2) partitioner, memoised per key.

    A fleet has a bounded set of sensor ids, and pure-Python murmur2 per record is measurable at
    10k msgs/s. Same partition as the Java client, so readings of one sensor stay in one partition.
    """

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, bytes, int], int] = {}

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):  # noqa: D102
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        parts = cluster.partitions_for_topic(topic)
        if not parts:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        ck = (topic, bytes(serialized_key), len(parts))
        p = self._cache.get(ck)
        if p is None:
            p = super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            if len(self._cache) >= self.MAX_KEYS:
                self._cache.clear()
            self._cache[ck] = p
        return p


def bootstrap_servers(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]


def producer_config(settings: Settings) -> dict:
    return dict(
        bootstrap_servers=bootstrap_servers(settings),
        client_id=f"sensorlake-bridge-{settings.bridge_id}",
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
        delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
        request_timeout_ms=30_000,
        max_block_ms=10_000,
        linger_ms=5,
        batch_size=128 * 1024,
        compression_type=compression_type(),
        partitioner=KeyCachePartitioner(),
        allow_auto_create_topics=False,
        reconnect_backoff_ms=100,
        reconnect_backoff_max_ms=5_000,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
    )


def ensure_topics(settings: Settings) -> list[str]:
    """Creates the readings and DLQ topics when missing; returns the ones it created.

    Replication factor -1 means the broker's ``default.replication.factor``.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers(settings),
                             client_id=f"sensorlake-bridge-{settings.bridge_id}-admin",
                             bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, request_timeout_ms=15_000)
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in dict.fromkeys([settings.kafka_topic, settings.kafka_dlq_topic]) if t not in existing]
        if not wanted:
            return []
        spec = {t: {"num_partitions": settings.kafka_partitions, "replication_factor": -1,
                    "configs": {"retention.ms": str(settings.kafka_retention_ms)}} for t in wanted}
        result = admin.create_topics(spec, raise_errors=False, wait_for_metadata=True)
        created = []
        for t in result.get("topics", []):
            code = t.get("error_code", 0)
            if code == 0:
                created.append(t["name"])
            elif code != Errors.TopicAlreadyExistsError.errno:
                raise Errors.for_code(code)(f"creating topic {t['name']}: {t.get('error_message')}")
        return created
    finally:
        admin.close()


def create_producer(settings: Settings) -> KafkaProducer:
    """A connected producer with metadata for both topics (so ``send`` never blocks on it)."""
    producer = KafkaProducer(**producer_config(settings))
    try:
        for topic in (settings.kafka_topic, settings.kafka_dlq_topic):
            producer.partitions_for(topic)
    except Exception:
        producer.close(timeout=1)
        raise
    return producer


def connect(settings: Settings, stop: threading.Event, max_backoff: float = 30.0) -> KafkaProducer | None:
    """Topics + producer, retried with capped exponential backoff until Kafka answers or stop is set."""
    delay = 1.0
    while not stop.is_set():
        try:
            created = ensure_topics(settings)
            if created:
                log_event(log, logging.INFO, "kafka topics created", topics=created,
                          partitions=settings.kafka_partitions)
            producer = create_producer(settings)
            log_event(log, logging.INFO, "kafka producer ready", bootstrap=settings.kafka_bootstrap,
                      compression=compression_type())
            return producer
        except (Errors.KafkaError, OSError, ValueError) as exc:
            log_event(log, logging.WARNING, "kafka not available; retrying", bootstrap=settings.kafka_bootstrap,
                      error=repr(exc), retry_in_s=delay)
            stop.wait(delay)
            delay = min(max_backoff, delay * 2)
    return None


def close_producer(producer: KafkaProducer, timeout: float) -> None:
    """Closes the producer; what Kafka cannot take within ``timeout`` is abandoned.

    Abandoning is safe: those messages were never acked to MQTT, so the broker redelivers them.
    (kafka-python's ``close`` raises instead of closing when its flush times out, and would then
    try again, noisily, at interpreter exit.)
    """
    try:
        producer.close(timeout=timeout)
        return
    except Exception:  # noqa: BLE001 - e.g. KafkaTimeoutError with Kafka down
        pass
    sender = getattr(producer, "_sender", None)
    try:
        if sender is not None:
            sender.force_close()
            sender.join(1)
    except Exception:  # noqa: BLE001
        pass
    producer._closed = True  # nothing left worth flushing; keeps __del__ quiet


def failed_future(exc: BaseException) -> Future:
    """A resolved-as-failed future, for sends that raised before reaching the producer's queue."""
    return Future().failure(exc)


def classify(exc: BaseException) -> str:
    """What to do with a record whose send failed (see ``acks.Acker``)."""
    if isinstance(exc, Errors.InvalidTimestampError):
        return acks.RESTAMP
    if isinstance(exc, (Errors.MessageSizeTooLargeError, Errors.RecordListTooLargeError,
                        Errors.InvalidRecordError, Errors.CorruptRecordError)):
        return acks.DLQ
    return acks.RETRY

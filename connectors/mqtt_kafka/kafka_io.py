"""The Kafka side of the bridge: topics, a durable ordered producer, and what a failure means.

The producer is librdkafka (confluent-kafka): batching, compression, partitioning and the wire
protocol run in C threads outside the GIL. With the pure-Python client those were half of the
bridge's CPU per message, on the same cores as the MQTT parsing (issue 16; docs/results.md B6).
Topic administration stays on kafka-python (not on the data path).

Producer settings and why:
- ``acks=all`` + idempotence: a confirmed record is on every in-sync replica, and producer
  retries never duplicate or reorder (idempotence keeps order with up to 5 requests in flight).
- unlimited retries and a long ``message.timeout.ms``: while Kafka is down records wait in the
  producer and the bridge simply stops acking MQTT; if one does expire, the acker re-sends it.
- ``partitioner=murmur2_random``: the Java client's partition for a keyed record, so a sensor's
  readings stay in the partition they were in before (librdkafka's default hashes differently).
- ``linger.ms`` (``SENSORLAKE_BRIDGE_LINGER_MS``, 50 ms) + ``zstd``: batches; at 5 ms a batch held about a
  dozen records and the broker spent ~4x the CPU per record (results B9). The wheel bundles its codecs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException
from kafka import KafkaAdminClient
from kafka import errors as Errors

from connectors.mqtt_kafka import acks
from sensorlake.logs import log_event
from sensorlake.settings import Settings

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_MS = 10 * 60 * 1000
BOOTSTRAP_TIMEOUT_MS = 5_000
MAX_REQUEST_BYTES = 1_048_576  # the broker's default message.max.bytes is a little above
#: How often the delivery thread wakes when nothing happens (it wakes at once on a confirmation).
POLL_S = 0.05
COMPRESSION = "zstd"  # librdkafka's wheel bundles the codec


def bootstrap_servers(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]


def producer_config(settings: Settings) -> dict:
    """librdkafka settings (names as in its CONFIGURATION.md)."""
    return {
        "bootstrap.servers": ",".join(bootstrap_servers(settings)),
        "client.id": f"sensorlake-bridge-{settings.bridge_id}",
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "request.timeout.ms": 30_000,
        "linger.ms": settings.bridge_linger_ms,
        "batch.size": 128 * 1024,
        "compression.type": COMPRESSION,
        "partitioner": "murmur2_random",
        "message.max.bytes": MAX_REQUEST_BYTES,
        # the ack window bounds what is outstanding; the local queue never refuses before it
        "queue.buffering.max.messages": max(100_000, 4 * settings.bridge_max_inflight),
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 5_000,
        "logger": logging.getLogger("kafka.librdkafka"),
    }


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


class Delivery:
    """One send's outcome, as the acker reads it: ``is_done``, then ``exception`` (None: confirmed).

    Set by the producer's delivery thread; ``get`` waits on the producer's one condition, so a
    message costs no lock or event of its own.
    """

    __slots__ = ("is_done", "exception", "_cv")

    def __init__(self, cv: threading.Condition | None = None) -> None:
        self.is_done = False
        self.exception: BaseException | None = None
        self._cv = cv

    def failure(self, exc: BaseException) -> "Delivery":
        self.exception = exc
        self.is_done = True
        return self

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.exception = to_error(err)
        self.is_done = True

    def get(self, timeout: float) -> None:
        """Waits up to ``timeout`` s for the outcome; never raises."""
        cv = self._cv
        if self.is_done or cv is None:
            return
        with cv:
            cv.wait_for(lambda: self.is_done, timeout)


def to_error(err: KafkaError) -> BaseException:
    """librdkafka's error as the kafka-python exception of the same code (what ``classify`` reads).

    Broker codes are the protocol's, shared by both clients; librdkafka's local codes are negative.
    """
    code = err.code()
    text = err.str()
    if code == KafkaError._MSG_TIMED_OUT:
        return Errors.KafkaTimeoutError(text)
    if code >= 0:
        return Errors.for_code(code)(text)
    return Errors.KafkaError(f"{err.name()}: {text}")


class Producer:
    """librdkafka's producer with a delivery thread; ``send`` returns a ``Delivery`` at once."""

    def __init__(self, settings: Settings, on_fatal: Any = None) -> None:
        self._on_fatal = on_fatal
        self._producer = confluent_kafka.Producer({**producer_config(settings), "error_cb": self._on_error})
        self._cv = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._thread.start()

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
             timestamp_ms: int | None = None) -> Delivery:
        d = Delivery(self._cv)
        try:
            self._producer.produce(topic, value, key, on_delivery=d._on_delivery, timestamp=timestamp_ms or 0,
                                   headers=headers)
        except KafkaException as exc:  # refused before queueing, e.g. over message.max.bytes
            return d.failure(to_error(exc.args[0]))
        except BufferError as exc:  # local queue full: retried by the acker
            return d.failure(Errors.KafkaTimeoutError(f"local queue full: {exc}"))
        return d

    def _serve(self) -> None:
        poll, cv = self._producer.poll, self._cv
        while not self._closed.is_set():
            if poll(POLL_S):
                with cv:
                    cv.notify_all()

    def _on_error(self, err: KafkaError) -> None:
        # Outages are reported by the acker (stalled, reconnects); only a fatal error ends the producer.
        if err.fatal():
            log_event(log, logging.ERROR, "kafka producer failed", error=err.str())
            if self._on_fatal is not None:
                self._on_fatal(f"kafka producer failed: {err.str()}")

    def wait_ready(self, topics: tuple[str, ...], timeout: float) -> None:
        """Raises KafkaException unless the cluster answers with metadata for ``topics`` in time."""
        for topic in topics:
            md = self._producer.list_topics(topic, timeout=timeout)
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                raise KafkaException(t.error if t is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))

    def flush(self, timeout: float) -> int:
        """Waits for outstanding sends up to ``timeout`` s; returns how many are still unconfirmed."""
        left = self._producer.flush(timeout)
        with self._cv:
            self._cv.notify_all()
        return left

    def close(self, timeout: float) -> None:
        """Flushes up to ``timeout`` s, then abandons the rest (never acked, so redelivered by MQTT)."""
        try:
            if self._producer.flush(max(0.0, timeout)):
                self._producer.purge()
                self._producer.flush(0)
        finally:
            self._closed.set()
            self._thread.join(2)


def create_producer(settings: Settings, on_fatal: Any = None) -> Producer:
    """A connected producer with metadata for both topics (so the first sends do not wait for it)."""
    producer = Producer(settings, on_fatal)
    try:
        producer.wait_ready((settings.kafka_topic, settings.kafka_dlq_topic), BOOTSTRAP_TIMEOUT_MS / 1000)
    except Exception:
        producer.close(0)
        raise
    return producer


def connect(settings: Settings, stop: threading.Event, max_backoff: float = 30.0,
            on_fatal: Any = None) -> Producer | None:
    """Topics + producer, retried with capped exponential backoff until Kafka answers or stop is set."""
    delay = 1.0
    while not stop.is_set():
        try:
            created = ensure_topics(settings)
            if created:
                log_event(log, logging.INFO, "kafka topics created", topics=created,
                          partitions=settings.kafka_partitions)
            producer = create_producer(settings, on_fatal)
            log_event(log, logging.INFO, "kafka producer ready", bootstrap=settings.kafka_bootstrap,
                      compression=COMPRESSION, client=f"librdkafka {confluent_kafka.libversion()[0]}")
            return producer
        except (Errors.KafkaError, KafkaException, OSError, ValueError) as exc:
            log_event(log, logging.WARNING, "kafka not available; retrying", bootstrap=settings.kafka_bootstrap,
                      error=repr(exc), retry_in_s=delay)
            stop.wait(delay)
            delay = min(max_backoff, delay * 2)
    return None


def close_producer(producer: Producer, timeout: float) -> None:
    """Closes the producer; what Kafka cannot take within ``timeout`` is abandoned.

    Abandoning is safe: those messages were never acked to MQTT, so the broker redelivers them.
    """
    try:
        producer.close(timeout)
    except Exception as exc:  # noqa: BLE001 - shutting down: nothing left worth raising for
        log_event(log, logging.WARNING, "kafka producer close incomplete", error=repr(exc))


def failed_future(exc: BaseException) -> Delivery:
    """A resolved-as-failed outcome, for sends that raised before reaching the producer's queue."""
    return Delivery().failure(exc)


def classify(exc: BaseException) -> str:
    """What to do with a record whose send failed (see ``acks.Acker``)."""
    if isinstance(exc, Errors.InvalidTimestampError):
        return acks.RESTAMP
    if isinstance(exc, (Errors.MessageSizeTooLargeError, Errors.RecordListTooLargeError,
                        Errors.InvalidRecordError, Errors.CorruptRecordError)):
        return acks.DLQ
    return acks.RETRY

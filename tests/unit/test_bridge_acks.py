"""Ordered acks: nothing is acked before Kafka confirmed it and everything received before it."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import errors as Errors
from kafka.future import Future

from connectors.mqtt_kafka import acks, kafka_io
from connectors.mqtt_kafka.metrics import BridgeMetrics
from connectors.mqtt_kafka.records import RecordBuilder

TOPIC = "iot.readings.raw"


class FakeSession:
    """Records PUBACKs; ``gen`` is the current MQTT connection generation."""

    def __init__(self) -> None:
        self.gen = 1
        self.acked: list[int] = []

    def ack_entries(self, entries):
        acked = stale = 0
        for e in entries:
            if e.gen == self.gen:
                self.acked.append(e.mid)
                acked += 1
            else:
                stale += 1
        return acked, stale


class FakeProducer:
    """``send`` returns an unresolved future; the test resolves futures in any order."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, Future]] = []

    def send(self, record):
        f = Future()
        self.sent.append((record, f))
        return f


@pytest.fixture
def builder():
    return RecordBuilder(TOPIC, "iot.readings.dlq", "sensors", "b1", 1024)


@pytest.fixture
def rig(builder):
    window = acks.AckWindow(limit=100)
    session = FakeSession()
    producer = FakeProducer()
    metrics = BridgeMetrics(in_flight=lambda: len(window))
    acker = acks.Acker(window, session, producer.send, kafka_io.classify, builder, metrics, TOPIC,
                       sleep=lambda s: None)

    def receive(mid: int, gen: int | None = None) -> acks.Entry:
        rec = builder.build(b"sensors/%d" % (mid % 3), b'{"seq": %d}' % mid, False, 1795885200123)
        e = acks.Entry(mid, 1, session.gen if gen is None else gen, rec, producer.send(rec), time.time())
        assert window.put(e)
        return e

    class Rig:
        pass

    r = Rig()
    r.window, r.session, r.producer, r.metrics, r.acker, r.receive = window, session, producer, metrics, acker, receive
    return r


def drain(acker: acks.Acker, rounds: int = 5) -> None:
    for _ in range(rounds):
        acker.step(0)


def test_out_of_order_confirmations_are_acked_in_arrival_order(rig):
    entries = [rig.receive(mid) for mid in range(1, 7)]
    for i in (5, 2, 4):  # Kafka confirms mids 6, 3, 5 first (other partitions / batches)
        entries[i].future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == []  # head (mid 1) still unconfirmed: nothing may be acked
    entries[0].future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1]  # mid 2 still open
    entries[1].future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1, 2, 3]  # 4 still open
    entries[3].future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1, 2, 3, 4, 5, 6]
    assert len(rig.window) == 0
    assert rig.metrics.sample("messages_forwarded_total") == 6 and rig.metrics.sample("mqtt_acks_total") == 6
    assert rig.metrics.sample("kafka_latency_seconds_count") == 6


def test_failed_send_is_resent_and_blocks_later_acks_until_confirmed(rig):
    e1, e2, e3 = (rig.receive(m) for m in (1, 2, 3))
    e1.future.failure(Errors.KafkaTimeoutError("expired"))
    e2.future.success("ok")
    e3.future.failure(Errors.KafkaTimeoutError("expired"))
    drain(rig.acker)
    assert rig.session.acked == []
    # both failed entries were re-sent, in arrival order, same records
    resent = [rec for rec, _ in rig.producer.sent[3:]]
    assert resent == [e1.record, e3.record]
    assert rig.metrics.sample("kafka_send_failures_total") >= 1 and rig.acker.stalled
    e1.future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1, 2]
    e3.future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1, 2, 3]
    assert not rig.acker.stalled and rig.metrics.sample("reconnects_total", target="kafka") == 1  # recovery counted


def test_refused_timestamp_is_restamped_and_refused_record_goes_to_dlq(rig):
    e1, e2 = rig.receive(1), rig.receive(2)
    e1.future.failure(Errors.InvalidTimestampError())
    e2.future.failure(Errors.MessageSizeTooLargeError())
    drain(rig.acker)
    assert e1.record.header("timestamp_fallback") == b"rejected_by_kafka"
    assert e2.record.topic == "iot.readings.dlq"
    assert e2.record.header("dlq_reason") == b"kafka_MessageSizeTooLargeError"
    e1.future.success("ok")
    e2.future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1, 2]
    assert rig.metrics.sample("messages_forwarded_total") == 1
    assert rig.metrics.sample("messages_dlq_total", reason="kafka_MessageSizeTooLargeError") == 1


def test_entries_of_a_previous_connection_are_never_acked(rig):
    old = [rig.receive(m) for m in (1, 2)]
    rig.session.gen = 2  # reconnected: the broker redelivers 1 and 2 itself
    new = [rig.receive(m) for m in (1, 2, 3)]
    old[1].future.failure(Errors.KafkaTimeoutError())  # a stale failure is dropped, not re-sent
    for e in [old[0], *new]:
        e.future.success("ok")
    drain(rig.acker)
    assert rig.session.acked == [1, 2, 3]  # only the current connection's packet ids
    assert len(rig.producer.sent) == 5  # nothing re-sent for the stale entry
    assert rig.metrics.sample("messages_left_for_redelivery_total") == 2
    assert len(rig.window) == 0


def test_window_is_bounded_and_close_releases_a_blocked_receiver():
    window = acks.AckWindow(limit=2)
    done = Future().success("ok")
    assert window.put(acks.Entry(1, 1, 1, None, done, 0))
    assert window.put(acks.Entry(2, 1, 1, None, done, 0))
    result = {}
    t = threading.Thread(target=lambda: result.update(ok=window.put(acks.Entry(3, 1, 1, None, done, 0))))
    t.start()
    time.sleep(0.1)
    assert t.is_alive()  # full: the MQTT thread waits, the broker queues
    ready, failed = window.pop_ready()
    assert [e.mid for e in ready] == [1, 2] and failed is None
    t.join(2)
    assert result == {"ok": True} and len(window) == 1
    full = acks.AckWindow(limit=1)
    full.put(acks.Entry(1, 1, 1, None, Future(), 0))
    t = threading.Thread(target=lambda: result.update(closed=full.put(acks.Entry(2, 1, 1, None, Future(), 0))))
    t.start()
    time.sleep(0.05)
    full.close()
    t.join(2)
    assert result["closed"] is False and len(full) == 1  # not added: stays unacked, redelivered later


def test_stall_is_reported_while_kafka_does_not_confirm(rig, monkeypatch):
    e = rig.receive(1)
    e.received -= acks.STALL_AFTER_S + 1
    rig.acker.step(0)
    assert rig.acker.stalled and rig.metrics.sample("kafka_stalled") == 1
    e.future.success("ok")
    rig.acker.step(0)
    assert not rig.acker.stalled and rig.metrics.sample("kafka_stalled") == 0
    assert rig.session.acked == [1]


def test_acker_thread_acks_in_order_under_random_completion(rig):
    import random

    rnd = random.Random(7)
    entries = [rig.receive(m) for m in range(1, 81)]
    rig.acker.start()
    try:
        for e in rnd.sample(entries, len(entries)):
            e.future.success("ok")
        deadline = time.time() + 5
        while len(rig.session.acked) < 80 and time.time() < deadline:
            time.sleep(0.01)
    finally:
        rig.acker.halt()
    assert rig.session.acked == list(range(1, 81))


def test_classify():
    assert kafka_io.classify(Errors.InvalidTimestampError()) == acks.RESTAMP
    for exc in (Errors.MessageSizeTooLargeError(), Errors.RecordListTooLargeError(), Errors.InvalidRecordError()):
        assert kafka_io.classify(exc) == acks.DLQ
    for exc in (Errors.KafkaTimeoutError(), Errors.NotLeaderForPartitionError(), Errors.KafkaConnectionError(),
                RuntimeError("anything else")):
        assert kafka_io.classify(exc) == acks.RETRY


def test_librdkafka_errors_are_classified_as_kafka_pythons_of_the_same_code():
    from confluent_kafka import KafkaError

    cases = {KafkaError.INVALID_TIMESTAMP: acks.RESTAMP, KafkaError.MSG_SIZE_TOO_LARGE: acks.DLQ,
             KafkaError.INVALID_RECORD: acks.DLQ, KafkaError.NOT_LEADER_FOR_PARTITION: acks.RETRY,
             KafkaError._MSG_TIMED_OUT: acks.RETRY, KafkaError._TRANSPORT: acks.RETRY,
             KafkaError._ALL_BROKERS_DOWN: acks.RETRY}
    for code, action in cases.items():
        exc = kafka_io.to_error(KafkaError(code))
        assert isinstance(exc, Errors.KafkaError) and kafka_io.classify(exc) == action, (code, exc)
    assert isinstance(kafka_io.to_error(KafkaError(KafkaError._MSG_TIMED_OUT)), Errors.KafkaTimeoutError)
    # the DLQ reason names the same class as before the client changed
    assert acks._reason(kafka_io.to_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))) == "kafka_MessageSizeTooLargeError"


def test_delivery_outcome_wakes_a_waiting_acker():
    from confluent_kafka import KafkaError

    cv = threading.Condition()
    ok, bad = kafka_io.Delivery(cv), kafka_io.Delivery(cv)
    t0 = time.monotonic()
    ok.get(0.05)  # nothing arrives: returns after the timeout, without raising
    assert not ok.is_done and time.monotonic() - t0 >= 0.04

    def confirm():
        time.sleep(0.05)
        ok._on_delivery(None, None)
        bad._on_delivery(KafkaError(KafkaError.INVALID_TIMESTAMP), None)
        with cv:
            cv.notify_all()

    threading.Thread(target=confirm).start()
    ok.get(5)
    assert ok.is_done and ok.exception is None
    bad.get(5)
    assert bad.is_done and isinstance(bad.exception, Errors.InvalidTimestampError)
    assert kafka_io.failed_future(Errors.KafkaTimeoutError()).is_done


def test_only_a_fatal_producer_error_stops_the_bridge():
    from confluent_kafka import KafkaError

    from sensorlake.settings import Settings

    stops = []
    # nothing listens there: librdkafka connects lazily, so this needs no broker
    p = kafka_io.Producer(Settings.load(env={}, kafka_bootstrap="127.0.0.1:1"), on_fatal=stops.append)
    try:
        p._on_error(KafkaError(KafkaError._TRANSPORT, "broker down"))
        p._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all down"))
        assert stops == []  # outages: the acker holds acks and reports the stall
        p._on_error(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
        assert len(stops) == 1 and "producer fenced" in stops[0]
    finally:
        p.close(0)

"""Ordered MQTT acks: a message is acked only when it and everything received before it is in Kafka.

Why a FIFO and not "ack on callback": Kafka confirms batches per partition, so confirmations
arrive out of arrival order, while MQTT requires PUBACKs in the order the PUBLISHes arrived and
the bridge must never ack a message Kafka has not confirmed. The MQTT network thread appends an
``Entry`` per received message (blocking when the window is full: the broker then queues); one
acker thread waits on the *head's* Kafka future, pops the confirmed prefix and acks it in order.
Waiting on the head costs nothing per message (no callback per record) and a whole batch is
usually popped at once.

A failed send is never dropped: the head stays in place, is re-sent (re-stamped with receive time
if Kafka refused its timestamp, routed to the DLQ if Kafka refused the record itself), and later
acks wait for it. Entries are tagged with the MQTT connection generation; after a reconnect the
broker redelivers every unacked message itself, so stale entries are never acked (their packet
ids may already belong to other messages) - they are only drained.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Protocol

from sensorlake.logs import log_event

log = logging.getLogger(__name__)

#: The oldest in-flight message waiting this long for Kafka marks Kafka as stalled.
STALL_AFTER_S = 5.0
RETRY = "retry"
RESTAMP = "restamp"
DLQ = "dlq"


class Entry:
    """One received MQTT message: its packet id, QoS, connection generation and Kafka future."""

    __slots__ = ("mid", "qos", "gen", "record", "future", "received", "attempts")

    def __init__(self, mid: int, qos: int, gen: int, record: Any, future: Any, received: float) -> None:
        self.mid = mid
        self.qos = qos
        self.gen = gen
        self.record = record
        self.future = future
        self.received = received
        self.attempts = 0


class AckWindow:
    """Bounded FIFO of entries in arrival order (many readers of ``len``, one producer, one consumer)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._q: deque[Entry] = deque()
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._items = threading.Condition(self._lock)
        self._closed = False

    def __len__(self) -> int:
        return len(self._q)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, entry: Entry) -> bool:
        """Appends; blocks while the window is full. False (not added) once the window is closed."""
        with self._lock:
            while len(self._q) >= self.limit and not self._closed:
                self._space.wait(0.5)
            if self._closed:
                return False
            self._q.append(entry)
            self._items.notify()
            return True

    def close(self) -> None:
        """Stops accepting entries (shutdown) and wakes a producer blocked on a full window."""
        with self._lock:
            self._closed = True
            self._space.notify_all()
            self._items.notify_all()

    def head(self) -> Entry | None:
        q = self._q
        return q[0] if q else None

    def wait_for_items(self, timeout: float) -> None:
        with self._lock:
            if not self._q:
                self._items.wait(timeout)

    def pop_ready(self) -> tuple[list[Entry], Entry | None]:
        """Pops the longest prefix whose sends Kafka confirmed; also returns the head if its send failed.

        Only the consumer pops, so checking ``q[0]`` outside the lock is safe.
        """
        q = self._q
        ready: list[Entry] = []
        while q:
            fut = q[0].future
            if not fut.is_done or fut.exception is not None:
                break
            ready.append(q.popleft())
        if ready:
            with self._lock:
                self._space.notify_all()
        head = q[0] if q else None
        failed = head if head is not None and head.future.is_done and head.future.exception is not None else None
        return ready, failed

    def pop_head(self) -> Entry:
        e = self._q.popleft()
        with self._lock:
            self._space.notify_all()
        return e

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self._q)


class Session(Protocol):
    """The MQTT side as the acker sees it (see ``bridge.MqttSession``)."""

    gen: int

    def ack_entries(self, entries: list[Entry]) -> tuple[int, int]:
        """Acks entries of the current connection in order; returns (acked, stale)."""
        ...


def wait_future(future: Any, timeout: float) -> None:
    """Blocks until a Kafka future resolves or ``timeout`` passes, without raising."""
    if future.is_done:
        return
    get = getattr(future, "get", None)
    if get is None:  # a plain kafka.future.Future (unit tests)
        time.sleep(min(timeout, 0.01))
        return
    try:
        get(timeout)
    except Exception:  # noqa: BLE001 - failures are read from the future, not from here
        pass


class Acker:
    """Drains the window in order: acks confirmed prefixes, re-sends failures, tracks Kafka stalls."""

    def __init__(self, window: AckWindow, session: Session, send: Callable[[Any], Any],
                 classify: Callable[[BaseException], str], builder: Any, metrics: Any,
                 main_topic: str, stop: threading.Event | None = None,
                 backoff_max: float = 10.0, sleep: Callable[[float], Any] | None = None) -> None:
        self.window = window
        self.session = session
        self.send = send
        self.classify = classify
        self.builder = builder
        self.metrics = metrics
        self.main_topic = main_topic
        self.stop_event = stop or threading.Event()
        self.backoff_max = backoff_max
        self.sleep = sleep or self.stop_event.wait
        self.stalled = False
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # ------------------------------------------------------------------ thread
    def start(self) -> "Acker":
        self._thread = threading.Thread(target=self._run, name="acker", daemon=True)
        self._thread.start()
        return self

    def halt(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.step(0.2)
            except Exception as exc:  # noqa: BLE001 - the acker must outlive any surprise
                log_event(log, logging.ERROR, "acker error", error=repr(exc))
                time.sleep(0.5)

    # ------------------------------------------------------------------ one round
    def step(self, wait: float) -> int:
        """One round: wait (up to ``wait`` s) for the head, ack the confirmed prefix. Returns acks."""
        head = self.window.head()
        if head is None:
            self.window.wait_for_items(wait)
            return 0
        if not head.future.is_done:
            wait_future(head.future, wait)
            if not head.future.is_done:
                self._check_stall(head)
                return 0
        ready, failed = self.window.pop_ready()
        acked = self._confirmed(ready) if ready else 0
        if failed is not None:
            self._failed(failed)
        return acked

    def _confirmed(self, ready: list[Entry]) -> int:
        m = self.metrics
        now = time.time()
        forwarded = 0
        observe = m.latency.observe
        for e in ready:
            observe(now - e.received)
            if e.record.topic == self.main_topic:
                forwarded += 1
            else:
                m.dlq.labels(e.record.dlq_reason or "unknown").inc()
        m.forwarded.inc(forwarded)
        acked, stale = self.session.ack_entries(ready)
        m.acked.inc(acked)
        if stale:
            m.unacked_redelivered.inc(stale)
        if self.stalled:
            self.stalled = False
            m.kafka_stalled.set(0)
            m.reconnects.labels("kafka").inc()
            log_event(log, logging.WARNING, "kafka confirming again; acks resumed")
        return acked

    def _check_stall(self, head: Entry) -> None:
        if not self.stalled and time.time() - head.received > STALL_AFTER_S:
            self._mark_stalled("kafka has not confirmed for %.0fs; holding MQTT acks (broker queues)"
                               % STALL_AFTER_S)

    def _mark_stalled(self, msg: str, **fields: Any) -> None:
        if not self.stalled:
            self.stalled = True
            self.metrics.kafka_stalled.set(1)
            log_event(log, logging.WARNING, msg, in_flight=len(self.window), **fields)

    def _failed(self, head: Entry) -> None:
        exc = head.future.exception
        gen = self.session.gen
        if head.gen != gen:
            # Its connection is gone: the broker redelivers it; acking it now could hit another message.
            self.window.pop_head()
            self.metrics.failed.inc()
            self.metrics.unacked_redelivered.inc()
            return
        action = self.classify(exc)
        head.attempts += 1
        if action == RETRY:
            self._mark_stalled("kafka send failed; retrying, acks held", error=repr(exc))
            if head.attempts > 1:
                self.sleep(min(self.backoff_max, 0.2 * 2 ** min(head.attempts, 10)))
        else:
            log_event(log, logging.WARNING, "kafka refused a record; re-sending",
                      action=action, error=repr(exc), mqtt_topic=_topic(head.record))
        self._resend_failed(gen)

    def _resend_failed(self, gen: int) -> None:
        """Re-sends every failed entry of the current connection, in arrival order."""
        for e in self.window.snapshot():
            fut = e.future
            if not fut.is_done or fut.exception is None or e.gen != gen:
                continue
            self.metrics.failed.inc()
            action = self.classify(fut.exception)
            if action == RESTAMP:
                e.record = self.builder.restamp(e.record)
                self.metrics.ts_fallback.labels("rejected_by_kafka").inc()
            elif action == DLQ:
                e.record = self.builder.to_dlq(e.record, _reason(fut.exception))
            e.future = self.send(e.record)


def _reason(exc: BaseException) -> str:
    return "kafka_" + type(exc).__name__


def _topic(record: Any) -> str:
    try:
        return (record.header("mqtt_topic") or b"").decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return "?"

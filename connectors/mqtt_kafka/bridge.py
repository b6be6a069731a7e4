"""The zero-loss MQTT -> Kafka bridge: wiring of session, producer, ack window and acker.

Data path per message (MQTT network thread): build the record (key, headers, event-time
timestamp; DLQ if oversized) -> ``producer.send`` (asynchronous, batched) -> append to the ack
window (blocks when full, so the broker queues). The acker thread acks the confirmed prefix in
arrival order. Nothing is acked before Kafka confirmed it (acks=all), so a crash at any point
only causes redeliveries (duplicates), never loss.

Shutdown (SIGTERM): stop taking messages, flush the producer, ack what Kafka confirmed, send
DISCONNECT after those PUBACKs, exit 0. Unconfirmed messages stay unacked and are redelivered.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from connectors.mqtt_kafka import kafka_io, mqtt_io
from connectors.mqtt_kafka.acks import Acker, AckWindow, Entry
from connectors.mqtt_kafka.metrics import BridgeMetrics, MetricsServer
from connectors.mqtt_kafka.records import Record, RecordBuilder
from sensorlake.logs import log_event
from sensorlake.settings import Settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
#: SIGTERM budget for flushing and acking (docker's default stop grace period is 10 s).
DRAIN_TIMEOUT_S = 8.0


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.fatal: str | None = None
        self.window = AckWindow(settings.bridge_max_inflight)
        self.metrics = BridgeMetrics(in_flight=lambda: len(self.window))
        self.builder = RecordBuilder(settings.kafka_topic, settings.kafka_dlq_topic, settings.mqtt_topic_prefix,
                                     settings.bridge_id, settings.bridge_max_payload_bytes)
        self.producer: Any = None
        self.session: mqtt_io.MqttSession | None = None
        self.acker: Acker | None = None
        self.metrics_server: MetricsServer | None = None
        self._error_log_at = 0.0

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Signal-safe: only sets an event."""
        self.stop_event.set()

    def _fatal(self, message: str) -> None:
        if self.fatal is None:
            self.fatal = message
        self.stop_event.set()

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        """Runs until ``request_stop`` or a fatal configuration error; returns the exit code."""
        s = self.settings
        self._start_metrics()
        try:
            mqtt_io.check_credentials(s)
        except mqtt_io.ConfigError as exc:
            self.fatal = str(exc)
            self._close_metrics()
            return EXIT_CONFIG
        self.producer = kafka_io.connect(s, self.stop_event, on_fatal=self._fatal)
        if self.producer is None:  # stopped while waiting for Kafka
            self._close_metrics()
            return EXIT_OK
        self.session = mqtt_io.MqttSession(s, self._on_message, self.metrics, self._fatal)
        self.acker = Acker(self.window, self.session, self._send, kafka_io.classify, self.builder,
                           self.metrics, s.kafka_topic, stop=self.stop_event).start()
        self.session.start()
        log_event(log, logging.INFO, "bridge running", bridge_id=s.bridge_id, client_id=self.session.client_id,
                  mqtt=f"{s.mqtt_host}:{s.mqtt_port}", kafka=s.kafka_bootstrap, topic=s.kafka_topic,
                  max_inflight=s.bridge_max_inflight)
        self.stop_event.wait()
        self._shutdown()
        return EXIT_CONFIG if self.fatal else EXIT_OK

    def _start_metrics(self) -> None:
        port = self.settings.bridge_metrics_port
        if not port:
            return
        try:
            self.metrics_server = MetricsServer(port, self.metrics.registry).start()
        except OSError as exc:  # the data path matters more than the metrics endpoint
            log_event(log, logging.ERROR, "metrics endpoint not available", port=port, error=str(exc))

    def _close_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

    def _shutdown(self) -> None:
        """Within DRAIN_TIMEOUT_S: flush, let the acker ack what Kafka confirmed, DISCONNECT, close."""
        self.window.close()  # no new entries: later messages stay unacked and are redelivered
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        kafka_down = self.acker is not None and self.acker.stalled
        if not self.fatal:
            left = self.producer.flush(1.0 if kafka_down else DRAIN_TIMEOUT_S - 1.5)
            if left:  # e.g. Kafka down: unconfirmed stay unacked
                kafka_down = True
                log_event(log, logging.WARNING, "flush incomplete at shutdown", unconfirmed=left)
            while len(self.window) and time.monotonic() < deadline - 1.0:
                head = self.window.head()
                if head is None or not head.future.is_done or head.future.exception is not None:
                    break  # unconfirmed or failed: leave it to the broker's redelivery
                time.sleep(0.01)
        if self.acker is not None:
            self.acker.halt()
        left = len(self.window)
        if self.session is not None:
            self.session.stop(timeout=2.0)
        kafka_io.close_producer(self.producer, 0.5 if kafka_down else max(0.5, deadline - time.monotonic()))
        self._close_metrics()
        m = self.metrics
        log_event(log, logging.INFO, "bridge stopped", received=m.sample("messages_received_total"),
                  forwarded=m.sample("messages_forwarded_total"), acked=m.sample("mqtt_acks_total"),
                  left_unacked=left)

    # ------------------------------------------------------------------ data path
    def _send(self, rec: Record) -> Any:
        try:
            return self.producer.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers,
                                      timestamp_ms=rec.timestamp_ms)
        except Exception as exc:  # noqa: BLE001 - the acker retries or reroutes it in order
            return kafka_io.failed_future(exc)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """MQTT network thread, once per PUBLISH. Never raises (a raise would stall paho)."""
        now = time.time()
        m = self.metrics
        m.received.inc()
        dup = msg.dup
        if dup:
            m.duplicates.inc()
        topic = getattr(msg, "_topic", None)
        payload = msg.payload
        try:
            if not isinstance(topic, bytes):
                topic = msg.topic.encode("utf-8", "replace")
            rec = self.builder.build(topic, payload, dup, int(now * 1000))
        except Exception as exc:  # noqa: BLE001 - forward unchanged, whatever it is
            self._log_error("record build failed; forwarding payload as is", exc)
            rec = Record(self.settings.kafka_topic, None, bytes(payload or b""),
                         [("mqtt_topic", topic or b""), ("receive_ms", b"%d" % int(now * 1000))],
                         int(now * 1000), int(now * 1000))
        if rec.ts_fallback is not None:
            m.ts_fallback.labels(rec.ts_fallback).inc()
        entry = Entry(msg.mid, msg.qos, self.session.gen if self.session else 0, rec, self._send(rec), now)
        self.window.put(entry)  # False when shutting down: then it stays unacked (redelivered)

    def _log_error(self, msg: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._error_log_at > 10:
            self._error_log_at = now
            log_event(log, logging.ERROR, msg, error=repr(exc))

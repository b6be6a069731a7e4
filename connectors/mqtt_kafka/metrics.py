"""The bridge's Prometheus metrics (prometheus_client), served on 127.0.0.1 with a health check.

Each bridge has a registry of its own (not the process-global default), so tests and embedded
bridges never share series. ``GET /metrics`` is prometheus_client's exposition (text format
0.0.4), ``GET /healthz`` answers ``ok`` while the process serves.
"""

from __future__ import annotations

import logging
import math
import threading
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

PREFIX = "sensorlake_bridge_"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

log = logging.getLogger(__name__)

# No `<name>_created` series: the counters' start time says nothing an operator needs.
prometheus_client.disable_created_metrics()


def _never_fails(fn: Callable[[], float]) -> Callable[[], float]:
    """A scrape must never break the bridge, nor fail because one reading failed (NaN instead)."""
    def read() -> float:
        try:
            return float(fn())
        except Exception:  # noqa: BLE001
            return math.nan
    return read


class BridgeMetrics:
    """Everything the bridge reports; attribute names are what the code increments."""

    def __init__(self, in_flight: Callable[[], float] = lambda: 0) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = PREFIX
        self.received = Counter(p + "messages_received_total",
                                "MQTT messages received, QoS 1 redeliveries included.", registry=r)
        self.forwarded = Counter(p + "messages_forwarded_total",
                                 "Messages Kafka confirmed on the readings topic (acks=all).", registry=r)
        self.dlq = Counter(p + "messages_dlq_total", "Messages Kafka confirmed on the DLQ topic, by reason.",
                           ["reason"], registry=r)
        self.failed = Counter(p + "kafka_send_failures_total",
                              "Kafka sends that failed and were retried (nothing is dropped).", registry=r)
        self.duplicates = Counter(p + "messages_duplicate_total",
                                  "MQTT redeliveries (DUP flag set); forwarded again, never skipped.", registry=r)
        self.acked = Counter(p + "mqtt_acks_total", "PUBACKs sent to the broker.", registry=r)
        self.unacked_redelivered = Counter(
            p + "messages_left_for_redelivery_total",
            "Messages not acked because their MQTT connection ended first; the broker redelivers them.", registry=r)
        self.ts_fallback = Counter(p + "timestamp_fallbacks_total",
                                   "Records stamped with receive time instead of event time, by reason.",
                                   ["reason"], registry=r)
        self.reconnects = Counter(p + "reconnects_total",
                                  "Reconnections: MQTT sessions resumed after a loss, Kafka recoveries "
                                  "after an outage (stalled or failed sends).", ["target"], registry=r)
        self.in_flight = Gauge(p + "messages_in_flight", "Messages received but not yet acked (waiting for Kafka).",
                               registry=r)
        self.in_flight.set_function(_never_fails(in_flight))
        self.mqtt_connected = Gauge(p + "mqtt_connected", "1 while the MQTT session is up.", registry=r)
        self.kafka_stalled = Gauge(p + "kafka_stalled", "1 while Kafka has not confirmed the oldest in-flight "
                                   "message for several seconds (acks are held back).", registry=r)
        self.latency = Histogram(p + "kafka_latency_seconds",
                                 "From MQTT receive to Kafka confirmation (acks=all), per message.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        for target in ("mqtt", "kafka"):
            self.reconnects.labels(target)  # present (at 0) before the first outage

    def sample(self, name: str, **labels: str) -> float:
        """The current value of one series (``name`` without the prefix), 0 if it has none yet."""
        return self.registry.get_sample_value(PREFIX + name, labels) or 0.0

    def render(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class MetricsServer:
    """``GET /metrics`` (and ``/healthz``) on 127.0.0.1 in a daemon thread."""

    def __init__(self, port: int, registry: CollectorRegistry, host: str = "127.0.0.1") -> None:
        metrics = make_wsgi_app(registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                return metrics(environ, start_response)
            status = "200 OK" if path in ("/healthz", "/") else "404 Not Found"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if status == "200 OK" else b"not found\n"]

        self.httpd = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

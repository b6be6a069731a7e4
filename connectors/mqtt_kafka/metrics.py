"""Prometheus text-format metrics for the bridge, served by the standard library.

No client library: the bridge needs a handful of counters, gauges and one histogram, and the
hot path should only do an integer add. Each counter has a single writer thread (the MQTT loop
or the acker), so plain ``+=`` under the GIL loses nothing; rendering reads a consistent-enough
snapshot for monitoring.
"""

from __future__ import annotations

import bisect
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "sensorlake_bridge_"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

log = logging.getLogger(__name__)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    """Monotonic count; with label names, one series per label value tuple."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Iterable[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self.value = 0
        self.series: dict[tuple[str, ...], int] = {}

    def inc(self, n: int = 1) -> None:
        self.value += n

    def inc_labels(self, *values: str, n: int = 1) -> None:
        self.series[values] = self.series.get(values, 0) + n

    def get(self, *values: str) -> int:
        return self.series.get(values, 0) if values else self.value

    def lines(self) -> list[str]:
        out = self.header()
        if self.labelnames:
            for values, v in sorted(self.series.items()):
                out.append(f"{self.name}{_labels(self.labelnames, values)} {_num(v)}")
        else:
            out.append(f"{self.name} {_num(self.value)}")
        return out


class Gauge(Metric):
    """A value that goes up and down; either set, or read from a function at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, fn: Callable[[], float] | None = None) -> None:
        super().__init__(name, help)
        self.value: float = 0
        self.fn = fn

    def set(self, value: float) -> None:
        self.value = value

    def lines(self) -> list[str]:
        value = self.value
        if self.fn is not None:
            try:
                value = self.fn()
            except Exception:  # noqa: BLE001 - a scrape must never break the bridge
                value = float("nan")
        return [*self.header(), f"{self.name} {_num(value)}"]


class Histogram(Metric):
    """Cumulative-bucket histogram (``_bucket``/``_sum``/``_count``)."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # last one is +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> list[str]:
        out = self.header()
        running = 0
        for le, c in zip(self.buckets, self.counts):
            running += c
            out.append(f'{self.name}_bucket{{le="{_num(float(le))}"}} {running}')
        running += self.counts[-1]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        out.append(f"{self.name}_sum {_num(float(self.sum))}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for m in self.metrics:
            lines.extend(m.lines())
        return "\n".join(lines) + "\n"


class BridgeMetrics:
    """Everything the bridge reports; attribute names are what the code increments."""

    def __init__(self, in_flight: Callable[[], float] = lambda: 0) -> None:
        r = self.registry = Registry()
        p = PREFIX
        self.received = r.add(Counter(p + "messages_received_total",
                                      "MQTT messages received, QoS 1 redeliveries included."))
        self.forwarded = r.add(Counter(p + "messages_forwarded_total",
                                       "Messages Kafka confirmed on the readings topic (acks=all)."))
        self.dlq = r.add(Counter(p + "messages_dlq_total",
                                 "Messages Kafka confirmed on the DLQ topic, by reason.", ["reason"]))
        self.failed = r.add(Counter(p + "kafka_send_failures_total",
                                    "Kafka sends that failed and were retried (nothing is dropped)."))
        self.duplicates = r.add(Counter(p + "messages_duplicate_total",
                                        "MQTT redeliveries (DUP flag set); forwarded again, never skipped."))
        self.acked = r.add(Counter(p + "mqtt_acks_total", "PUBACKs sent to the broker."))
        self.unacked_redelivered = r.add(Counter(
            p + "messages_left_for_redelivery_total",
            "Messages not acked because their MQTT connection ended first; the broker redelivers them."))
        self.ts_fallback = r.add(Counter(p + "timestamp_fallbacks_total",
                                         "Records stamped with receive time instead of event time, by reason.",
                                         ["reason"]))
        self.reconnects = r.add(Counter(p + "reconnects_total",
                                        "Reconnections: MQTT sessions resumed after a loss, Kafka recoveries "
                                        "after an outage (stalled or failed sends).", ["target"]))
        self.in_flight = r.add(Gauge(p + "messages_in_flight",
                                     "Messages received but not yet acked (waiting for Kafka).", in_flight))
        self.mqtt_connected = r.add(Gauge(p + "mqtt_connected", "1 while the MQTT session is up."))
        self.kafka_stalled = r.add(Gauge(p + "kafka_stalled",
                                         "1 while Kafka has not confirmed the oldest in-flight message "
                                         "for several seconds (acks are held back)."))
        self.latency = r.add(Histogram(p + "kafka_latency_seconds",
                                       "From MQTT receive to Kafka confirmation (acks=all), per message."))
        for target in ("mqtt", "kafka"):
            self.reconnects.inc_labels(target, n=0)

    def render(self) -> str:
        return self.registry.render()


class MetricsServer:
    """``GET /metrics`` (and ``/healthz``) on 127.0.0.1 in a daemon thread."""

    def __init__(self, port: int, render: Callable[[], str], host: str = "127.0.0.1") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = render().encode(), CONTENT_TYPE, 200
                elif path in ("/healthz", "/"):
                    body, ctype, code = b"ok\n", "text/plain", 200
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

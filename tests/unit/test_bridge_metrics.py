"""The bridge's metrics as Prometheus scrapes them (prometheus_client), and the HTTP endpoint."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from connectors.mqtt_kafka.metrics import BridgeMetrics, MetricsServer

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$')


def parse(text: str) -> dict[str, float]:
    """Validates every line of the exposition and returns {sample name with labels: value}."""
    assert text.endswith("\n")
    out: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in typed, f"duplicate TYPE for {name}"
            typed.add(name)
            continue
        assert SAMPLE.match(line), f"bad sample line: {line!r}"
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_bridge_metrics_expose_every_required_series():
    m = BridgeMetrics(in_flight=lambda: 7)
    m.received.inc(10)
    m.forwarded.inc(8)
    m.duplicates.inc(2)
    m.failed.inc(1)
    m.dlq.labels("payload_too_large").inc()
    m.reconnects.labels("mqtt").inc()
    m.ts_fallback.labels("future").inc(3)
    m.latency.observe(0.003)
    m.latency.observe(0.2)
    m.latency.observe(99)
    s = parse(m.render())
    p = "sensorlake_bridge_"
    assert s[p + "messages_received_total"] == 10
    assert s[p + "messages_forwarded_total"] == 8
    assert s[p + "messages_duplicate_total"] == 2
    assert s[p + "kafka_send_failures_total"] == 1
    assert s[p + "messages_in_flight"] == 7
    assert s[p + 'messages_dlq_total{reason="payload_too_large"}'] == 1
    assert s[p + 'reconnects_total{target="mqtt"}'] == 1
    assert s[p + 'reconnects_total{target="kafka"}'] == 0  # present before the first outage
    assert s[p + 'timestamp_fallbacks_total{reason="future"}'] == 3
    assert s[p + "kafka_latency_seconds_count"] == 3
    assert s[p + "kafka_latency_seconds_sum"] == pytest.approx(99.203)
    assert s[p + 'kafka_latency_seconds_bucket{le="0.005"}'] == 1
    assert s[p + 'kafka_latency_seconds_bucket{le="0.25"}'] == 2
    assert s[p + 'kafka_latency_seconds_bucket{le="60.0"}'] == 2
    assert s[p + 'kafka_latency_seconds_bucket{le="+Inf"}'] == 3


def test_latency_buckets_are_cumulative_and_inclusive():
    m = BridgeMetrics()
    for v in (0.002, 0.003, 0.005, 0.0051, 100):
        m.latency.observe(v)
    s = parse(m.render())
    h = "sensorlake_bridge_kafka_latency_seconds"
    assert s[h + '_bucket{le="0.002"}'] == 1  # le means <=
    assert s[h + '_bucket{le="0.005"}'] == 3
    assert s[h + '_bucket{le="0.01"}'] == 4
    assert s[h + '_bucket{le="+Inf"}'] == 5 and s[h + "_count"] == 5 and m.sample("kafka_latency_seconds_count") == 5


def test_label_values_are_escaped():
    m = BridgeMetrics()
    m.dlq.labels('a "quoted"\\path\nnewline').inc()
    text = m.render()
    parse(text)
    assert 'reason="a \\"quoted\\"\\\\path\\nnewline"' in text


def test_gauge_function_failure_does_not_break_a_scrape():
    m = BridgeMetrics(in_flight=lambda: 1 / 0)
    assert parse(m.render())["sensorlake_bridge_messages_in_flight"] != 0  # NaN


def test_http_endpoint():
    m = BridgeMetrics()
    m.received.inc(5)
    srv = MetricsServer(0, m.registry).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert parse(r.read().decode())["sensorlake_bridge_messages_received_total"] == 5
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/nope", timeout=5)
        assert e.value.code == 404
    finally:
        srv.close()

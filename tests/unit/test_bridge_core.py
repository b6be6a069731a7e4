"""The bridge's per-message path and command line, without brokers."""

from __future__ import annotations

import argparse
import json

import paho.mqtt.client as mqtt
import pytest
from kafka import errors as Errors
from kafka.future import Future

from connectors.mqtt_kafka import cli
from connectors.mqtt_kafka.bridge import Bridge
from sensorlake.settings import Settings


class FakeProducer:
    def __init__(self, fail: Exception | None = None):
        self.sent = []
        self.fail = fail

    def send(self, topic, value=None, key=None, headers=None, timestamp_ms=None):
        if self.fail:
            raise self.fail
        self.sent.append((topic, key, value, headers, timestamp_ms))
        return Future()


class FakeSession:
    gen = 3


def message(mid: int, topic: bytes, payload: bytes, dup: bool = False, qos: int = 1) -> mqtt.MQTTMessage:
    m = mqtt.MQTTMessage(mid, topic)
    m.payload, m.qos, m.dup = payload, qos, dup
    return m


@pytest.fixture
def bridge():
    b = Bridge(Settings.load(env={}, bridge_max_payload_bytes=100, bridge_metrics_port=0))
    b.producer = FakeProducer()
    b.session = FakeSession()
    return b


def test_messages_enter_the_window_in_arrival_order_unchanged(bridge):
    payloads = [json.dumps({"sensor_id": "1", "timestamp": 1795885200123 + i, "seq": i}).encode() for i in range(3)]
    for i, p in enumerate(payloads):
        bridge._on_message(None, None, message(i + 1, b"sensors/1", p, dup=(i == 1)))
    entries = bridge.window.snapshot()
    assert [e.mid for e in entries] == [1, 2, 3] and all(e.gen == 3 and e.qos == 1 for e in entries)
    assert [s[2] for s in bridge.producer.sent] == payloads
    assert [s[4] for s in bridge.producer.sent] == [1795885200123, 1795885200124, 1795885200125]
    assert bridge.metrics.sample("messages_received_total") == 3 and bridge.metrics.sample("messages_duplicate_total") == 1


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", b"{", b"null", b'{"timestamp": "x"}', b"z" * 101])
def test_any_input_is_taken_never_raises(bridge, payload):
    bridge._on_message(None, None, message(9, b"sensors/x", payload))
    (entry,) = bridge.window.snapshot()
    topic, key, value, headers, ts = bridge.producer.sent[0]
    assert value == payload and key == b"x"
    assert topic == ("iot.readings.dlq" if len(payload) > 100 else "iot.readings.raw")


def test_send_that_raises_becomes_a_failed_entry_for_the_acker(bridge):
    bridge.producer = FakeProducer(fail=Errors.KafkaTimeoutError("no metadata"))
    bridge._on_message(None, None, message(1, b"sensors/1", b"{}"))
    (entry,) = bridge.window.snapshot()
    assert entry.future.is_done and isinstance(entry.future.exception, Errors.KafkaTimeoutError)


def test_a_bug_in_record_building_still_forwards_the_payload(bridge, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(bridge.builder, "build", boom)
    bridge._on_message(None, None, message(1, b"sensors/1", b"payload"))
    assert bridge.producer.sent[0][2] == b"payload" and len(bridge.window) == 1


def test_fallback_timestamps_are_counted(bridge):
    bridge._on_message(None, None, message(1, b"sensors/1", b'{"timestamp": 99999999999999}'))
    bridge._on_message(None, None, message(2, b"sensors/1", b"no time"))
    assert bridge.metrics.sample("timestamp_fallbacks_total", reason="future") == 1
    assert bridge.metrics.sample("timestamp_fallbacks_total", reason="no_timestamp") == 1


def test_parser_exposes_the_bridge_settings():
    p = argparse.ArgumentParser()
    cli.configure_parser(p)
    args = p.parse_args(["--mqtt-port", "2883", "--bridge-max-inflight", "50", "--kafka-topic", "t",
                         "--bridge-linger-ms", "7"])
    s = Settings.from_args(args, env={})
    assert (s.mqtt_port, s.bridge_max_inflight, s.kafka_topic, s.bridge_linger_ms) == (2883, 50, "t", 7)
    assert s.bridge_max_payload_bytes == 262144 and s.bridge_metrics_port == 9464
    for name in ("bridge_id", "bridge_client_id", "bridge_max_inflight", "bridge_linger_ms", "bridge_max_payload_bytes",
                 "bridge_metrics_port", "bridge_session_expiry_s"):
        assert Settings.env_name(name) == "SENSORLAKE_" + name.upper()


def test_producer_lingers_as_configured_and_librdkafka_takes_the_config():
    from confluent_kafka import Producer

    from connectors.mqtt_kafka import kafka_io

    s = Settings.load(env={"SENSORLAKE_BRIDGE_LINGER_MS": "120"})
    conf = kafka_io.producer_config(s)
    assert conf["linger.ms"] == 120 and Settings.load(env={}).bridge_linger_ms == 50
    Producer({**conf, "bootstrap.servers": "127.0.0.1:1"}).flush(0)  # unknown or out-of-range keys raise here


@pytest.mark.parametrize("flag", [["--bridge-max-inflight", "0"], ["--mqtt-qos", "3"], ["--mqtt-topic-prefix", "/"],
                                  ["--bridge-linger-ms", "-1"]])
def test_bad_settings_exit_2_with_one_line(flag, capsys, monkeypatch):
    monkeypatch.setenv("SENSORLAKE_ENV_FILE", "/nonexistent")
    p = argparse.ArgumentParser()
    cli.configure_parser(p)
    assert cli.run(p.parse_args(flag)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("sensorlake bridge: error: ")

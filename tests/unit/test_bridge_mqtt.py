"""The MQTT side without a broker: buffered reads, v5 properties, generations, auth failures."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from connectors.mqtt_kafka import mqtt_io
from connectors.mqtt_kafka.acks import Entry
from connectors.mqtt_kafka.metrics import BridgeMetrics
from sensorlake.settings import Settings


class FakeSock:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.calls = 0

    def recv(self, n):
        self.calls += 1
        if not self.chunks:
            raise BlockingIOError
        c = self.chunks.pop(0)
        assert len(c) <= n
        return c

    def fileno(self):
        return 42

    def close(self):
        self.closed = True


def test_buffered_socket_serves_small_reads_from_one_recv():
    s = mqtt_io.BufferedSocket(FakeSock([b"\x30\x05hello\x30\x02hi"]))
    assert s.recv(1) == b"\x30" and s.recv(1) == b"\x05" and s.recv(5) == b"hello"
    assert s.pending() == 4 and s.buffered() == 4
    assert s.recv(1) == b"\x30" and s.recv(1) == b"\x02" and s.recv(10) == b"hi"  # short read
    assert s._sock.calls == 1
    with pytest.raises(BlockingIOError):
        s.recv(1)  # nothing buffered, nothing on the wire: paho sees EAGAIN
    assert s.fileno() == 42
    s.close()
    assert s._sock.closed


def test_buffered_socket_passes_eof_and_large_reads_through():
    s = mqtt_io.BufferedSocket(FakeSock([b"x" * mqtt_io.READ_SIZE, b""]))
    assert s.recv(mqtt_io.READ_SIZE) == b"x" * mqtt_io.READ_SIZE  # direct, unbuffered
    assert s.recv(1) == b""  # EOF reaches paho as EOF


@pytest.mark.parametrize("raw", [b"\x00rest", b"\x02\x01\x01rest", b"\x05\x23\x00\x07\x01\x00"])
def test_fast_properties_parse_like_paho(raw):
    fast, n_fast = mqtt_io.FastProperties(PacketTypes.PUBLISH).unpack(raw)
    slow, n_slow = Properties(PacketTypes.PUBLISH).unpack(raw)
    assert n_fast == n_slow and str(fast) == str(slow)
    assert fast.json() == slow.json()


def test_paho_uses_fast_properties_and_fast_client():
    import paho.mqtt.client as mqtt

    assert mqtt.Properties is mqtt_io.FastProperties
    c = mqtt_io.make_client(Settings.load(env={}), "x")
    assert isinstance(c, mqtt_io.FastClient)


def test_connect_properties():
    p = mqtt_io.connect_properties(7 * 24 * 3600, 1000)
    assert p.SessionExpiryInterval == 604800 and p.ReceiveMaximum == 1000
    p = mqtt_io.connect_properties(10**12, 10**6)
    assert p.SessionExpiryInterval == 0xFFFFFFFF and p.ReceiveMaximum == 65535


def test_auth_failures_are_recognised():
    bad = ReasonCode(PacketTypes.CONNACK, "Bad user name or password")
    assert mqtt_io.is_auth_failure(bad)
    assert mqtt_io.is_auth_failure(ReasonCode(PacketTypes.CONNACK, "Not authorized"))
    assert not mqtt_io.is_auth_failure(ReasonCode(PacketTypes.CONNACK, "Server unavailable"))
    msg = mqtt_io.auth_message(Settings.load(env={}), bad)
    assert "Bad user name or password" in msg and "\n" not in msg


class FakeClient:
    def __init__(self):
        self.acks = []
        self.subscribed = []
        self.disconnected = False

    def ack(self, mid, qos):
        self.acks.append(mid)

    def subscribe(self, topic, qos):
        self.subscribed.append((topic, qos))

    def disconnect(self):
        self.disconnected = True


class Flags:
    session_present = True


@pytest.fixture
def session():
    fatal = []
    s = mqtt_io.MqttSession(Settings.load(env={}), lambda *a: None, BridgeMetrics(), fatal.append)
    s.client = FakeClient()
    s.fatal = fatal
    return s


def test_session_acks_only_the_current_connection(session):
    ok = ReasonCode(PacketTypes.CONNACK, "Success")
    assert session.ack_entries([Entry(1, 1, session.gen, None, None, 0)]) == (0, 1)  # never connected
    session._on_connect(session.client, None, Flags(), ok, None)
    assert session.client.subscribed == [("sensors/#", 1)]
    g1 = session.gen
    assert session.ack_entries([Entry(1, 1, g1, None, None, 0), Entry(2, 0, g1, None, None, 0),
                                Entry(3, 1, g1, None, None, 0)]) == (2, 0)  # QoS 0 needs no ack
    session._on_disconnect(session.client, None, None, ReasonCode(PacketTypes.DISCONNECT, "Success"), None)
    assert session.ack_entries([Entry(4, 1, g1, None, None, 0)]) == (0, 1)  # disconnected
    session._on_connect(session.client, None, Flags(), ok, None)
    assert session.ack_entries([Entry(5, 1, g1, None, None, 0)]) == (0, 1)  # previous connection
    assert session.ack_entries([Entry(6, 1, session.gen, None, None, 0)]) == (1, 0)
    assert session.client.acks == [1, 3, 6]
    assert session.metrics.sample("reconnects_total", target="mqtt") == 1


def test_session_bad_credentials_are_fatal_once(session):
    session._on_connect(session.client, None, Flags(), ReasonCode(PacketTypes.CONNACK, "Not authorized"), None)
    assert len(session.fatal) == 1 and "refused user 'bridge'" in session.fatal[0]
    assert session.client.disconnected and session.client.subscribed == []


def test_refused_subscription_is_fatal(session):
    session._on_subscribe(session.client, None, 1, [ReasonCode(PacketTypes.SUBACK, "Not authorized")], None)
    assert session.fatal and "subscription" in session.fatal[0]


def test_check_credentials_ignores_an_unreachable_broker():
    s = Settings.load(env={}).replace(mqtt_port=1)  # nothing listens on port 1
    mqtt_io.check_credentials(s, timeout=1)  # no exception: the session retries with backoff


def test_pre_connect_ends_the_generation_and_drops_queued_pubacks(session):
    from collections import deque

    ok = ReasonCode(PacketTypes.CONNACK, "Success")
    session._on_connect(session.client, None, Flags(), ok, None)
    session.client._out_packet = deque([{"command": 0x40, "mid": 1}])  # a PUBACK queued late
    g = session.gen
    session._on_pre_connect(session.client, None)  # paho reconnecting without on_disconnect
    assert session.gen > g and not session.connected and len(session.client._out_packet) == 0
    assert session.ack_entries([Entry(2, 1, g, None, None, 0)]) == (0, 1)


def test_ack_many_queues_ordered_pubacks_as_one_write():
    c = mqtt_io.make_client(Settings.load(env={}), "x")
    c.ack_many([1, 258, 65535])
    (pkt,) = list(c._out_packet)
    assert pkt["packet"] == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"
    assert pkt["to_process"] == 12 and pkt["pos"] == 0
    c.ack_many([])
    assert len(c._out_packet) == 1

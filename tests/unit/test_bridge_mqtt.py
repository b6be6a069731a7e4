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
from tests.mqtt_wire import publish as _publish


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


def _stream() -> bytes:
    """What a broker may send a v5 subscriber: plain QoS 0/1 PUBLISHes (the bulk), and what the fast
    path must leave to paho: properties (a content type, a topic alias), QoS 2, a PINGRESP."""
    parts = [_publish(b"sensors/s%d" % i, b'{"seq":%d}' % i, mid=i + 1) for i in range(5)]
    parts += [
        _publish(b"sensors/q0", b"qos0", qos=0),
        _publish(b"sensors/dup", b"again", mid=7, dup=True, retain=True),
        _publish(b"sensors/big", b"x" * 200, mid=8),  # 2-byte remaining length
        _publish(b"sensors/huge", b"y" * 20_000, mid=9),  # 3-byte remaining length, several reads
        _publish(b"sensors/props", b"ct", mid=10, props=b"\x05\x03\x00\x02js"),  # content type "js"
        _publish(b"sensors/q2", b"exactly-once", qos=2, mid=11),
        b"\xd0\x00",  # PINGRESP
        _publish(b"sensors/empty", b"", mid=12),
        _publish("sensors/ünï".encode(), "ü".encode(), mid=13),
    ]
    parts += [_publish(b"sensors/t%d" % i, b"v%d" % i, mid=100 + i) for i in range(50)]
    return b"".join(parts)


class WireSock(FakeSock):
    """A socket that returns the byte stream in fixed-size pieces (packets straddle reads)."""

    def __init__(self, data: bytes, piece: int):
        super().__init__([data[i:i + piece] for i in range(0, len(data), piece)])
        self.sent = b""

    def recv(self, n):
        self.calls += 1
        if not self.chunks:
            raise BlockingIOError
        c = self.chunks[0]
        if len(c) > n:
            self.chunks[0] = c[n:]
            return c[:n]
        return self.chunks.pop(0)

    def send(self, b):
        self.sent += bytes(b)
        return len(b)


def _receive(client, sock):
    import paho.mqtt.client as mqtt

    got = []
    client.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), m.qos, m.mid, m.dup, m.retain,
                                                     str(m.properties)))
    client._sock = sock
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    for _ in range(10_000):
        if not sock.chunks and not (isinstance(sock, mqtt_io.BufferedSocket) and sock.buffered()):
            break
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    client._sock = None
    return got


@pytest.mark.parametrize("piece", [65536, 1000, 37, 1])
def test_fast_publish_path_delivers_what_paho_delivers(piece, monkeypatch):
    import paho.mqtt.client as mqtt

    data = _stream()
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="p", protocol=mqtt.MQTTv5, manual_ack=True)
    expected = _receive(plain, WireSock(data, piece))
    assert len(expected) == 62 and expected[-1][0] == "sensors/t49"  # QoS 2 waits for its PUBREL

    slow_calls = []
    real = mqtt.Client._handle_publish
    monkeypatch.setattr(mqtt.Client, "_handle_publish", lambda self: slow_calls.append(1) or real(self))
    fast = mqtt_io.make_client(Settings.load(env={}), "f")
    sock = mqtt_io.BufferedSocket(WireSock(data, piece))
    assert _receive(fast, sock) == expected
    if piece == 65536:  # one read holds everything: paho parses the first packet and those it must
        assert len(slow_calls) <= 4
    assert fast._in_packet["command"] == 0 and fast._last_msg_in > 0


def test_fast_publish_path_stands_aside_for_a_logger(monkeypatch):
    """paho logs every PUBLISH it parses when a logger is set; the fast path would hide them."""
    import logging

    import paho.mqtt.client as mqtt

    slow_calls = []
    real = mqtt.Client._handle_publish
    monkeypatch.setattr(mqtt.Client, "_handle_publish", lambda self: slow_calls.append(1) or real(self))
    fast = mqtt_io.make_client(Settings.load(env={}), "f")
    fast.enable_logger(logging.getLogger("paho-test"))
    got = _receive(fast, mqtt_io.BufferedSocket(WireSock(_publish(b"sensors/a", b"1") * 3, 65536)))
    assert len(got) == 3 and len(slow_calls) == 3

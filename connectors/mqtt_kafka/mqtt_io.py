"""The MQTT side of the bridge: a persistent, manually acked paho 2.x session.

- MQTT v5, fixed client id, ``clean_start=False`` and a session expiry: while the bridge is away
  (crash, restart, Kafka outage) the broker keeps its subscription and queues readings.
- ``manual_ack=True``: paho does not PUBACK on its own; ``ack_entries`` sends PUBACKs (from the
  acker thread; paho's packet queue is a deque plus a wake-up socket, the same path ``publish``
  uses from other threads).
- Receive Maximum = the bridge's in-flight bound, so a compliant broker never sends more
  unacked messages than the bridge holds (mosquitto 2.0.11 overshoots after acks, so the
  window also blocks the network thread when full).
- Connection generations: a PUBACK may only answer a PUBLISH of the *current* connection. After
  a reconnect the broker redelivers every unacked message (DUP set) with its old packet id, and a
  late PUBACK from the previous connection could acknowledge a different, unconfirmed message.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensorlake.logs import log_event
from sensorlake.settings import Settings

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
#: Always QoS 1, whatever SENSORLAKE_MQTT_QOS says: with QoS 2, paho sends PUBREC on receipt and the
#: broker then forgets the message, so a crash before Kafka confirmed it would lose it. A QoS 2
#: publication is delivered to a QoS 1 subscription as QoS 1 (at least once, acked after Kafka).
SUBSCRIBE_QOS = 1
#: CONNACK reason codes that retrying cannot fix (bad credentials, not authorised, bad auth method).
AUTH_FAILURES = {134, 135, 140}
MAX_SESSION_EXPIRY = 0xFFFFFFFF


class ConfigError(Exception):
    """A setting makes the bridge unable to work; retrying will not help (exit code 2)."""


def client_id_for(settings: Settings) -> str:
    return settings.bridge_client_id or f"sensorlake-{settings.bridge_id}"


READ_SIZE = 64 * 1024
_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id


class BufferedSocket:
    """Serves paho's tiny reads (1 byte of header, 1 per length byte, then the body) from one
    large ``recv``.

    Unbuffered, paho makes ~4 syscalls per PUBLISH, and each releases the GIL to the Kafka
    sender thread (which then keeps it up to the switch interval): the single biggest cost in
    the bridge. ``pending()`` is how paho already learns about data buffered in SSL sockets,
    so its select() does not wait while whole packets sit in this buffer.
    """

    __slots__ = ("_sock", "_buf", "_pos")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            if n >= READ_SIZE:
                return self._sock.recv(n)
            buf = self._sock.recv(READ_SIZE)  # BlockingIOError / EOF (b"") pass through to paho
            if not buf:
                return buf
            self._buf, pos = buf, 0
        end = min(pos + n, len(buf))
        self._pos = end
        return buf[pos:end]

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return self.buffered() + (inner() if inner is not None else 0)

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:  # send, close, setblocking, ...
        return getattr(self._sock, name)


class FastProperties(Properties):
    """paho's ``Properties`` without rebuilding its two lookup tables for every instance, and with
    a fast path for the empty property list of a plain PUBLISH.

    paho parses the (usually empty) v5 properties of every received PUBLISH into a new
    ``Properties``, whose constructor alone cost ~12% of the bridge's CPU. Same class interface
    and results; installed as the ``Properties`` name inside ``paho.mqtt.client`` only.
    """

    _tables: Properties | None = None

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's signature
        tables = FastProperties._tables
        if tables is None:
            tables = FastProperties._tables = Properties(packetType)
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", tables.types)
        object.__setattr__(self, "names", tables.names)
        object.__setattr__(self, "properties", tables.properties)

    def unpack(self, buffer: bytes) -> tuple[Properties, int]:
        if buffer[:1] == b"\x00" and len(self.__dict__) == 4:  # length 0 and nothing set before
            return self, 1
        return super().unpack(buffer)


if getattr(mqtt, "Properties", None) is Properties:
    mqtt.Properties = FastProperties


class FastClient(mqtt.Client):
    """paho's client with buffered reads, all buffered packets handled per select(), and no
    per-message topic matching (the bridge has one ``on_message`` and no filtered callbacks)."""

    MAX_PACKETS_PER_READ = 1000

    def _create_socket(self):  # noqa: ANN202 - paho 2.1 internal, pinned in setup.py
        return BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        n = 0
        while rc == mqtt.MQTT_ERR_SUCCESS and n < self.MAX_PACKETS_PER_READ:
            sock = self._sock
            if not isinstance(sock, BufferedSocket) or not sock.buffered():
                break
            n += self._read_publishes(sock)
            if self._sock is not sock or not sock.buffered():
                break
            rc = super().loop_read(max_packets)  # whatever the fast path left: not a plain PUBLISH, or partial
            n += 1
        return rc

    def _read_publishes(self, sock: BufferedSocket) -> int:
        """Handles the complete QoS 0/1 PUBLISH packets without properties at the head of the
        buffer, as paho's ``_handle_publish`` would, and returns how many; stops at anything else
        (another packet type, QoS 2, properties such as a topic alias, a packet not yet whole or
        malformed), which paho's own reader then takes.

        paho spends ~25 us of Python per PUBLISH on bookkeeping (a dict per packet, a Condition per
        message for ``info``, f-string struct formats); this is a few. Received messages get
        ``info = None`` (``info`` tracks a message *we* publish) and empty properties.
        """
        if self._in_packet["command"] or self._protocol != mqtt.MQTTv5 or self._logger is not None \
                or self._on_log is not None:
            return 0
        buf, pos = sock._buf, sock._pos
        end = len(buf)
        new_message = mqtt.MQTTMessage.__new__
        message_cls = mqtt.MQTTMessage
        now = mqtt.time_func
        handle = self._handle_on_message
        n = 0
        while pos < end and self._sock is sock:
            header = buf[pos]
            if header & 0xF0 != 0x30 or header & 0x06 > 0x02:  # not PUBLISH, or QoS 2 (or invalid 3)
                break
            i, length, shift = pos + 1, 0, 0
            while i < end and shift < 28:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            else:
                break  # length incomplete or longer than 4 bytes
            stop = i + length
            qos = (header >> 1) & 0x03
            j = i + 2 + (buf[i] << 8 | buf[i + 1]) if i + 1 < end else stop + 1
            topic_end = j
            if qos:
                j += 2
            if stop > end or topic_end == i + 2 or j >= stop or buf[j] != 0:
                break  # partial, empty topic (needs an alias), too short, or properties present
            msg = new_message(message_cls)
            msg.timestamp = now()
            msg.state = mqtt.mqtt_ms_invalid
            msg.dup = header & 0x08 != 0
            msg.mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0
            msg._topic = buf[i + 2:topic_end]
            msg.payload = buf[j + 1:stop]
            msg.qos = qos
            msg.retain = header & 0x01 != 0
            msg.info = None
            msg.properties = FastProperties(PacketTypes.PUBLISH)
            pos = sock._pos = stop
            n += 1
            handle(msg)
        if n:
            with self._msgtime_mutex:
                self._last_msg_in = now()
        return n

    def ack_many(self, mids: list[int]) -> None:
        """QoS 1 PUBACKs for ``mids``, in order, queued as one write: paho would otherwise wake its
        loop and make a send() syscall per 4-byte packet."""
        if mids:
            pack = _PUBACK.pack
            self._packet_queue(mqtt.PUBACK, b"".join([pack(0x40, 2, m) for m in mids]), 0, 0)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        if self._on_message_filtered._root._children or self.on_message is None:  # pragma: no cover
            return super()._handle_on_message(message)
        with self._in_callback_mutex:
            try:
                self.on_message(self, self._userdata, message)
            except Exception as err:  # noqa: BLE001 - same contract as paho's
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise


def _fast_client_fits() -> bool:
    """FastClient leans on paho 2.1 internals (pinned in setup.py); any other paho gets the plain client."""
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    return all(hasattr(probe, a) for a in ("_create_socket", "_on_message_filtered", "_in_callback_mutex",
                                           "_out_packet", "_userdata", "_easy_log", "_sock", "_packet_queue")) \
        and hasattr(probe._on_message_filtered, "_root")


FAST_CLIENT = _fast_client_fits()


def make_client(settings: Settings, client_id: str, manual_ack: bool = True) -> mqtt.Client:
    cls = FastClient if FAST_CLIENT else mqtt.Client
    client = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                 manual_ack=manual_ack, reconnect_on_failure=True)
    if settings.mqtt_bridge_user:
        client.username_pw_set(settings.mqtt_bridge_user, settings.mqtt_bridge_password or None)
    if settings.mqtt_tls_ca:
        try:
            client.tls_set(ca_certs=settings.mqtt_tls_ca)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"SENSORLAKE_MQTT_TLS_CA={settings.mqtt_tls_ca!r}: {exc}") from None
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.suppress_exceptions = True  # a bug in a callback must not kill the network thread
    return client


def connect_properties(session_expiry_s: int, receive_maximum: int | None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = max(0, min(MAX_SESSION_EXPIRY, int(session_expiry_s)))
    if receive_maximum:
        props.ReceiveMaximum = max(1, min(65535, int(receive_maximum)))
    return props


def reason_value(reason_code: Any) -> int:
    return int(getattr(reason_code, "value", reason_code) or 0)


def is_auth_failure(reason_code: Any) -> bool:
    return reason_value(reason_code) in AUTH_FAILURES


def auth_message(settings: Settings, reason_code: Any) -> str:
    return (f"MQTT broker {settings.mqtt_host}:{settings.mqtt_port} refused user "
            f"{settings.mqtt_bridge_user!r}: {reason_code} (check SENSORLAKE_MQTT_BRIDGE_USER/"
            f"SENSORLAKE_MQTT_BRIDGE_PASSWORD)")


def check_credentials(settings: Settings, timeout: float = 10.0) -> None:
    """One throw-away connection (own client id, clean session) to fail fast on bad credentials.

    Runs before the Kafka wait, so a wrong password is reported at once even when Kafka is down.
    An unreachable broker is not an error here: the session retries it with backoff.
    """
    client = make_client(settings, client_id_for(settings)[:200] + "-probe", manual_ack=False)
    client.reconnect_delay_set(1, 1)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties):  # noqa: ANN001
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=10, clean_start=True,
                       properties=connect_properties(0, None))
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"MQTT broker {settings.mqtt_host}:{settings.mqtt_port}: TLS: {exc}") from None
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        if client.loop(0.2) != mqtt.MQTT_ERR_SUCCESS and not done.is_set():
            break
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001
        pass
    rc = result.get("rc")
    if rc is not None and is_auth_failure(rc):
        raise ConfigError(auth_message(settings, rc))


class MqttSession:
    """The bridge's MQTT connection: subscribe on every connect, ack in order, track generations."""

    def __init__(self, settings: Settings, on_message: Callable[..., None], metrics: Any,
                 on_fatal: Callable[[str], None]) -> None:
        self.settings = settings
        self.client_id = client_id_for(settings)
        self.topic_filter = settings.mqtt_topic_prefix.strip("/") + "/#"
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.gen = 0
        self.lock = threading.Lock()
        self.connected = False
        self._connects = 0
        self._last_fail_log = 0.0
        self._stopping = False
        c = self.client = make_client(settings, self.client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_pre_connect = self._on_pre_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_message = on_message

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        s = self.settings
        self.client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=KEEPALIVE_S, clean_start=False,
                                  properties=connect_properties(s.bridge_session_expiry_s, s.bridge_max_inflight))
        self.client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """DISCONNECT (queued after any PUBACKs, so they go out first) and stop the network thread."""
        self._stopping = True
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001
            pass
        deadline = time.monotonic() + timeout
        thread = getattr(self.client, "_thread", None)
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.1)
        self.client.loop_stop()

    # ------------------------------------------------------------------ acks
    def ack_entries(self, entries: list) -> tuple[int, int]:
        """PUBACKs for the entries (in order) that belong to the current connection."""
        mids = []
        stale = 0
        with self.lock:
            gen = self.gen
            connected = self.connected
            for e in entries:
                if e.qos == 0:
                    continue
                if e.gen == gen and connected:
                    mids.append(e.mid)
                else:
                    stale += 1
            ack_many = getattr(self.client, "ack_many", None)
            if ack_many is not None:
                ack_many(mids)
            else:
                for mid in mids:
                    self.client.ack(mid, 1)
        return len(mids), stale

    # ------------------------------------------------------------------ callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            if is_auth_failure(reason_code):
                self.on_fatal(auth_message(self.settings, reason_code))
                client.disconnect()
                return
            log_event(log, logging.WARNING, "mqtt connection refused; retrying", reason=str(reason_code))
            return
        with self.lock:
            self.gen += 1
            self.connected = True
        self._connects += 1
        self.metrics.mqtt_connected.set(1)
        if self._connects > 1:
            self.metrics.reconnects.labels("mqtt").inc()
        log_event(log, logging.INFO if self._connects == 1 else logging.WARNING, "mqtt connected",
                  broker=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}", client_id=self.client_id,
                  session_present=bool(flags.session_present), topics=self.topic_filter)
        client.subscribe(self.topic_filter, qos=SUBSCRIBE_QOS)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        for rc in reason_codes:
            if rc.is_failure:
                self.on_fatal(f"MQTT broker refused the subscription to {self.topic_filter!r} for user "
                              f"{self.settings.mqtt_bridge_user!r}: {rc}")
                client.disconnect()
                return

    def _on_pre_connect(self, client, userdata) -> None:  # noqa: ANN001
        """Runs in ``reconnect()`` before the new socket exists. Normally ``_on_disconnect`` already
        ended the generation; paho has paths that reconnect without it, so end it here too and drop
        PUBACKs the acker may have queued after paho cleared its queue (they belong to the old
        connection; with ``manual_ack`` every queued PUBACK is ours)."""
        with self.lock:
            self.gen += 1
            self.connected = False
            out = getattr(client, "_out_packet", None)
            if out is not None:
                out.clear()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        with self.lock:
            self.gen += 1
            was_connected, self.connected = self.connected, False
        self.metrics.mqtt_connected.set(0)
        if was_connected and not self._stopping:
            log_event(log, logging.WARNING, "mqtt connection lost; reconnecting", reason=str(reason_code))

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        now = time.monotonic()
        if now - self._last_fail_log > 60:
            self._last_fail_log = now
            log_event(log, logging.WARNING, "mqtt broker unreachable; retrying with backoff",
                      broker=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}")

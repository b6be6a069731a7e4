"""The bridge's MQTT reading alone: paho's per-packet reader against our fast PUBLISH path.

No services: it builds ``--messages`` QoS 1 PUBLISH packets (the generator's JSON, one topic per
sensor), feeds them from memory through a socket stand-in, and counts the process CPU that
``loop_read`` spends until every message reached ``on_message``: paho's ``Client`` reading the
socket directly, and the bridge's ``FastClient`` behind its ``BufferedSocket``
(connectors/mqtt_kafka/mqtt_io.py). bench/bridge.py measures the whole bridge against live
brokers; this is the figure of docs/results.md B8 "in isolation". It imports the code of the
repository it lives in, so two commits compare by running it from a worktree of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402

from connectors.mqtt_kafka import mqtt_io  # noqa: E402
from tests.mqtt_wire import publish  # noqa: E402 - the packets the bridge's unit tests feed it


def stream(messages: int, sensors: int) -> bytes:
    packets = []
    for i in range(messages):
        sid = f"synthetic-{i % sensors:04d}"
        payload = json.dumps({"sensor_id": sid, "timestamp": "2026-12-03T10:00:00.000Z",
                              "value": 21.37, "unit": "C", "seq": i // sensors}).encode()
        packets.append(publish(f"sensors/{sid}".encode(), payload, mid=i % 65535 + 1))
    return b"".join(packets)


class _MemorySocket:
    """What paho reads from: the bytes given, then 'nothing more for now'."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._data):
            raise BlockingIOError()
        out = self._data[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def fileno(self) -> int:
        return -1

    def send(self, b: bytes) -> int:
        return len(b)

    def close(self) -> None:
        pass


def cpu_us_per_message(client_class: type, buffered: bool, data: bytes, messages: int) -> float:
    c = client_class(mqtt.CallbackAPIVersion.VERSION2, client_id="bench", protocol=mqtt.MQTTv5, manual_ack=True)
    seen = [0]

    def on_message(client, userdata, m):  # noqa: ANN001 - paho's callback
        seen[0] += 1
        m.topic, m.payload, m.mid, m.qos, m.dup  # what the bridge reads of each message

    c.on_message = on_message
    sock = _MemorySocket(data)
    c._sock = mqtt_io.BufferedSocket(sock) if buffered else sock
    t0 = time.process_time()
    while seen[0] < messages:
        if c.loop_read() != mqtt.MQTT_ERR_SUCCESS and seen[0] < messages:
            raise SystemExit(f"the reader stopped after {seen[0]:,} of {messages:,} messages")
    return (time.process_time() - t0) / messages * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--sensors", type=int, default=1_000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    if a.messages < 1 or a.sensors < 1 or a.repeat < 1:
        p.error("--messages, --sensors and --repeat must be at least 1")
    data = stream(a.messages, a.sensors)
    print(f"{a.messages:,} PUBLISH packets (QoS 1, {len(data) / a.messages:.0f} bytes each) from memory, "
          f"code of {REPO}", flush=True)
    for run in range(1, a.repeat + 1):
        paho = cpu_us_per_message(mqtt.Client, False, data, a.messages)
        fast = cpu_us_per_message(mqtt_io.FastClient, True, data, a.messages)
        print(f"run {run}: paho's reader {paho:.2f}  fast path {fast:.2f} µs of CPU per message", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MQTT packets as a broker sends them, for the bridge's unit tests and bench/mqtt_reader.py."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length)."""
    out = bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, qos: int = 1, mid: int = 1, dup: bool = False, retain: bool = False,
            props: bytes = b"\x00") -> bytes:
    """An MQTT 5 PUBLISH; ``props`` is the encoded property block (default: none)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + props + payload
    return bytes([0x30 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)]) + varint(len(body)) + body

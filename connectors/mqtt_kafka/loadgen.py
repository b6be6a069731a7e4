"""Seq-numbered QoS 1 readings for the bridge's integration tests and benchmark.

Runs in its own process (a publisher in the bridge's process would starve it through the GIL).
It records which readings the broker acknowledged (PUBACK), so a test can demand that exactly
those - and not merely "most" - arrive in Kafka. It keeps publishing across broker restarts
(paho queues and re-sends unacknowledged QoS 1 messages after reconnecting).

    python -m connectors.mqtt_kafka.loadgen --prefix sensors --sensors 5 --count 1000 --rate 200 \
        --summary /tmp/pub.json
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

from sensorlake.settings import Settings


def reading(sensor: str, seq: int, now: float, form: int) -> bytes:
    """A contract reading; ``form`` cycles through the timestamp forms of docs/design.md."""
    dt = datetime.fromtimestamp(now, timezone.utc)
    if form == 0:
        ts: object = dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif form == 1:
        ts = dt.replace(tzinfo=None).isoformat()  # no zone = UTC
    elif form == 2:
        ts = int(now * 1000)  # epoch ms
    else:
        ts = round(now, 3)  # epoch seconds
    doc = {"sensor_id": sensor, "timestamp": ts, "value": round(20 + (seq % 50) * 0.1, 2), "seq": seq,
           "metadata": {"unit": "C", "type": "temperature"}}
    return json.dumps(doc, separators=(",", ":")).encode()


def published(info: mqtt.MQTTMessageInfo) -> bool:
    """PUBACK received? paho's ``is_published`` raises for a message published while disconnected,
    although paho keeps it and sends it after reconnecting; read its flag directly then."""
    try:
        return info.is_published()
    except RuntimeError:
        return bool(getattr(info, "_published", False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefix", default=None, help="topic prefix (default: settings)")
    p.add_argument("--sensors", type=int, default=5)
    p.add_argument("--sensor-base", default="s", help="sensor ids are <base><n>")
    p.add_argument("--count", type=int, default=1000, help="readings per sensor")
    p.add_argument("--rate", type=float, default=0, help="total readings/s (0: as fast as possible)")
    p.add_argument("--client-id", default=f"loadgen-{os.getpid()}")
    p.add_argument("--summary", default="", help="write a JSON summary here at the end")
    p.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for PUBACKs at the end")
    p.add_argument("--inflight", type=int, default=1000)
    p.add_argument("--max-pending", type=int, default=20000, help="published but not yet PUBACKed")
    args = p.parse_args(argv)
    s = Settings.load()
    prefix = (args.prefix or s.mqtt_topic_prefix).strip("/")

    infos: list[tuple[mqtt.MQTTMessageInfo, str, int]] = []
    connected = threading.Event()
    stats = {"connects": 0}

    def on_connect(c, u, flags, rc, props):  # noqa: ANN001
        if not rc.is_failure:
            stats["connects"] += 1
            connected.set()

    def on_disconnect(c, u, flags, rc, props):  # noqa: ANN001
        connected.clear()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv311,
                    clean_session=True)
    c.username_pw_set(s.mqtt_generator_user, s.mqtt_generator_password or None)
    c.max_inflight_messages_set(args.inflight)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(0.2, 2)
    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    c.connect_async(s.mqtt_host, s.mqtt_port, keepalive=30)
    c.loop_start()
    if not connected.wait(30):
        print(json.dumps({"error": "could not connect"}), flush=True)
        return 1

    sensors = [f"{args.sensor_base}{i}" for i in range(args.sensors)]
    topics = {sid: f"{prefix}/{sid}" for sid in sensors}
    total = args.count * len(sensors)
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.time()
    n = done = 0
    for seq in range(args.count):
        for sid in sensors:
            now = time.time()
            while n - done >= args.max_pending:  # paho's 16-bit packet ids must not wrap in its queue
                if published(infos[done][0]):
                    done += 1
                else:
                    time.sleep(0.001)
            payload = reading(sid, seq, now, n % 4)
            info = c.publish(topics[sid], payload, qos=1)
            while info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                time.sleep(0.01)
                info = c.publish(topics[sid], payload, qos=1)
            infos.append((info, sid, seq))
            n += 1
            if interval:
                delay = start + n * interval - time.time()
                if delay > 0:
                    time.sleep(delay)
    published_s = time.time() - start
    deadline = time.time() + args.drain_timeout
    i = 0  # PUBACKs (is_published) arrive roughly in order, so scan forward
    while i < len(infos) and time.time() < deadline:
        if published(infos[i][0]):
            i += 1
        else:
            time.sleep(0.02)
    drained_s = time.time() - start
    c.disconnect()
    c.loop_stop()
    acked: dict[str, list[int]] = {}
    unacked = 0
    for info, sid, seq in infos:
        if published(info):
            acked.setdefault(sid, []).append(seq)
        else:
            unacked += 1
    summary = {"published": total, "acked": total - unacked, "unacked": unacked, "publish_seconds": published_s,
               "drained_seconds": drained_s, "connects": stats["connects"], "acked_seqs": acked}
    if args.summary:
        with open(args.summary, "w") as fh:
            json.dump(summary, fh)
    print(json.dumps({k: v for k, v in summary.items() if k != "acked_seqs"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

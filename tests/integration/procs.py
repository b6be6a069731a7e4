"""Processes the integration tests run next to the session's stack: bridges and generators.

Each runs as its own OS process, configured only through SENSORLAKE_* variables, exactly as the
local stack and docker-compose run it, and is stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------------------- the bridge process
class BridgeProc:
    """One bridge configuration (topic prefix, topics, client id); start/stop/kill it as often as needed."""

    def __init__(self, settings, workdir: Path, prefix: str | None = None, **env: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.settings = settings
        self.workdir = workdir
        self.prefix = prefix or f"{settings.mqtt_topic_prefix}/it-{tag}"
        self.topic = f"it.bridge.{tag}.raw"
        self.dlq = f"it.bridge.{tag}.dlq"
        self.bridge_id = f"it-{tag}"
        self.client_id = f"it-bridge-{tag}"
        self.port = free_port()
        self.env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO),
                    "SENSORLAKE_MQTT_TOPIC_PREFIX": self.prefix, "SENSORLAKE_KAFKA_TOPIC": self.topic,
                    "SENSORLAKE_KAFKA_DLQ_TOPIC": self.dlq, "SENSORLAKE_BRIDGE_ID": self.bridge_id,
                    "SENSORLAKE_BRIDGE_CLIENT_ID": self.client_id,
                    "SENSORLAKE_BRIDGE_METRICS_PORT": str(self.port), "SENSORLAKE_LOG_LEVEL": "INFO", **env}
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self, ready: bool = True) -> "BridgeProc":
        self.runs += 1
        self.log = self.workdir / f"bridge-{self.bridge_id}-{self.runs}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([PY, "-m", "connectors.mqtt_kafka"], env=self.env, cwd=self.workdir,
                                         stdout=log, stderr=subprocess.STDOUT)
        if ready:
            wait_for(lambda: self._ready(), 90, what=f"bridge ready (log {self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"bridge exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return self.metrics().get("sensorlake_bridge_mqtt_connected") == 1

    def metrics(self) -> dict[str, float]:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get("sensorlake_bridge_" + name, 0)

    def term(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class GeneratorProc:
    """`sensorlake generate` in its own process; ``report()`` is its JSON report (seqs sent)."""

    def __init__(self, settings, prefix: str, workdir: Path, *args: str) -> None:
        self.report_path = workdir / f"generator-{uuid.uuid4().hex[:6]}.json"
        env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO), "SENSORLAKE_MQTT_TOPIC_PREFIX": prefix}
        self.proc = subprocess.Popen(
            [PY, "-m", "iot_data_generator", "--client-id", f"it-gen-{uuid.uuid4().hex[:6]}",
             "--report", str(self.report_path), *args],
            env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def report(self, timeout: float = 180) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out
        return json.loads(self.report_path.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def create_topic(settings, topic: str, partitions: int = 3, timeout: float = 60) -> None:
    """Creates the topic and waits until every partition has a leader: a producer or KafkaIO that
    starts while the controller is still electing them (slow under load) gets NotLeader errors."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])

        def leaders_elected():
            (desc,) = admin.describe_topics([topic])
            parts = desc.get("partitions", [])
            return len(parts) == partitions and all(
                p.get("error_code", 0) == 0 and p.get("leader_id", p.get("leader", -1)) >= 0 for p in parts)
        wait_for(leaders_elected, timeout, interval=0.5, what=f"leaders of {topic}")
    finally:
        admin.close()


# ---------------------------------------------------------------------------- the challenge's generator
class ChallengePublisher:
    """The challenge's own generator as it is, in a thread of the test: a plain paho client (MQTT
    3.1.1, clean session, broker-assigned client id, keepalive 60) that logs in, never runs a
    network loop, and publishes ``{"id": ..., "dt": datetime.utcnow().isoformat(), "value": <int
    in range>}`` with QoS 0 to one topic; each sensor publishes, then sleeps ``interval_s``.

    ``whole_seconds``: sensors whose ``dt`` has no fraction (the challenge's form when the
    microsecond is 0). ``sent`` lists (sensor, dt, payload) in publish order.
    """

    def __init__(self, settings, topic: str, sensors: dict[str, tuple[int, int]], interval_s: float = 1.0,
                 whole_seconds: frozenset[str] = frozenset(), seed: int = 14) -> None:
        import random
        import threading

        import paho.mqtt.client as mqtt

        self.topic = topic
        self.sensors = sensors
        self.interval_s = interval_s
        self.whole_seconds = whole_seconds
        self.rng = random.Random(seed)
        self.sent: list[tuple[str, str, bytes]] = []
        self.stopped = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(settings.mqtt_generator_user, settings.mqtt_generator_password)
        self.client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=60)
        self.thread = threading.Thread(target=self._run, daemon=True, name="challenge-generator")

    def start(self) -> "ChallengePublisher":
        self.thread.start()
        return self

    def _run(self) -> None:
        import heapq
        from datetime import datetime, timezone

        heap = [(time.monotonic(), i, sid) for i, sid in enumerate(self.sensors)]
        while not self.stopped.is_set():
            at, i, sid = heap[0]
            if self.stopped.wait(max(0.0, at - time.monotonic())):
                break
            now = datetime.now(timezone.utc).replace(tzinfo=None)  # datetime.utcnow()
            if sid in self.whole_seconds:
                now = now.replace(microsecond=0)
            lo, hi = self.sensors[sid]
            payload = json.dumps({"id": sid, "dt": now.isoformat(), "value": self.rng.randint(lo, hi)})
            info = self.client.publish(self.topic, payload, qos=0)
            assert info.rc == 0, f"publish failed: {info.rc}"
            self.sent.append((sid, now.isoformat(), payload.encode()))
            heapq.heapreplace(heap, (time.monotonic() + self.interval_s, i, sid))  # publish, then sleep

    def stop(self) -> list[tuple[str, str, bytes]]:
        self.stopped.set()
        self.thread.join(10)
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - closing a client that never ran a loop
            pass
        return self.sent


def forget_session(settings, client_id: str) -> None:
    """Ends a stopped bridge's persistent session on the broker (so that it does not keep queueing
    what later tests publish under its subscription)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(settings.mqtt_bridge_user, settings.mqtt_bridge_password)
    props = Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    done = []
    c.on_connect = lambda *a: done.append(1)
    c.connect(settings.mqtt_host, settings.mqtt_port, clean_start=True, properties=props)
    c.loop_start()
    wait_for(lambda: done, 10, what=f"a clean session for {client_id}")
    c.disconnect()
    c.loop_stop()

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

    def __init__(self, settings, workdir: Path, **env: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.settings = settings
        self.workdir = workdir
        self.prefix = f"{settings.mqtt_topic_prefix}/it-{tag}"
        self.topic = f"it.bridge.{tag}.raw"
        self.dlq = f"it.bridge.{tag}.dlq"
        self.bridge_id = f"it-{tag}"
        self.port = free_port()
        self.env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO),
                    "SENSORLAKE_MQTT_TOPIC_PREFIX": self.prefix, "SENSORLAKE_KAFKA_TOPIC": self.topic,
                    "SENSORLAKE_KAFKA_DLQ_TOPIC": self.dlq, "SENSORLAKE_BRIDGE_ID": self.bridge_id,
                    "SENSORLAKE_BRIDGE_CLIENT_ID": f"it-bridge-{tag}",
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

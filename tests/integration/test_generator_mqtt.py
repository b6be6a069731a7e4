"""The generator against a real Mosquitto: QoS 1 delivery and the report agree with what arrived."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
REPO = Path(__file__).resolve().parents[2]

if not MOSQUITTO.exists():
    pytest.skip("needs /usr/sbin/mosquitto", allow_module_level=True)

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_mosquitto(tmp_path):
    """Starts a private broker on 127.0.0.1; yields a function (password_file or None) -> port."""
    procs: list[subprocess.Popen] = []

    def start(password_file: Path | None = None) -> int:
        port = _free_port()
        conf = tmp_path / f"mosquitto-{port}.conf"
        lines = [f"listener {port} 127.0.0.1", "persistence false"]
        if password_file:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines += ["allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it switches to 'mosquitto' and can't read tmp files
        conf.write_text("\n".join(lines) + "\n")
        log = open(tmp_path / f"mosquitto-{port}.log", "wb")
        proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {(tmp_path / log.name).read_text()}")
                time.sleep(0.05)

    yield start
    for proc in procs:  # stopped by PID, never by name
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Subscriber:
    """A QoS 1 subscriber on its own paho network thread."""

    def __init__(self, port: int, topic: str = "sensors/#") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id="test-subscriber", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, n: int, timeout: float = 15.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # catch anything beyond n
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_generator(port: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iot_data_generator", "--mqtt-port", str(port), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "SENSORLAKE_ENV_FILE": "/nonexistent"},
    )


def _valid_reading(payload: bytes) -> dict | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not all(k in doc for k in ("sensor_id", "timestamp", "value", "seq")):
        return None
    if not isinstance(doc["value"], (int, float)) or doc["value"] != doc["value"]:
        return None
    if not str(doc["timestamp"]).endswith("Z"):
        return None
    return doc


def _expand(ranges: list[list[int]]) -> set[int]:
    return {s for a, b in ranges for s in range(a, b + 1)}


def test_all_readings_arrive_with_qos1(private_mosquitto, tmp_path):
    port = private_mosquitto()
    sub = Subscriber(port)
    report_path = tmp_path / "report.json"
    try:
        t0 = time.monotonic()
        proc = run_generator(port, "--count", "200", "--rate", "400", "--seed", "3",
                             "--report", str(report_path))
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        received = sub.wait_for(200)
    finally:
        sub.close()
    report = json.loads(report_path.read_text())
    assert report["totals"]["sent"] == 200 and report["totals"]["unacked"] == 0
    assert len(received) == 200
    got = Counter()
    for topic, payload in received:
        doc = _valid_reading(payload)
        assert doc is not None, payload
        assert topic == f"sensors/{doc['sensor_id']}"
        got[(doc["sensor_id"], doc["seq"])] += 1
    assert max(got.values()) == 1
    expected = {(sid, s) for sid, e in report["sensors"].items() for s in _expand(e["seqs_sent"])}
    assert set(got) == expected
    assert 0.3 < elapsed < 20  # 200 readings at 400/s: paced, not instant


def test_faulty_run_matches_its_report(private_mosquitto, tmp_path):
    port = private_mosquitto()
    sub = Subscriber(port)
    report_path = tmp_path / "report.json"
    try:
        proc = run_generator(port, "--count", "400", "--rate", "1000", "--seed", "11",
                             "--drop-rate", "0.2", "--duplicate-rate", "0.1", "--malformed-rate", "0.05",
                             "--late-rate", "0.1", "--late-delay", "0.05:0.2", "--out-of-range-rate", "0.05",
                             "--report", str(report_path))
        assert proc.returncode == 0, proc.stderr
        t = json.loads(report_path.read_text())["totals"]
        received = sub.wait_for(t["sent"] + t["duplicates"] + t["malformed"])
    finally:
        sub.close()
    report = json.loads(report_path.read_text())
    readings, malformed = Counter(), 0
    for _, payload in received:
        doc = _valid_reading(payload)
        if doc is None:
            malformed += 1
        else:
            readings[(doc["sensor_id"], doc["seq"])] += 1
    assert malformed == t["malformed"] > 0
    assert sum(readings.values()) - len(readings) == t["duplicates"] > 0
    for sid, entry in report["sensors"].items():
        assert {s for (i, s) in readings if i == sid} == _expand(entry["seqs_sent"])
        assert entry["seq_max"] + 1 == entry["sent"] + entry["dropped"]


@pytest.mark.skipif(not MOSQUITTO_PASSWD.exists(), reason="needs mosquitto_passwd")
def test_bad_credentials_exit_2_without_traceback(private_mosquitto, tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run([str(MOSQUITTO_PASSWD), "-b", "-c", str(passwd), "generator", "right"],
                   check=True, capture_output=True)
    port = private_mosquitto(passwd)
    proc = run_generator(port, "--count", "5", "--mqtt-generator-password", "wrong")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "refused the connection" in lines[0], proc.stderr
    ok = run_generator(port, "--count", "5", "--mqtt-generator-password", "right")
    assert ok.returncode == 0, ok.stderr


def test_challenge_mode_publishes_the_challenges_messages_at_qos0(private_mosquitto, tmp_path):
    port = private_mosquitto()
    sub = Subscriber(port)
    report_path = tmp_path / "report.json"
    try:
        t0 = time.monotonic()
        proc = run_generator(port, "--generator-mode", "challenge", "--count", "10", "--report", str(report_path))
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        received = sub.wait_for(10)
    finally:
        sub.close()
    assert len(received) == 10 and {topic for topic, _ in received} == {"sensors"}
    docs = [json.loads(p) for _, p in received]
    assert all(list(d) == ["id", "dt", "value"] for d in docs)
    assert Counter(d["id"] for d in docs) == {f"Sensor {i}": 2 for i in range(1, 6)}
    report = json.loads(report_path.read_text())
    assert report["options"]["generator_mode"] == "challenge" and report["totals"]["sent"] == 10
    assert 1.0 <= elapsed < 20  # each sensor sleeps a second between its two messages

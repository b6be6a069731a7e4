"""The MQTT -> Kafka bridge against a real Mosquitto and a real Kafka.

Every test runs the bridge as ``python -m connectors.mqtt_kafka`` (its own process, configured
only through SENSORLAKE_* variables) and publishes seq-numbered QoS 1 readings from another
process (``connectors.mqtt_kafka.loadgen``). Loss is accounted per (sensor, seq): every reading
the broker acknowledged to the publisher must be in Kafka; duplicates are allowed only where a
crash makes them unavoidable. Each test uses its own topic prefix, Kafka topics and MQTT client
id, so tests never see each other's data.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

from tests.integration.procs import PY, REPO, BridgeProc, ChallengePublisher, wait_for


# ---------------------------------------------------------------------------- services
@pytest.fixture(scope="module")
def services(request):
    """The session's local stack, with Mosquitto and Kafka running (restarted after each use)."""
    stack = request.getfixturevalue("stack")
    for name in ("mosquitto", "kafka"):
        stack.start(name)
    yield stack
    for name in ("mosquitto", "kafka"):  # leave them up for whoever comes next
        stack.start(name)


@pytest.fixture
def bridges(services, tmp_path):
    made: list[BridgeProc] = []

    def make(**env: str) -> BridgeProc:
        b = BridgeProc(services.settings, tmp_path, **env)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


# ---------------------------------------------------------------------------- publisher and consumer
class Publisher:
    """loadgen in its own process; ``result()`` says which readings the broker acknowledged."""

    def __init__(self, settings, prefix: str, workdir: Path, sensors: int, count: int, rate: float) -> None:
        self.summary = workdir / f"pub-{uuid.uuid4().hex[:6]}.json"
        env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [PY, "-m", "connectors.mqtt_kafka.loadgen", "--prefix", prefix, "--sensors", str(sensors),
             "--count", str(count), "--rate", str(rate), "--summary", str(self.summary)],
            env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self, timeout: float = 120) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out
        res = json.loads(self.summary.read_text())
        res["acked_set"] = {(sid, seq) for sid, seqs in res["acked_seqs"].items() for seq in seqs}
        return res


def read_topic(settings, topic: str, min_records: int = 0, timeout: float = 30, settle: float = 1.0) -> list:
    """All records of a topic, read from the beginning (waits for at least ``min_records``)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             group_id=None, request_timeout_ms=30000)
    try:
        parts = wait_for(lambda: consumer.partitions_for_topic(topic), 30, what=f"topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            if got:
                quiet_since = time.monotonic()
            elif len(records) >= min_records and time.monotonic() - quiet_since >= settle:
                break
        return records
    finally:
        consumer.close()


def seqs(records) -> Counter:
    out: Counter = Counter()
    for r in records:
        try:
            d = json.loads(r.value)
            out[(d["sensor_id"], d["seq"])] += 1
        except (ValueError, KeyError, TypeError):
            pass
    return out


def wait_all_arrived(settings, topic: str, expected: set, timeout: float = 90) -> tuple[list, Counter]:
    """Reads the topic until every expected (sensor, seq) is there; returns records and counts."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_topic(settings, topic, min_records=len(expected), timeout=15)
        counts = seqs(records)
        missing = expected - counts.keys()
        if not missing or time.monotonic() > deadline:
            break
    assert not missing, f"{len(missing)} acknowledged readings never reached Kafka, e.g. {sorted(missing)[:10]}"
    return records, counts


def event_ms(ts) -> int:
    """The contract's timestamp forms, decoded independently of the bridge's parser."""
    if isinstance(ts, str):
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    return int(ts) if ts >= 1e11 else int(ts * 1000)


# ---------------------------------------------------------------------------- tests
def java_partition(key: bytes, partitions: int) -> int:
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_happy_path_once_each_in_order_with_key_headers_and_event_time(services, bridges, tmp_path):
    s = services.settings
    b = bridges().start()
    t0 = int(time.time() * 1000)
    pub = Publisher(s, b.prefix, tmp_path, sensors=5, count=200, rate=2000).result()
    assert pub["acked"] == 1000
    wait_for(lambda: b.metric("messages_forwarded_total") >= 1000, 30, what="1000 forwarded")
    wait_for(lambda: b.metric("mqtt_acks_total") >= 1000, 10, what="1000 acked")
    t1 = int(time.time() * 1000)
    m = b.metrics()
    records = read_topic(s, b.topic, min_records=1000)

    counts = seqs(records)
    assert len(records) == 1000 and set(counts) == pub["acked_set"] and set(counts.values()) == {1}
    by_sensor = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_sensor[r.key].append(r)
    assert set(by_sensor) == {f"s{i}".encode() for i in range(5)}
    for key, rs in by_sensor.items():
        assert len({r.partition for r in rs}) == 1, "one sensor, one partition"
        # the Java client's partition (murmur2), as before the producer was librdkafka
        assert rs[0].partition == java_partition(key, s.kafka_partitions), key
        assert [json.loads(r.value)["seq"] for r in rs] == list(range(200)), "per-sensor order kept"
        for r in rs:
            doc = json.loads(r.value)
            h = dict(r.headers)
            assert doc["sensor_id"].encode() == key
            assert h["mqtt_topic"] == f"{b.prefix}/{doc['sensor_id']}".encode()
            assert h["bridge_id"] == b.bridge_id.encode() and h["mqtt_dup"] == b"0"
            assert t0 - 1000 <= int(h["receive_ms"]) <= t1
            assert "timestamp_fallback" not in h
            assert abs(r.timestamp - event_ms(doc["timestamp"])) <= 1, (doc["timestamp"], r.timestamp)
    assert m["sensorlake_bridge_messages_received_total"] == 1000
    assert m["sensorlake_bridge_messages_duplicate_total"] == 0
    assert m["sensorlake_bridge_messages_in_flight"] == 0
    assert m["sensorlake_bridge_kafka_latency_seconds_count"] == 1000
    assert b.term() == 0
    assert read_topic(s, b.dlq, timeout=3) == []  # created, empty


def test_kill9_mid_stream_then_restart_loses_nothing(services, bridges, tmp_path):
    s = services.settings
    b = bridges().start()
    pub = Publisher(s, b.prefix, tmp_path, sensors=5, count=600, rate=300)  # ~10 s
    wait_for(lambda: b.metric("messages_forwarded_total") >= 500, 30, what="traffic")
    b.kill()
    time.sleep(1.0)  # the broker queues for the persistent session meanwhile
    b.start()
    res = pub.result()
    assert res["acked"] == 3000
    records, counts = wait_all_arrived(s, b.topic, res["acked_set"])
    dups = sum(counts.values()) - len(counts)
    print(f"kill -9: {len(records)} records for {len(counts)} readings, {dups} duplicates, "
          f"redelivered (DUP) after restart: {b.metric('messages_duplicate_total'):.0f}")
    assert b.term() == 0


# ---------------------------------------------------------------------------- QoS 0: the challenge's generator
def _challenge_sensors(n: int) -> dict[str, tuple[int, int]]:
    return {f"Sensor {i}": (0, 45) for i in range(1, n + 1)}


def _all_payloads_arrive(settings, topic: str, sent: list, timeout: float = 90) -> list:
    want = Counter(p for _, _, p in sent)
    deadline = time.monotonic() + timeout
    while True:
        records = read_topic(settings, topic, min_records=len(want), timeout=15)
        missing = want - Counter(r.value for r in records)
        if not missing or time.monotonic() > deadline:
            break
    assert not missing, f"{sum(missing.values())} QoS 0 messages never reached Kafka, e.g. {list(missing)[:3]}"
    return records


def _check_challenge_records(records, prefix: str) -> None:
    for r in records:
        doc = json.loads(r.value)
        assert r.key == doc["id"].encode(), "keyed by the payload's id (the topic names no sensor)"
        assert abs(r.timestamp - event_ms(doc["dt"])) <= 1, "stamped with dt"
        assert dict(r.headers)["mqtt_topic"] == prefix.encode()
    by_key = defaultdict(set)
    for r in records:
        by_key[r.key].add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values()), "one sensor, one partition"


def test_qos0_published_while_the_bridge_is_stopped_all_arrive_after_it_restarts(services, bridges):
    s = services.settings
    b = bridges().start()
    assert b.term() == 0  # stopped; its persistent session stays on the broker and queues
    # the challenge's generator, on the bridge's prefix itself (its single topic `sensors`)
    pub = ChallengePublisher(s, b.prefix, _challenge_sensors(5), interval_s=0.05).start()
    time.sleep(5)
    sent = pub.stop()
    assert len(sent) >= 300
    b.start()
    records = _all_payloads_arrive(s, b.topic, sent)
    assert len(records) == len(sent), "none twice: nothing was forwarded before the restart"
    _check_challenge_records(records, b.prefix)
    assert b.term() == 0


def test_qos0_kill9_mid_stream_then_restart_loses_nothing(services, bridges):
    s = services.settings
    b = bridges().start()
    pub = ChallengePublisher(s, b.prefix, _challenge_sensors(20), interval_s=0.1).start()  # ~200 msg/s
    try:
        wait_for(lambda: b.metric("messages_forwarded_total") >= 400, 30, what="traffic")
        b.kill()
        time.sleep(3)  # QoS 0 messages keep coming; the broker queues them for the bridge's session
        b.start()
        wait_for(lambda: b.metric("messages_forwarded_total") >= 400, 30, what="traffic after the restart")
    finally:
        sent = pub.stop()
    records = _all_payloads_arrive(s, b.topic, sent)
    _check_challenge_records(records, b.prefix)
    print(f"QoS 0, kill -9: {len(sent)} published, {len(records)} records in Kafka "
          f"({len(records) - len(set(r.value for r in records))} redelivered twice)")
    assert b.term() == 0


def test_kafka_down_20s_while_publishing_loses_nothing(services, bridges, tmp_path):
    s = services.settings
    inflight = 200
    b = bridges(SENSORLAKE_BRIDGE_MAX_INFLIGHT=str(inflight)).start()
    pub = Publisher(s, b.prefix, tmp_path, sensors=5, count=1000, rate=200)  # ~25 s
    wait_for(lambda: b.metric("messages_forwarded_total") >= 300, 30, what="traffic")
    services.stop("kafka")
    stalled = False
    max_in_flight = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = b.metrics()
            stalled |= m.get("sensorlake_bridge_kafka_stalled") == 1
            max_in_flight = max(max_in_flight, m.get("sensorlake_bridge_messages_in_flight", 0))
            assert b.proc.poll() is None, "bridge died while Kafka was down"
            time.sleep(0.5)
    finally:
        services.start("kafka")
    res = pub.result(timeout=180)
    assert res["acked"] == 5000
    records, counts = wait_all_arrived(s, b.topic, res["acked_set"], timeout=120)
    assert stalled, "the bridge should report Kafka as stalled (and hold acks) during the outage"
    assert max_in_flight <= inflight
    wait_for(lambda: b.metric("kafka_stalled") == 0, 30, what="kafka unstalled")
    assert b.metrics()['sensorlake_bridge_reconnects_total{target="kafka"}'] >= 1
    print(f"kafka outage: {len(records)} records for {len(counts)} readings, "
          f"{sum(counts.values()) - len(counts)} duplicates, max in flight {max_in_flight:.0f}")
    assert b.term() == 0


def test_mosquitto_restart_bridge_resubscribes_and_loses_nothing_the_broker_kept(services, bridges, tmp_path):
    s = services.settings
    b = bridges().start()
    pub = Publisher(s, b.prefix, tmp_path, sensors=5, count=600, rate=200)  # ~15 s
    wait_for(lambda: b.metric("messages_forwarded_total") >= 300, 30, what="traffic")
    services.stop("mosquitto")  # SIGTERM: mosquitto saves its persistence file
    try:
        wait_for(lambda: b.metric("mqtt_connected") == 0, 15, what="bridge to notice")
        time.sleep(2)
    finally:
        services.start("mosquitto")
    wait_for(lambda: b.metric("mqtt_connected") == 1, 60, what="bridge to reconnect")
    res = pub.result(timeout=120)
    records, counts = wait_all_arrived(s, b.topic, res["acked_set"])
    assert b.metrics()['sensorlake_bridge_reconnects_total{target="mqtt"}'] >= 1
    assert b.proc.poll() is None
    print(f"mosquitto restart: {res['acked']} acked by the broker, {len(counts)} readings in Kafka, "
          f"{sum(counts.values()) - len(counts)} duplicates")
    assert b.term() == 0


def test_oversized_to_dlq_and_garbage_forwarded_unchanged(services, bridges, tmp_path):
    import paho.mqtt.client as mqtt

    s = services.settings
    b = bridges(SENSORLAKE_BRIDGE_MAX_PAYLOAD_BYTES="4096").start()
    big = json.dumps({"sensor_id": "big", "timestamp": "2026-11-28T17:00:00Z", "pad": "x" * 10_000}).encode()
    future = json.dumps({"sensor_id": "f", "timestamp": "2999-01-01T00:00:00Z", "value": 1}).encode()
    garbage = [b"not json", b"\xff\xfe\x00\x01binary", b"", b"[]", b"{" * 50, b'{"timestamp": -1000}',
               b'{"sensor_id": "g", "value": "NaN", "timestamp": "noon"}', future]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"it-garbage-{uuid.uuid4().hex[:6]}")
    c.username_pw_set(s.mqtt_generator_user, s.mqtt_generator_password or None)
    c.connect(s.mqtt_host, s.mqtt_port)
    c.loop_start()
    try:
        infos = [c.publish(f"{b.prefix}/g{i}", p, qos=1) for i, p in enumerate(garbage)]
        infos.append(c.publish(f"{b.prefix}/big", big, qos=1))
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()
    wait_for(lambda: b.metric("mqtt_acks_total") >= len(garbage) + 1, 30, what="all acked")

    main = read_topic(s, b.topic, min_records=len(garbage))
    assert sorted(r.value for r in main) == sorted(garbage)  # byte for byte, none dropped
    by_value = {r.value: r for r in main}
    fut = by_value[future]
    assert dict(fut.headers)["timestamp_fallback"] == b"future"
    assert fut.timestamp == int(dict(fut.headers)["receive_ms"])
    assert dict(by_value[b"not json"].headers)["timestamp_fallback"] == b"no_timestamp"
    assert dict(by_value[b'{"timestamp": -1000}'].headers)["timestamp_fallback"] == b"before_epoch"

    (dead,) = read_topic(s, b.dlq, min_records=1)
    h = dict(dead.headers)
    assert dead.value == big and dead.key == b"big"
    assert h["dlq_reason"] == b"payload_too_large" and h["payload_bytes"] == str(len(big)).encode()
    assert h["mqtt_topic"] == f"{b.prefix}/big".encode()
    assert b.metrics()['sensorlake_bridge_messages_dlq_total{reason="payload_too_large"}'] == 1
    assert b.proc.poll() is None
    assert b.term() == 0


def test_wrong_password_fails_fast_with_one_line(services, bridges):
    b = bridges(SENSORLAKE_MQTT_BRIDGE_PASSWORD="definitely-wrong")
    t = time.monotonic()
    proc = subprocess.run([PY, "-m", "connectors.mqtt_kafka"], env=b.env, cwd=b.workdir, capture_output=True,
                          text=True, timeout=60)
    elapsed = time.monotonic() - t
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "refused user" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert elapsed < 20

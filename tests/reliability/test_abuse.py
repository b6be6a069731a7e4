"""Abuse: a flood of bad payloads among valid traffic, and the MQTT broker's access rules.

Fuzz: 10,000 generated bad payloads (random bytes, truncated JSON, wrong types, huge numbers,
deep nesting, 1 MB strings, invalid UTF-8, absurd timestamps), interleaved with seq-numbered valid
readings, are published over MQTT to the running stack. Every process stays up and the job does
not restart; every bad payload is in rejected/ with the reason the contract gives it (or, when
larger than the bridge's limit, on the DLQ topic with its reason); the counts per reason match
exactly; every valid reading is in raw/ once.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter

import duckdb
import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer

from pipelines import main
from sensorlake import flink_rest
from pipelines.parsing import Rejection, parse_reading
from sensorlake.registry import load_registry
from tests.conftest import fresh_taskmanager
from tests.integration.procs import BridgeProc, wait_for

pytestmark = pytest.mark.reliability

BAD = int(os.environ.get("SENSORLAKE_FUZZ_PAYLOADS", "10000"))
VALID = 2_000


def bad_payloads(n: int, rng: random.Random) -> list[bytes]:
    now = int(time.time())
    good = {"sensor_id": "1", "timestamp": now, "value": 21.5, "seq": 1}

    def doc(**kw):
        return json.dumps({**good, **kw}).encode()

    makers = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))),  # random bytes
        lambda: doc()[:rng.randrange(1, len(doc()) - 1)],  # truncated JSON
        lambda: doc(value=rng.choice(["21.5", True, None, [1], {"v": 1}])),  # wrong value types
        lambda: doc(sensor_id=rng.choice([None, 1.5, [], {}, True, "", "x" * 200])),
        lambda: doc(timestamp=rng.choice([[], {}, True, "yesterday", "2026-13-45T99:00:00"])),
        lambda: b'{"sensor_id": "1", "timestamp": %d, "value": 1e%d}' % (now, rng.randrange(309, 5000)),
        lambda: b'{"sensor_id": "1", "timestamp": %d, "value": %s}' % (now, b"9" * rng.randrange(5000, 6000)),
        lambda: b"[" * rng.randrange(10_000, 50_000) + b"]" * 3,  # deep nesting
        lambda: b'{"sensor_id": "1", "timestamp": 1, "value": "' + b"x" * 1_048_576 + b'"}',  # 1 MB
        lambda: b'{"sensor_id": "1\xff\xfe", "timestamp": 1, "value": 1}',  # invalid UTF-8
        lambda: doc(timestamp=rng.choice([-5, 10**20, "9999-12-31T23:59:59Z", "1969-12-31T00:00:00Z"])),
        lambda: rng.choice([b"", b"null", b"[]", b'"text"', b"42", b"NaN"]),
        lambda: doc(value=rng.choice([float("nan"), float("inf")])),  # json.dumps writes NaN/Infinity
        lambda: json.dumps({"timestamp": now, "value": 1}).encode(),  # no sensor_id
    ]
    out = []
    for i in range(n):
        maker = makers[i % len(makers)]
        if maker is makers[8] and i % (len(makers) * 200) != 8:  # a few 1 MB payloads, not 700
            maker = makers[0]
        out.append(maker())
    return out


def _rows(sql: str) -> list:
    try:
        return duckdb.connect().execute(sql).fetchall()
    except (duckdb.IOException, duckdb.InvalidInputException):
        return []


def _client(settings, user: str, password: str, client_id: str) -> tuple[mqtt.Client, int]:
    rc = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, password)
    c.on_connect = lambda cl, ud, flags, reason, props: rc.setdefault("rc", reason.value)
    c.connect("127.0.0.1", settings.mqtt_port)
    c.loop_start()
    deadline = time.monotonic() + 10
    while "rc" not in rc and time.monotonic() < deadline:
        time.sleep(0.05)
    return c, rc.get("rc", -1)


@pytest.fixture
def bridge(stack, tmp_path):
    for name in ("mosquitto", "kafka", "flink-jobmanager", "flink-taskmanager"):
        stack.start(name)
    fresh_taskmanager(stack)
    b = BridgeProc(stack.settings, tmp_path).start()
    yield b
    b.close()


def test_bad_payloads_are_rejected_with_reasons_and_nothing_goes_down(stack, bridge, tmp_path, capsys):
    settings = stack.settings.replace(lake=str(tmp_path / "lake"), kafka_topic=bridge.topic,
                       kafka_dlq_topic=bridge.dlq)
    name = f"sensorlake-fuzz-{uuid.uuid4().hex[:6]}"
    job = main.run(["--flush-seconds", "3", "--job-name", name, "--group-id", bridge.topic], settings=settings)
    try:
        rng = random.Random(20261128)
        bad = bad_payloads(BAD, rng)
        registry = load_registry(settings.registry)
        limit = settings.bridge_max_payload_bytes
        expected = Counter()
        for p in bad:
            if len(p) > limit:
                expected["dlq:payload_too_large"] += 1
                continue
            verdict = parse_reading(p, registry=registry, now_ms=int(time.time() * 1000))
            assert isinstance(verdict, Rejection), p[:80]  # the generator makes only bad payloads
            expected[verdict.reason_code] += 1
        assert "unparseable" not in expected
        valid = [(str(1 + i % 5), i // 5) for i in range(VALID)]

        pub, rc = _client(stack.settings, stack.settings.mqtt_generator_user,
                          stack.settings.mqtt_generator_password, f"fuzz-{uuid.uuid4().hex[:6]}")
        assert rc == 0
        order = [("bad", p) for p in bad] + [("good", v) for v in valid]
        rng.shuffle(order)
        infos = []
        now_ms = int(time.time() * 1000)
        for kind, item in order:
            if kind == "bad":
                topic, payload = f"{bridge.prefix}/fuzz-{rng.randrange(20)}", item
            else:
                sid, seq = item
                topic = f"{bridge.prefix}/{sid}"
                payload = json.dumps({"sensor_id": sid, "timestamp": now_ms + seq * 1000 - 600_000,
                                      "value": 20.0, "seq": seq}).encode()
            infos.append(pub.publish(topic, payload, qos=1))
            if len(infos) % 500 == 0:
                infos[-1].wait_for_publish(30)
        for info in infos:
            info.wait_for_publish(60)
        pub.loop_stop()
        pub.disconnect()

        rej = f"read_parquet('{settings.lake}/rejected/readings/**/*.parquet')"
        raw = f"read_parquet('{settings.lake}/raw/readings/**/*.parquet')"
        in_lake = BAD - expected["dlq:payload_too_large"]
        wait_for(lambda: (_rows(f"select count(*) from {rej}") or [(0,)])[0][0] >= in_lake
                 and (_rows(f"select count(*) from {raw}") or [(0,)])[0][0] >= VALID,
                 timeout=300, interval=2, what="every payload in rejected/ or raw/")
        time.sleep(5)  # one more flush: nothing more may appear

        got = Counter(dict(_rows(f"select reason_code, count(*) from {rej} group by 1")))
        consumer = KafkaConsumer(bridge.dlq, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=5000, max_partition_fetch_bytes=2 * 1024 * 1024)
        for record in consumer:
            got["dlq:" + dict(record.headers).get("dlq_reason", b"?").decode()] += 1
        consumer.close()
        assert got == expected
        assert not _rows(f"select * from {rej} where reason is null or reason = '' or payload is null")
        seqs = Counter(_rows(f"select sensor_id, seq from {raw}"))
        assert set(seqs) == set(valid) and max(seqs.values()) == 1

        # every process is up; the job never restarted
        core = {"mosquitto", "kafka", "flink-jobmanager", "flink-taskmanager", "expansion", "jobserver"}
        assert all(r["running"] for r in stack.status() if r["service"] in core), stack.status()
        assert bridge.proc.poll() is None
        jid = flink_rest.find_job(settings, name)["jid"]
        assert flink_rest.call(settings, f"/jobs/{jid}/exceptions").get("exceptionHistory", {}).get("entries") == []
        with capsys.disabled():
            print(f"\nfuzz: {BAD} bad payloads among {VALID} readings -> " +
                  ", ".join(f"{k} {v}" for k, v in sorted(got.items())))
    finally:
        flink_rest.cancel_job(settings, name, job)


def test_broker_refuses_anonymous_and_enforces_each_users_acl(stack):
    s = stack.settings
    anon, rc = _client(s, "", "", f"anon-{uuid.uuid4().hex[:6]}")
    anon.loop_stop()
    assert rc != 0  # 0x87/0x86: not authorized / bad user name or password

    # the generator may publish sensors/#, but never receives anything: the broker grants the
    # SUBSCRIBE (Mosquitto 2.0 answers it) and then delivers nothing its ACL does not allow to read
    gen, rc = _client(s, s.mqtt_generator_user, s.mqtt_generator_password, f"gen-{uuid.uuid4().hex[:6]}")
    assert rc == 0
    received = []
    gen.on_message = lambda c, ud, msg: received.append(msg.payload)
    granted = {}
    gen.on_subscribe = lambda c, ud, mid, codes, props: granted.setdefault("codes", [x.value for x in codes])
    topic = f"sensors/acl-{uuid.uuid4().hex[:6]}"
    gen.subscribe(topic, qos=1)
    wait_for(lambda: "codes" in granted, 10, what="SUBACK")
    watcher, rc = _client(s, s.mqtt_bridge_user, s.mqtt_bridge_password, f"watch-{uuid.uuid4().hex[:6]}")
    got = []
    watcher.on_message = lambda c, ud, msg: got.append(msg.payload)
    watcher.subscribe(topic, qos=1)
    time.sleep(0.5)
    gen.publish(topic, b"from the generator", qos=1).wait_for_publish(10)
    wait_for(lambda: got, 10, what="the bridge user receiving the generator's message")
    time.sleep(1)
    assert received == [] and got == [b"from the generator"]
    gen.loop_stop()
    gen.disconnect()
    watcher.loop_stop()
    watcher.disconnect()

    # the bridge may subscribe, but what it publishes is dropped by the broker
    br, rc = _client(s, s.mqtt_bridge_user, s.mqtt_bridge_password, f"br-{uuid.uuid4().hex[:6]}")
    assert rc == 0
    seen = []
    br.on_message = lambda c, ud, msg: seen.append(msg.payload)
    ok = {}
    br.on_subscribe = lambda c, ud, mid, codes, props: ok.setdefault("codes", [x.value for x in codes])
    topic = f"sensors/acl-{uuid.uuid4().hex[:6]}"
    br.subscribe(topic, qos=1)
    wait_for(lambda: "codes" in ok, 10, what="SUBACK")
    assert ok["codes"][0] < 0x80
    br.publish(topic, b"from the bridge", qos=1).wait_for_publish(10)
    time.sleep(1)
    assert seen == []
    br.loop_stop()
    br.disconnect()

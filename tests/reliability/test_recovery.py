"""Break every process of a live run on purpose; nothing may be lost or counted twice.

One live run: the generator publishes seq-numbered readings at the registry's natural rate (the
seed's five sensors, 1 Hz each), the bridge forwards them, the job writes the lake. In turn:
kill -9 the bridge, the Kafka broker, the Flink TaskManager and Mosquitto, each started again at
once, then stop the job with a savepoint and resubmit it from that savepoint. Recovery time =
from the fault to the first reading published after it being visible in raw/.

After the run: every reading the broker acknowledged to the generator is in raw/ exactly once;
the 1-minute quality rows hold one row per sensor-minute whose `received` equals raw's count for
that minute, i.e. no window lost its state or counted a replay twice.

SENSORLAKE_RELIABILITY_SCALE (default 1) multiplies the message rate and the quiet time between
faults; `make test-reliability` runs it at a larger scale.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter, defaultdict

import duckdb
import pytest
from kafka import KafkaProducer

from pipelines import main
from sensorlake import flink_rest
from tests.conftest import fresh_taskmanager
from tests.integration.procs import BridgeProc, GeneratorProc, wait_for

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("SENSORLAKE_RELIABILITY_SCALE", "1"))
SENSORS = ("1", "2", "3", "4", "5")


def _rows(sql: str) -> list:
    try:
        return duckdb.connect().execute(sql).fetchall()
    except (duckdb.IOException, duckdb.InvalidInputException):
        return []


class LiveRun:
    def __init__(self, stack, tmp_path):
        self.stack = stack
        self.tmp = tmp_path
        self.bridge = BridgeProc(stack.settings, tmp_path).start()
        self.settings = stack.settings.replace(lake=str(tmp_path / "lake"), kafka_topic=self.bridge.topic)
        self.name = f"sensorlake-rel-{uuid.uuid4().hex[:6]}"
        self.raw = f"read_parquet('{self.settings.lake}/raw/readings/**/*.parquet')"
        self.job = None
        self.gen = None

    def submit(self, savepoint: str = "") -> None:
        argv = ["--flush-seconds", "3", "--window-flush-seconds", "2", "--job-name", self.name,
                "--group-id", self.bridge.topic] + (["--savepoint-path", savepoint] if savepoint else [])
        self.job = main.run(argv, settings=self.settings)
        self.wait_checkpointed()

    def wait_checkpointed(self) -> str:
        def ready():
            job = flink_rest.find_job(self.settings, self.name)
            return job and job["state"] == "RUNNING" and flink_rest.completed_checkpoints(
                self.settings, job["jid"]) > 0 and job["jid"]
        return wait_for(ready, 300, interval=2, what=f"job {self.name} running with a checkpoint")

    def newest_event_ms(self) -> int:
        got = _rows(f"select epoch_ms(max(event_time)) from {self.raw}")
        return got[0][0] or 0 if got else 0

    def recover(self, what: str, fault, restart) -> float:
        t0 = time.monotonic()
        fault()
        restart()
        back = int(time.time() * 1000)
        wait_for(lambda: self.newest_event_ms() > back, 300, interval=1,
                 what=f"a reading published after the {what} came back, in raw/")
        return time.monotonic() - t0

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()
        if self.job is not None:
            flink_rest.cancel_job(self.settings, self.name, self.job)
        self.bridge.close()


@pytest.fixture
def live(stack, tmp_path):
    for name in ("mosquitto", "kafka", "flink-jobmanager", "flink-taskmanager"):
        stack.start(name)
    fresh_taskmanager(stack)
    run = LiveRun(stack, tmp_path)
    yield run
    run.close()
    for name in ("mosquitto", "kafka", "flink-jobmanager", "flink-taskmanager"):
        stack.start(name)  # leave the stack whole for whoever comes next


def test_kill9_each_process_and_resubmit_from_savepoint_loses_and_duplicates_nothing(live, capsys):
    stack = live.stack
    live.submit()
    live.gen = GeneratorProc(live.settings, live.bridge.prefix, live.tmp, "--rate", str(5 * SCALE),
                             "--seed", "20261128", "--ack-timeout", "300")
    quiet = 5 * SCALE

    def pause():
        time.sleep(quiet)

    pause()
    recovery = {}
    recovery["bridge"] = live.recover("bridge", live.bridge.kill, live.bridge.start)
    pause()
    recovery["kafka"] = live.recover("Kafka broker", lambda: stack.kill("kafka"), lambda: stack.start("kafka"))
    pause()
    recovery["taskmanager"] = live.recover("TaskManager", lambda: stack.kill("flink-taskmanager"),
                                           lambda: stack.start("flink-taskmanager"))
    live.wait_checkpointed()
    pause()
    recovery["mosquitto"] = live.recover("Mosquitto", lambda: stack.kill("mosquitto"),
                                         lambda: stack.start("mosquitto"))
    pause()
    savepoints = live.tmp / "savepoints"

    def stop():
        jid = live.wait_checkpointed()
        live.savepoint = flink_rest.stop_with_savepoint(live.settings, jid, f"file://{savepoints}")

    recovery["job (savepoint, resubmit)"] = live.recover("job", stop, lambda: live.submit(live.savepoint))
    pause()

    live.gen.proc.send_signal(signal.SIGINT)
    report = live.gen.report()
    live.gen = None
    # one reading per sensor far ahead closes every minute the run produced
    producer = KafkaProducer(bootstrap_servers=live.settings.kafka_bootstrap, acks="all")
    close_ms = int(time.time() * 1000) + 120_000
    for sid in SENSORS:
        producer.send(live.bridge.topic, key=sid.encode(), timestamp_ms=close_ms, value=json.dumps(
            {"sensor_id": sid, "timestamp": close_ms, "value": 20.0, "seq": 10**9}).encode())
    producer.flush()
    producer.close()

    sent = {sid: {s for lo, hi in report["sensors"][sid]["seqs_sent"] for s in range(lo, hi + 1)} for sid in SENSORS}
    want = sum(map(len, sent.values()))
    wait_for(lambda: (_rows(f"select count(distinct (sensor_id, seq)) from {live.raw} where seq < 1000000000")
                      or [(0,)])[0][0] >= want, 240, interval=2, what="every acknowledged reading in raw/")
    time.sleep(6)  # the last window flushes

    raw = defaultdict(list)
    per_minute = Counter()
    for sid, seq, minute in _rows(f"select sensor_id, seq, epoch_ms(time_bucket(interval 1 minute, event_time)) "
                                  f"from {live.raw} where seq < 1000000000"):
        raw[sid].append(seq)
        per_minute[(sid, minute)] += 1
    for sid in SENSORS:
        counts = Counter(raw[sid])
        assert not [s for s, n in counts.items() if n > 1], f"sensor {sid}: readings twice in raw/"
        assert sent[sid] <= set(counts), f"sensor {sid}: lost {sorted(sent[sid] - set(counts))[:20]}"
    # readings published but never acknowledged (a broker killed mid-flight) may or may not arrive
    assert sum(len(set(raw[sid]) - sent[sid]) for sid in SENSORS) <= report["totals"]["unacked"]

    qual = f"read_parquet('{live.settings.lake}/quality/sensor_quality_1min/**/*.parquet')"
    rows = _rows(f"select sensor_id, epoch_ms(window_start), received, duplicates, version from {qual}")
    keys = Counter((sid, start) for sid, start, *_ in rows)
    assert not [k for k, n in keys.items() if n > 1], "two quality rows for one sensor-minute"
    last_full = close_ms - close_ms % 60_000 - 120_000  # minutes before it are closed for every sensor
    checked = 0
    for sid, start, received, _dups, _v in rows:
        if start < last_full and (sid, start) in per_minute:
            assert received == per_minute[(sid, start)], (sid, start, received, per_minute[(sid, start)])
            checked += 1
    closed = {k for k in per_minute if k[1] < last_full}
    assert checked == len(closed) >= len(SENSORS), "a closed sensor-minute without its quality row"
    cur = f"read_parquet('{live.settings.lake}/curated/readings_1min/**/*.parquet')"
    cur_keys = Counter(_rows(f"select sensor_id, window_start from {cur}"))
    assert not [k for k, n in cur_keys.items() if n > 1], "two curated rows for one sensor-minute"

    with capsys.disabled():
        print("\nrecovery (fault -> first reading published afterwards visible in raw/):")
        for what, seconds in recovery.items():
            print(f"  {what:<28} {seconds:6.1f} s")
        print(f"  readings acknowledged: {want}, in raw: {sum(len(set(v)) for v in raw.values())}, "
              f"quality rows checked against raw: {checked}")

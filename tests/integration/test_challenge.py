"""The challenge's own generator, as it is, against the whole local stack: Mosquitto -> the bridge
-> Kafka -> the lake job on Flink -> the lake, read through `sensorlake sql`'s views.

A plain paho client does what the challenge's generator does (tests/integration/procs.py,
ChallengePublisher): MQTT 3.1.1, clean session, no network loop, QoS 0, the single topic
`sensors`, `{"id": "Sensor N", "dt": datetime.utcnow().isoformat(), "value": <int>}`, each of the
challenge's five sensors publishing and then sleeping a second. Sensor 5 sends `dt` without a
fraction (the challenge's form when the microsecond is 0), the others with microseconds.

One job, one run of four whole minutes from a minute boundary:
  minutes 0-1  undisturbed;
  minutes 2-3  the bridge killed (kill -9, by pid) for 10 s across the boundary between them.
For each part: every message published is in raw/ exactly once, with sensor_id "Sensor N" and its
dt as event time; each sensor-minute has its 1-minute row (count and mean of what was sent) and an
`ok` quality row whose `received` is what was sent. Nothing is rejected.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

import duckdb
import pytest

from pipelines import main
from sensorlake import flink_rest, sql
from sensorlake.contract import iso_to_ms
from sensorlake.registry import load_registry
from tests.integration.procs import BridgeProc, ChallengePublisher, forget_session, wait_for

pytestmark = pytest.mark.integration

WHOLE_SECONDS = frozenset({"Sensor 5"})
MINUTES = 4
KILL_AT_S, KILLED_S = 175, 10  # from the first minute's start: 10 s across minutes 2 and 3


def _query(lake: str, query: str, params=None) -> list:
    try:
        con = sql.connect(lake)
    except duckdb.Error:
        return []
    try:
        return con.execute(query, params or []).fetchall()
    except (duckdb.IOException, duckdb.InvalidInputException):
        return []  # a file being replaced under the query: ask again
    finally:
        con.close()


@pytest.fixture
def challenge_run(stack, tmp_path):
    for name in ("mosquitto", "kafka"):
        stack.start(name)
    # The challenge's single topic `sensors` is the bridge's prefix itself.
    bridge = BridgeProc(stack.settings, tmp_path, prefix="sensors").start()
    name = f"sensorlake-challenge-{bridge.bridge_id}"
    settings = stack.settings.replace(lake=str(tmp_path / "lake"), kafka_topic=bridge.topic,
                                      mqtt_topic_prefix="sensors", job_name=name)
    run = {"bridge": bridge, "settings": settings, "job": None, "publisher": None, "name": name}
    yield run
    if run["publisher"] is not None:
        run["publisher"].stop()
    if run["job"] is not None:
        flink_rest.cancel_job(settings, run["name"], run["job"])
    bridge.close()
    forget_session(stack.settings, bridge.client_id)  # its `sensors/#` session would queue later tests' data


def test_the_challenges_generator_as_it_is_with_and_without_a_bridge_kill(challenge_run):
    run = challenge_run
    bridge, settings = run["bridge"], run["settings"]
    lake = settings.lake
    sensors = {sid: (int(s.range_min), int(s.range_max)) for sid, s in load_registry(settings.registry).items()}
    assert sorted(sensors) == [f"Sensor {i}" for i in range(1, 6)]

    # The generator starts at once and the job meanwhile (it reads the topic from the earliest
    # offset, so what is published before it runs is not missed); the four minutes start at the
    # first whole minute the generator covers.
    started = time.time()
    pub = run["publisher"] = ChallengePublisher(settings, "sensors", sensors, whole_seconds=WHOLE_SECONDS).start()
    run["job"] = main.run(["--flush-seconds", "3", "--window-flush-seconds", "2", "--group-id", bridge.topic],
                          settings=settings)
    m0 = (int(started + 1) // 60 + 1) * 60  # epoch s

    time.sleep(max(0.0, m0 + KILL_AT_S - time.time()))
    bridge.kill()  # kill -9, by pid
    killed_at = time.time()
    time.sleep(KILLED_S)
    bridge.start()
    outage = (killed_at, time.time())

    # Everything up to the end of minute 3, and minute 3 closed (a reading 10 s past it), visible.
    end_ms = (m0 + MINUTES * 60) * 1000

    def in_the_four_minutes():
        return [(sid, dt, p) for sid, dt, p in list(pub.sent) if m0 * 1000 <= iso_to_ms(dt) < end_ms]

    def complete():
        if time.time() < m0 + MINUTES * 60 + 15:
            return False
        want = len(in_the_four_minutes())
        got = _query(lake, "SELECT count(*) FROM readings WHERE event_time >= epoch_ms(?) AND event_time < "
                           "epoch_ms(?)", [m0 * 1000, end_ms])
        closed = _query(lake, "SELECT count(*) FROM sensor_quality WHERE window_start >= epoch_ms(?) AND "
                              "window_start < epoch_ms(?)", [m0 * 1000, end_ms])
        return got and got[0][0] >= want and closed and closed[0][0] >= MINUTES * len(sensors)
    try:
        wait_for(complete, 420, interval=3, what="every message of the four minutes in raw/ and their quality rows")
    except AssertionError:
        job = flink_rest.find_job(settings, run["name"])
        checkpoints = flink_rest.completed_checkpoints(settings, job["jid"]) if job else None
        raise AssertionError(f"not complete: job {job}, completed checkpoints {checkpoints}, published "
                             f"{len(pub.sent)}, raw rows {_query(lake, 'SELECT count(*) FROM readings')}, "
                             f"quality rows {_query(lake, 'SELECT count(*) FROM sensor_quality')}") from None
    time.sleep(4)  # one more flush: nothing more may appear
    pub.stop()
    run["publisher"] = None

    sent = in_the_four_minutes()
    by_minute: dict[tuple[str, int], list[int]] = defaultdict(list)
    for sid, dt, payload in sent:
        by_minute[(sid, (iso_to_ms(dt) // 1000 - m0) // 60)].append(json.loads(payload)["value"])
    assert all(("." in dt) == (sid not in WHOLE_SECONDS) for sid, dt, _ in sent)  # with and without a fraction

    # raw/: every message once, as it was sent
    raw = _query(lake, "SELECT sensor_id, epoch_ms(event_time), value, seq, registered, payload, mqtt_topic "
                       "FROM readings WHERE event_time >= epoch_ms(?) AND event_time < epoch_ms(?)",
                 [m0 * 1000, end_ms])
    assert Counter(bytes(r[5]) for r in raw) == Counter(p for _, _, p in sent), "each message once in raw/"
    for sid, event_ms, value, seq, registered, payload, topic in raw:
        doc = json.loads(payload)
        assert (sid, event_ms, value, seq, registered, topic) == (doc["id"], iso_to_ms(doc["dt"]), doc["value"], None,
                                                                   True, "sensors")
    assert not _query(lake, "SELECT * FROM rejected"), "nothing rejected"

    # curated/ and quality/: each sensor-minute, from what was sent
    curated = {(sid, (ws // 1000 - m0) // 60): (count, mean) for sid, ws, count, mean in _query(
        lake, "SELECT sensor_id, epoch_ms(window_start), count, mean FROM readings_1min "
              "WHERE window_start >= epoch_ms(?) AND window_start < epoch_ms(?)", [m0 * 1000, end_ms])}
    quality = {(sid, (ws // 1000 - m0) // 60): (received, status, dups) for sid, ws, received, status, dups in _query(
        lake, "SELECT sensor_id, epoch_ms(window_start), received, status, duplicates FROM sensor_quality "
              "WHERE window_start >= epoch_ms(?) AND window_start < epoch_ms(?)", [m0 * 1000, end_ms])}
    keys = {(sid, m) for sid in sensors for m in range(MINUTES)}
    assert set(by_minute) == set(curated) == set(quality) == keys
    for key in sorted(keys):
        values = by_minute[key]
        assert 58 <= len(values) <= 60, (key, len(values))  # 1 Hz, each sensor sleeping after its publish
        count, mean = curated[key]
        assert count == len(values) and mean == pytest.approx(statistics.fmean(values)), key
        received, status, _dups = quality[key]
        assert (received, status) == (len(values), "ok"), key
    redelivered = sum(q[2] for q in quality.values())
    print(f"\nchallenge run: {len(sent)} messages over {MINUTES} minutes in raw/ once each; bridge killed "
          f"{outage[1] - outage[0]:.1f} s at +{outage[0] - m0:.0f} s; redeliveries removed: {redelivered}; "
          f"kill at {datetime.fromtimestamp(outage[0], timezone.utc):%H:%M:%S}Z")

"""The IoT data generator without a broker: values, faults, determinism, report, CLI errors."""

from __future__ import annotations

import argparse
import json
import math
import re
import socket
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from iot_data_generator import cli
from iot_data_generator.generator import (
    DUPLICATE,
    MALFORMED,
    READING,
    ChallengeStream,
    FaultRates,
    GeneratorConfig,
    Ledger,
    RangeSet,
    ReadingStream,
    compact_ranges,
    registry_document,
    simulate,
    with_synthetic,
)
from pipelines.parsing import parse_reading
from sensorlake.registry import load_registry, parse_registry
from sensorlake.settings import DEFAULT_REGISTRY

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 28, 17, 0, 0, tzinfo=timezone.utc)
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(scope="module")
def registry():
    return load_registry(DEFAULT_REGISTRY)


def make_config(registry, **kw) -> GeneratorConfig:
    kw.setdefault("start", START)
    kw.setdefault("seed", 42)
    return GeneratorConfig(sensors=kw.pop("sensors", registry), **kw)


def all_faults(rates: FaultRates, sensors) -> dict:
    return {sid: rates for sid in sensors}


def contract_error(payload: bytes) -> str | None:
    """What the pipeline's validation would say about a payload (None: a valid reading)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "not json"
    if not isinstance(doc, dict):
        return "not an object"
    for key in ("sensor_id", "timestamp", "value"):
        if key not in doc:
            return f"missing {key}"
    v = doc["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "bad value"
    if not isinstance(doc["timestamp"], str) or not TS_RE.match(doc["timestamp"]):
        return "bad timestamp"
    return None


def readings_by_sensor(messages) -> dict[str, list]:
    out = defaultdict(list)
    for m in messages:
        if m.meta.kind == READING:
            out[m.meta.sensor_id].append(m)
    return out


# ----------------------------------------------------------------------------- format
def test_payloads_match_the_contract(registry):
    messages, _ = simulate(make_config(registry, count=500))
    assert len(messages) == 500
    seqs = defaultdict(list)
    for topic, payload, meta in messages:
        doc = json.loads(payload)
        assert set(doc) == {"sensor_id", "timestamp", "value", "seq", "metadata"}
        sid = doc["sensor_id"]
        assert isinstance(sid, str) and topic == f"sensors/{sid}" and meta.sensor_id == sid
        assert isinstance(doc["value"], float) and math.isfinite(doc["value"])
        assert isinstance(doc["seq"], int) and doc["seq"] == meta.seq
        assert TS_RE.match(doc["timestamp"]), doc["timestamp"]
        ts = datetime.fromisoformat(doc["timestamp"])
        assert ts.utcoffset() == timedelta(0)
        assert doc["metadata"] == {"unit": registry[sid].unit, "type": registry[sid].type}
        assert contract_error(payload) is None
        seqs[sid].append(doc["seq"])
    assert set(seqs) == set(registry)
    for sid, s in seqs.items():
        assert s == list(range(len(s))), sid  # per-sensor counter from 0, step 1


def test_topic_prefix_is_configurable(registry):
    messages, _ = simulate(make_config(registry, count=5, topic_prefix="plant/a/"))
    assert [m.topic for m in messages] == [f"plant/a/{sid}" for sid in registry]


# ----------------------------------------------------------------------------- values
def test_values_stay_in_range_and_move_smoothly(registry):
    messages, _ = simulate(make_config(registry, count=10_000))
    for sid, msgs in readings_by_sensor(messages).items():
        sensor = registry[sid]
        span = sensor.range_max - sensor.range_min
        values = [json.loads(m.payload)["value"] for m in msgs]
        assert all(sensor.range_min <= v <= sensor.range_max for v in values)
        steps = [abs(a - b) for a, b in zip(values, values[1:])]
        assert max(steps) < 0.02 * span  # 0.9 C for 0..45 C at one reading per second
        assert statistics.mean(steps) < 0.005 * span  # uniform random would be ~span / 3
        assert statistics.pstdev(values) > 0  # not a constant either


def test_values_follow_a_daily_curve(registry):
    # One reading per minute (intervals scaled by 60) over a whole day from midnight UTC.
    midnight = START.replace(hour=0)
    messages, _ = simulate(make_config(registry, start=midnight, count=5 * 1440, interval_scale=60))
    for sid, msgs in readings_by_sensor(messages).items():
        values = [json.loads(m.payload)["value"] for m in msgs]
        assert len(values) == 1440
        hourly = [statistics.mean(values[h * 60:(h + 1) * 60]) for h in range(24)]
        assert max(hourly) - min(hourly) > 0.1 * 45  # a real day/night swing
        local_solar = (hourly.index(max(hourly)) + registry[sid].lng / 15) % 24
        assert 11 <= local_solar <= 19, sid  # warmest in the afternoon, local solar time


def test_out_of_range_stays_in_range_for_synthetic_sensors_too(registry):
    sensors = with_synthetic(registry, 20)
    messages, _ = simulate(make_config(registry, sensors=sensors, count=2500))
    for m in messages:
        s = sensors[m.meta.sensor_id]
        assert s.range_min <= json.loads(m.payload)["value"] <= s.range_max


# ----------------------------------------------------------------------------- faults
def test_fault_rates_within_tolerance(registry):
    rates = FaultRates(drop=0.4, out_of_range=0.1, malformed=0.1, duplicate=0.1, late=0.1)
    messages, report = simulate(make_config(registry, count=10_000, faults=all_faults(rates, registry)))
    t = report["totals"]
    assert t["generated"] == 10_000
    assert t["sent"] + t["dropped"] == 10_000
    assert t["dropped"] / 10_000 == pytest.approx(0.4, abs=0.03)
    assert t["malformed"] / 10_000 == pytest.approx(0.1, abs=0.02)  # per generated reading
    for name in ("out_of_range", "duplicates", "late"):  # per published reading
        assert t[name] / t["sent"] == pytest.approx(0.1, abs=0.02), name
    kinds = defaultdict(int)
    for m in messages:
        kinds[m.meta.kind] += 1
    assert kinds == {READING: t["sent"], DUPLICATE: t["duplicates"], MALFORMED: t["malformed"]}


def test_fault_payloads_look_like_their_fault(registry):
    rates = FaultRates(out_of_range=0.2, malformed=0.2, duplicate=0.2, late=0.2)
    config = make_config(registry, count=3000, faults=all_faults(rates, registry), late_delay_s=(30, 90))
    messages, _ = simulate(config)
    start_us = int(START.timestamp() * 1e6)
    last_regular = 0
    for i, (topic, payload, meta) in enumerate(messages):
        sensor = registry[meta.sensor_id]
        if meta.kind == MALFORMED:
            assert contract_error(payload) is not None, payload
            assert meta.seq is None and b'"seq"' not in payload  # never shadows a real reading
            continue
        doc = json.loads(payload)
        assert contract_error(payload) is None
        assert doc["value"] > sensor.range_max or doc["value"] < sensor.range_min if meta.out_of_range \
            else sensor.range_min <= doc["value"] <= sensor.range_max
        if meta.kind == DUPLICATE:
            prev = messages[i - 1]
            assert prev.payload == payload and prev.meta.kind == READING
        if meta.late:
            # Original timestamp, published 30-90 s of event time after its slot.
            assert datetime.fromisoformat(doc["timestamp"]) == START + timedelta(microseconds=meta.event_us - start_us)
            delay_s = (meta.offset_us - (meta.event_us - start_us)) / 1e6
            assert 30 <= delay_s <= 90 + 1  # plus the sensor's publish stagger (< 1 interval)
            # Released on time: after every reading scheduled before it, and (unless it was still
            # held when the stream ended at 599 s) no later than the next one-second slot.
            assert last_regular <= meta.offset_us
            if meta.offset_us <= 599e6:
                assert last_regular >= meta.offset_us - 1e6
        else:
            last_regular = meta.offset_us


def test_per_sensor_rates_and_fault_sensors(registry):
    ns = cli_args(["--drop-rate", "Sensor 2=0.5", "--duplicate-rate", "0.3", "--fault-sensor", "Sensor 4"])
    faults = cli._fault_rates(ns, registry)
    assert set(faults) == {"Sensor 2", "Sensor 4"}
    assert faults["Sensor 2"] == FaultRates(drop=0.5)
    assert faults["Sensor 4"] == FaultRates(duplicate=0.3)
    _, report = simulate(make_config(registry, count=5000, faults=faults))
    s = report["sensors"]
    s2, s4 = s["Sensor 2"], s["Sensor 4"]
    assert s2["dropped"] / 1000 == pytest.approx(0.5, abs=0.05) and s2["duplicates"] == 0
    assert s4["duplicates"] / s4["sent"] == pytest.approx(0.3, abs=0.05) and s4["dropped"] == 0
    for sid in ("Sensor 1", "Sensor 3", "Sensor 5"):
        assert s[sid]["sent"] == 1000 and s[sid]["dropped"] == s[sid]["duplicates"] == 0


def test_plain_rate_applies_to_every_sensor_without_fault_sensor(registry):
    faults = cli._fault_rates(cli_args(["--drop-rate", "0.1", "--drop-rate", "Sensor 3=0"]), registry)
    # the per-sensor 0 overrides the plain rate
    assert set(faults) == {"Sensor 1", "Sensor 2", "Sensor 4", "Sensor 5"}


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_payloads_different_seed_different(registry):
    rates = all_faults(FaultRates(drop=0.2, malformed=0.1, duplicate=0.1, late=0.1, out_of_range=0.05), registry)
    a, _ = simulate(make_config(registry, count=2000, seed=7, faults=rates))
    b, _ = simulate(make_config(registry, count=2000, seed=7, faults=rates))
    c, _ = simulate(make_config(registry, count=2000, seed=8, faults=rates))
    assert [(m.topic, m.payload) for m in a] == [(m.topic, m.payload) for m in b]
    assert [m.payload for m in a] != [m.payload for m in c]


def test_extra_sensors_do_not_change_the_seed_sensors(registry):
    plain, _ = simulate(make_config(registry, count=500))
    more, _ = simulate(make_config(registry, sensors=with_synthetic(registry, 3), count=800))
    assert [m.payload for m in plain] == [m.payload for m in more if m.meta.sensor_id in registry]


def test_cli_dry_run_is_deterministic(capsys):
    argv = ["--dry-run", "--count", "200", "--seed", "5", "--start-time", "2026-11-28T17:00:00Z",
            "--drop-rate", "0.1", "--late-rate", "0.1", "--malformed-rate", "0.05"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == first and first.count("\n") > 150


# ----------------------------------------------------------------------------- report
def test_compact_ranges():
    assert compact_ranges([*range(0, 100), *range(101, 201)]) == [[0, 99], [101, 200]]
    assert compact_ranges([]) == []
    rs = RangeSet()
    for x in (5, 3, 9, 4, 7, 8, 6, 0, 3):  # out of order, with a repeat
        rs.add(x)
    assert rs.ranges() == [[0, 0], [3, 9]] and len(rs) == 8
    assert rs.add(3) is False


def test_report_seq_ranges_match_what_was_published(registry):
    config = make_config(registry, count=5000, faults=all_faults(FaultRates(drop=0.3, late=0.05), registry))
    messages, report = simulate(config)
    by_sensor = readings_by_sensor(messages)
    for sid, entry in report["sensors"].items():
        seqs = sorted(m.meta.seq for m in by_sensor[sid])
        assert entry["seqs_sent"] == compact_ranges(seqs)
        assert entry["sent"] == len(seqs)
        assert entry["seq_min"] == 0 and entry["seq_max"] == 999
        assert entry["seq_max"] + 1 == entry["sent"] + entry["dropped"]  # gaps are exactly drops
        assert sum(b - a + 1 for a, b in entry["seqs_sent"]) == entry["sent"]
        assert set(entry) >= {"sent", "dropped", "duplicates", "malformed", "late", "out_of_range",
                              "seq_min", "seq_max", "seqs_sent"}
    assert report["totals"]["sent"] == sum(e["sent"] for e in report["sensors"].values())


def test_report_counts_unacked_and_unsent_when_aborted(registry):
    config = make_config(registry, faults=all_faults(FaultRates(late=0.5), registry))
    stream = ReadingStream(config)
    ledger = Ledger(registry)
    it = iter(stream)
    for i in range(300):
        msg = next(it)
        (ledger.ack if i % 10 else ledger.unacked)(msg.meta)
    report = ledger.report(stream)  # aborted: the held-back late readings were never published
    assert report["totals"]["unsent"] > 0 and report["totals"]["unacked"] > 0
    for entry in report["sensors"].values():
        assert entry["seq_max"] + 1 == entry["sent"] + entry["dropped"] + entry["unacked"] + entry["unsent"]


def test_stop_drains_held_back_late_readings(registry):
    stream = ReadingStream(make_config(registry, faults=all_faults(FaultRates(late=1.0), registry)))
    it = iter(stream)
    first = [next(it) for _ in range(10)]  # held back until 30 s later: all generated, then released
    stream.stop()
    rest = list(it)
    assert stream.draining and stream.pending() == []
    assert all(m.meta.late for m in first + rest)
    generated = sum(c.next_seq for c in stream.counters.values())
    assert len(first) + len(rest) == generated


# ----------------------------------------------------------------------------- time
def test_start_time_controls_event_timestamps(registry):
    start = datetime(2026, 1, 2, 3, 4, 5, 500_000, tzinfo=timezone.utc)
    messages, _ = simulate(make_config(registry, start=start, count=50))
    for m in messages:
        doc = json.loads(m.payload)
        assert datetime.fromisoformat(doc["timestamp"]) == start + timedelta(seconds=doc["seq"])
    assert json.loads(messages[0].payload)["timestamp"] == "2026-01-02T03:04:05.500000Z"
    # A naive start time means UTC.
    naive, _ = simulate(make_config(registry, start=start.replace(tzinfo=None), count=50))
    assert [m.payload for m in naive] == [m.payload for m in messages]


def test_silent_window_produces_no_readings(registry):
    config = make_config(registry, horizon_s=60, silent={"Sensor 2": [(10, 20), (40, 45)]})
    messages, report = simulate(config)
    by_sensor = readings_by_sensor(messages)
    offsets = [(datetime.fromisoformat(json.loads(m.payload)["timestamp"]) - START).total_seconds()
               for m in by_sensor["Sensor 2"]]
    assert not [o for o in offsets if 10 <= o < 20 or 40 <= o < 45]
    assert len(offsets) == 60 - 15 and report["sensors"]["Sensor 2"]["silenced"] == 15
    assert [m.meta.seq for m in by_sensor["Sensor 2"]] == list(range(45))  # silence is not loss
    assert all(len(by_sensor[s]) == 60 for s in ("Sensor 1", "Sensor 3", "Sensor 4", "Sensor 5"))


def test_rate_scales_intervals_unless_keep_intervals(capsys):
    def timestamps(extra):
        assert cli.main(["--dry-run", "--seed", "1", "--start-time", "2026-11-28T17:00:00Z", *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        return [json.loads(line.split("\t", 1)[1]) for line in lines]

    live = timestamps(["--rate", "10", "--duration", "3"])  # 5 sensors at 2 Hz: event time = wall time
    assert len(live) == 30
    assert {d["timestamp"] for d in live if d["sensor_id"] == "Sensor 1"} == {
        f"2026-11-28T17:00:0{s // 2}.{(s % 2) * 5}00000Z" for s in range(6)}
    fast = timestamps(["--rate", "10", "--duration", "3", "--keep-intervals"])  # 1 Hz intervals, 2x time
    assert len(fast) == 30
    assert [d["timestamp"] for d in fast if d["sensor_id"] == "Sensor 1"] == [
        f"2026-11-28T17:00:0{s}.000000Z" for s in range(6)]


def test_count_wins_over_duration(registry):
    _, report = simulate(make_config(registry, count=17, horizon_s=100))
    assert report["totals"]["generated"] == 17
    _, report = simulate(make_config(registry, count=1000, horizon_s=3))
    assert report["totals"]["generated"] == 15


# ----------------------------------------------------------------------------- registry helpers
def test_synthetic_sensors_have_the_seed_shape(registry, tmp_path, capsys):
    sensors = with_synthetic(registry, 12)
    synthetic = [s for sid, s in sensors.items() if sid not in registry]
    assert [s.sensor_id for s in synthetic][:2] == ["synthetic-0001", "synthetic-0002"]
    assert len(synthetic) == 12
    for s in synthetic:
        assert (s.unit, s.type, s.range_min, s.range_max, s.interval_ms) == ("C", "temperature", 0, 45, 1000)
    out = tmp_path / "sensors.json"
    assert cli.main(["--dry-run", "--count", "1", "--sensors", "12", "--write-registry", str(out)]) == 0
    assert parse_registry(out.read_bytes()) == sensors
    assert json.loads(out.read_text()) == registry_document(sensors)


# ----------------------------------------------------------------------------- CLI
def cli_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gen")
    cli.configure_parser(parser)
    return parser.parse_args(argv)


def test_every_option_has_help():
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    for action in parser._actions:
        if action.option_strings:
            assert action.help and action.help.strip(), action.option_strings


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--rate", "-5"], "--rate"),
        (["--rate", "0"], "--rate"),
        (["--count", "0"], "--count"),
        (["--sensors", "-1"], "--sensors"),
        (["--drop-rate", "1.5"], "--drop-rate"),
        (["--late-rate", "2=x"], "--late-rate"),
        (["--silent", "nonsense"], "--silent"),
        (["--silent", "1:20:10"], "--silent"),
        (["--start-time", "yesterday"], "--start-time"),
        (["--late-delay", "90:30"], "--late-delay"),
        (["--silent", "9:0:10"], "unknown sensor '9'"),
        (["--fault-sensor", "nope"], "unknown sensor 'nope'"),
        (["--drop-rate", "nope=0.1"], "unknown sensor 'nope'"),
        (["--mqtt-qos", "3"], "QoS"),
    ],
)
def test_bad_cli_input_is_an_argparse_error(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--dry-run", "--count", "1", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and fragment in err and "Traceback" not in err


def test_dry_run_writes_the_report(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code = cli.main(["--dry-run", "--count", "50", "--seed", "9", "--drop-rate", "Sensor 1=0.5",
                     "--report", str(report_path)])
    assert code == 0
    out, err = capsys.readouterr()
    report = json.loads(report_path.read_text())
    t = report["totals"]
    assert out.count("\n") == t["sent"] + t["duplicates"] + t["malformed"]
    assert "generator: " in err and f"sent={t['sent']}" in err
    assert report["options"]["seed"] == 9 and report["options"]["count"] == 50
    assert "mqtt_generator_password" not in json.dumps(report)
    assert report["stopped_by"] == "end" and report["exit_code"] == 0
    assert set(report["sensors"]) == {"Sensor 1", "Sensor 2", "Sensor 3", "Sensor 4", "Sensor 5"}
    assert t["generated"] == 50 and t["sent"] + t["dropped"] == 50


def test_connection_refused_is_one_line_and_exit_2(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli.main(["--mqtt-port", str(port), "--count", "5"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: cannot connect to MQTT broker 127.0.0.1:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_python_m_iot_data_generator(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "iot_data_generator", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for opt in ("--sensors", "--rate", "--count", "--duration", "--seed", "--drop-rate", "--out-of-range-rate",
                "--malformed-rate", "--duplicate-rate", "--late-rate", "--fault-sensor", "--silent",
                "--start-time", "--report"):
        assert opt in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "iot_data_generator", "--rate", "-1"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_mixed_intervals_and_a_steady_publish_schedule():
    sensors = parse_registry(json.dumps({
        "a": {"unit": "C", "type": "temperature", "range": [0, 45], "interval_ms": 1000},
        "b": {"unit": "C", "type": "temperature", "range": [0, 45], "interval_ms": 1000},
        "slow": {"unit": "kW", "type": "power", "range": [0, 500], "interval_ms": 2500},
    }))
    messages, report = simulate(make_config(sensors, sensors=sensors, horizon_s=10))
    assert {sid: e["sent"] for sid, e in report["sensors"].items()} == {"a": 10, "b": 10, "slow": 4}
    start_us = int(START.timestamp() * 1e6)
    offsets = [m.meta.offset_us for m in messages]
    assert offsets == sorted(offsets)  # yielded in publish order
    for m in messages:
        event_offset = m.meta.event_us - start_us
        interval_us = sensors[m.meta.sensor_id].interval_ms * 1000
        assert event_offset == m.meta.seq * interval_us  # timestamps stay on the slots
        assert event_offset <= m.meta.offset_us < event_offset + interval_us  # staggered publish
    assert len({m.meta.offset_us for m in messages if m.meta.sensor_id != "slow"}) == 20  # a and b apart


# ----------------------------------------------------------------------------- challenge mode
def challenge_lines(capsys, *argv):
    assert cli.main(["--generator-mode", "challenge", "--dry-run", "--seed", "4", *argv]) == 0
    return [line.split("\t", 1) for line in capsys.readouterr().out.splitlines()]


def test_challenge_mode_sends_exactly_the_challenges_messages(registry, capsys):
    lines = challenge_lines(capsys, "--count", "25", "--start-time", "2026-12-02T03:30:45")
    assert len(lines) == 25 and {topic for topic, _ in lines} == {"sensors"}
    by_sensor: dict[str, list[dict]] = {}
    for _, payload in lines:
        doc = json.loads(payload)
        assert list(doc) == ["id", "dt", "value"], payload  # no seq, no metadata, that order
        assert payload == json.dumps(doc)  # json.dumps' own spacing, as the original
        assert type(doc["value"]) is int and 0 <= doc["value"] <= 45
        by_sensor.setdefault(doc["id"], []).append(doc)
        reading = parse_reading(payload.encode(), registry=registry, now_ms=1_900_000_000_000)
        assert reading.sensor_id == doc["id"] and reading.seq is None and reading.registered
    assert sorted(by_sensor) == sorted(registry)
    # dt = datetime.utcnow().isoformat(): no zone, and no fraction when the microsecond is 0
    assert [d["dt"] for d in by_sensor["Sensor 1"]] == [f"2026-12-02T03:30:{45 + s}" for s in range(5)]
    lines = challenge_lines(capsys, "--count", "5", "--start-time", "2026-12-02T03:30:45.445217Z")
    assert json.loads(lines[0][1])["dt"] == "2026-12-02T03:30:45.445217"


def test_challenge_mode_report_and_options(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    challenge_lines(capsys, "--duration", "3", "--report", str(report_path), "--mqtt-qos", "1")
    report = json.loads(report_path.read_text())
    assert report["options"]["generator_mode"] == "challenge" and report["options"]["mqtt_qos"] == 0
    assert report["totals"]["sent"] == 15  # 5 sensors, 3 seconds, all start at once
    assert {s["sent"] for s in report["sensors"].values()} == {3}


@pytest.mark.parametrize("argv, flag", [
    (["--drop-rate", "0.1"], "--drop-rate"), (["--rate", "50"], "--rate"), (["--silent", "Sensor 1:0:5"], "--silent"),
    (["--keep-intervals"], "--keep-intervals"), (["--fault-sensor", "Sensor 1"], "--fault-sensor"),
])
def test_challenge_mode_refuses_what_the_challenges_generator_cannot_do(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--generator-mode", "challenge", "--dry-run", "--count", "1", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "SENSORLAKE_GENERATOR_MODE=challenge" in err and "Traceback" not in err


def test_challenge_mode_is_a_setting(monkeypatch, capsys):
    monkeypatch.setenv("SENSORLAKE_GENERATOR_MODE", "challenge")
    assert cli.main(["--dry-run", "--count", "2"]) == 0
    assert capsys.readouterr().out.startswith("sensors\t{\"id\": ")
    monkeypatch.setenv("SENSORLAKE_GENERATOR_MODE", "nonsense")
    assert cli.main(["--dry-run", "--count", "2"]) == 2
    assert "SENSORLAKE_GENERATOR_MODE" in capsys.readouterr().err


def test_challenge_stream_publishes_then_sleeps_each_sensor(registry):
    """Each sensor's next message comes its interval after its previous publish *finished* (the
    original sleeps after publishing), so a slow publish delays that sensor, not the schedule."""
    now = [100.0]

    def sleep(s):
        now[0] += s

    stream = ChallengeStream(registry, "sensors", seed=1, count=15, clock=lambda: now[0], sleep=sleep)
    sent = []
    for msg in stream:
        sent.append((msg.meta.sensor_id, now[0]))
        now[0] += 0.01  # publishing takes 10 ms
    for sid in registry:
        times = [t for s, t in sent if s == sid]
        assert len(times) == 3
        assert [b - a for a, b in zip(times, times[1:])] == [pytest.approx(1.01)] * 2  # interval + publish

"""`docker compose up -d`, for real: build the image, start every service, and use the platform.

What a user types, in a copy of this repository (its `./data` is a temporary lake, its `.env` is
written by docker/init-env.sh), under its own compose project name (`sensorlake-e2e`) and with every
published port moved by SENSORLAKE_COMPOSE_TEST_PORT_OFFSET (default +25000: MQTT 26883, Kafka
34092, Flink 33081, catalogue 33088), so neither `make up` nor the other test stacks are touched.

The module fixture installs what it needs (sensorlake.dockerhost: docker.io and debootstrap from
apt, Compose v2 built from the Go module proxy into the download cache), starts dockerd when none
answers and stops that one (by pid) at the end, and makes the base image with debootstrap when it
cannot be pulled. A machine where no Docker engine can run fails here, with the reason: the test is
never skipped. The tests then run in order on one stack:

1. build and `up -d`: every service healthy, kafka-init exited 0;
2. the Flink dashboard (127.0.0.1) lists `sensorlake-lake` RUNNING;
3. the generator's readings are in raw/, curated/ and quality/ within 3 minutes;
4. `docker compose exec catalog sensorlake sql -c ...` answers, and the catalogue page does;
5. a second `up -d` (and a recreated submitter) submits no second job;
6. `docker compose kill taskmanager`, then `up -d`: the job recovers and goes on writing;
7. `up -d --scale taskmanager=2`: Flink has two TaskManagers;
8. the generator's report (written when it stops) and raw/ agree reading by reading (seq): none
   lost or doubled, across the TaskManager kill;
9. `down` leaves ./data and the named volumes; `down -v` removes the volumes.

Timings, image size and each container's memory at idle go to test-artifacts/compose-e2e.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
from dotenv import dotenv_values

from sensorlake import dockerhost, services
from sensorlake.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.timeout(3600)

PROJECT = "sensorlake-e2e"
OFFSET = int(os.environ.get("SENSORLAKE_COMPOSE_TEST_PORT_OFFSET", "25000"))
PORTS = {"mqtt": 1883 + OFFSET, "kafka": 9092 + OFFSET, "flink": 8081 + OFFSET, "catalog": 8088 + OFFSET}
FLINK = f"http://127.0.0.1:{PORTS['flink']}"
VOLUMES = ("mosquitto-data", "kafka-data", "flink-checkpoints", "beam-artifacts")
ARTIFACT = REPO_ROOT / "test-artifacts" / "compose-e2e.json"
FIGURES: dict = {}


def _say(message: str) -> None:
    print(f"[compose-e2e] {message}", file=sys.stderr, flush=True)


def _record(**figures) -> None:
    FIGURES.update(figures)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(FIGURES, indent=2) + "\n")


class Compose:
    """`docker compose -p sensorlake-e2e ...` in the project's folder."""

    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory = directory
        self.env = {**os.environ, **env}

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run([dockerhost.docker_cli(), "compose", "-p", PROJECT, *args], cwd=self.directory,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def ps(self) -> list[dict]:
        out = self("ps", "-a", "--format", "json").stdout.strip()
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def logs(self, *services: str, tail: int = 60) -> str:
        return self("logs", "--no-color", "--tail", str(tail), *services, check=False).stdout


def _copy_repository(target: Path) -> None:
    """The files of this checkout that git knows (tracked, and new ones not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = REPO_ROOT / rel
        if src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)


def _get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own stack on 127.0.0.1
        return json.load(r)


def _wait(what: str, check, timeout: float, interval: float = 3.0, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError) as exc:
            last = exc
            result = None
        else:
            result = last
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{detail()}")


def _jobs() -> list[dict]:
    return [j for j in _get_json(f"{FLINK}/jobs/overview")["jobs"] if j["name"] == services.JOB_NAME]


def _live_jobs() -> list[dict]:
    return [j for j in _jobs() if j["state"] not in ("FINISHED", "CANCELED", "FAILED")]


def _running_job() -> dict | None:
    """The job when RUNNING with every task running."""
    for job in _jobs():
        if job["state"] == "RUNNING" and job["tasks"]["running"] == job["tasks"]["total"] > 0:
            return job
    return None


def _completed_checkpoints(jid: str) -> int:
    return _get_json(f"{FLINK}/jobs/{jid}/checkpoints")["counts"]["completed"]


def _lake_count(lake: Path, dataset: str, where: str = "true") -> int:
    files = list((lake / dataset).rglob("*.parquet"))
    if not files:
        return 0
    con = duckdb.connect()
    try:
        return con.execute(f"SELECT count(*) FROM read_parquet('{lake / dataset}/**/*.parquet', "
                           f"hive_partitioning=true, union_by_name=true) WHERE {where}").fetchone()[0]
    except duckdb.Error:  # a file being replaced under us: ask again
        return 0
    finally:
        con.close()


# ====================================================================== the stack
@pytest.fixture(scope="module")
def stack():
    cache = Path(Settings.load(env={k: v for k, v in os.environ.items() if k == "SENSORLAKE_CACHE"}).cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    engine = None
    workdir = Path(tempfile.mkdtemp(prefix="sensorlake-compose-e2e-"))
    compose = None
    try:
        try:
            t = time.monotonic()
            dockerhost.ensure_packages()
            _record(install_packages_s=round(time.monotonic() - t, 1))
            t = time.monotonic()
            dockerhost.ensure_compose(cache)
            _record(compose_v2_build_s=round(time.monotonic() - t, 1))
            engine = dockerhost.ensure_dockerd(workdir / "logs")
            t = time.monotonic()
            how = dockerhost.ensure_base_image(cache)
            _record(base_image=how, base_image_s=round(time.monotonic() - t, 1))
        except dockerhost.DockerHostError as exc:
            pytest.fail(f"no Docker engine for the compose test: {exc}", pytrace=False)
        _record(dockerd_started_here=engine.pid is not None)

        project = workdir / "sensorlake"
        _copy_repository(project)
        # A TLS-intercepting proxy's CA certificates, where this machine has one (docker/ca-certificates/).
        for crt in Path("/usr/local/share/ca-certificates").glob("**/*.crt"):
            shutil.copy(crt, project / "docker" / "ca-certificates" / crt.name)
        subprocess.run(["sh", "docker/init-env.sh"], cwd=project, check=True, capture_output=True)
        with open(project / ".env", "a") as env:
            env.write(f"SENSORLAKE_MQTT_PORT={PORTS['mqtt']}\nSENSORLAKE_KAFKA_BOOTSTRAP=127.0.0.1:{PORTS['kafka']}\n"
                      f"SENSORLAKE_FLINK_REST_PORT={PORTS['flink']}\nSENSORLAKE_CATALOG_PORT={PORTS['catalog']}\n")
        compose = Compose(project, dockerhost.compose_env(cache))
        compose("down", "-v", "--remove-orphans", check=False)  # what a crashed earlier run left
        yield {"compose": compose, "project": project, "lake": project / "data", "cache": cache,
               "env": {k: v or "" for k, v in dotenv_values(project / ".env").items()}}
    finally:
        if compose is not None:
            compose("down", "-v", "--remove-orphans", check=False)
        if engine is not None:
            engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _all_healthy(compose: Compose) -> bool:
    rows = {r["Service"]: r for r in compose.ps()}
    if set(rows) != {r.name for r in services.ROLES}:
        return False
    for role in services.ROLES:
        row = rows[role.name]
        if role.kind == "oneshot":
            if row["State"] != "exited" or row["ExitCode"] != 0:
                return False
        elif row["State"] != "running" or row.get("Health") != "healthy":
            return False
    return True


def _status(compose: Compose) -> str:
    return "\n".join(f"{r['Service']}: {r['State']} {r.get('Health', '')} {r.get('Status', '')}"
                     for r in compose.ps()) + "\n" + compose.logs("pipeline", "taskmanager", tail=30)


# ====================================================================== the tests, in order
def test_build_and_up_every_service_healthy_and_kafka_init_exited_0(stack):
    compose = stack["compose"]
    t = time.monotonic()
    compose("build", timeout=3000)
    _record(image_build_s=round(time.monotonic() - t, 1))
    t = time.monotonic()
    compose("build", timeout=600)
    _record(image_build_warm_s=round(time.monotonic() - t, 1))
    size = subprocess.run([dockerhost.docker_cli(), "image", "inspect", "-f", "{{.Size}}", services.PLATFORM_IMAGE],
                          capture_output=True, text=True, check=True).stdout.strip()
    _record(image=services.PLATFORM_IMAGE, image_size_mb=round(int(size) / 1e6))

    stack["up_at"] = time.monotonic()
    compose("up", "-d", timeout=900)
    _record(up_d_returned_s=round(time.monotonic() - stack["up_at"], 1))
    _wait("every service healthy, kafka-init exited 0", lambda: _all_healthy(compose), 420,
          detail=lambda: _status(compose))
    _record(up_to_all_healthy_s=round(time.monotonic() - stack["up_at"], 1))
    init = next(r for r in compose.ps() if r["Service"] == "kafka-init")
    assert init["ExitCode"] == 0


def test_flink_dashboard_lists_the_lake_job_running(stack):
    job = _wait("sensorlake-lake RUNNING on the dashboard", _running_job, 300, detail=lambda: _status(stack["compose"]))
    stack["jid"] = job["jid"]
    with urllib.request.urlopen(f"{FLINK}/", timeout=5) as r:  # the dashboard page itself
        assert r.status == 200 and b"Flink" in r.read()


def test_generator_readings_reach_raw_curated_and_quality_within_3_minutes(stack):
    lake = stack["lake"]
    t0 = time.monotonic()
    _wait("a raw row", lambda: _lake_count(lake, "raw/readings"), 180, detail=lambda: _status(stack["compose"]))
    _record(up_to_first_raw_row_s=round(time.monotonic() - stack["up_at"], 1))
    _wait("curated and quality rows", lambda: _lake_count(lake, "curated/readings_1min") and
          _lake_count(lake, "quality/sensor_quality_1min"), 180 - (time.monotonic() - t0),
          detail=lambda: _status(stack["compose"]))
    _record(up_to_curated_and_quality_s=round(time.monotonic() - stack["up_at"], 1))
    sensors = set(json.loads((REPO_ROOT / "iot_data_generator" / "sensors.json").read_text()))

    def in_raw() -> set[str]:
        con = duckdb.connect()
        try:
            return {r[0] for r in con.execute(
                f"SELECT DISTINCT sensor_id FROM read_parquet('{lake}/raw/readings/**/*.parquet')").fetchall()}
        except duckdb.Error:  # a file being replaced under us: ask again
            return set()
        finally:
            con.close()

    # Each Kafka partition's raw chunk is flushed by its own timer, 10 s after its first row: the
    # first raw row says one partition flushed, not all of them (a CI run once looked in between).
    _wait("every sensor of the registry in raw/", lambda: in_raw() == sensors, 180 - (time.monotonic() - t0),
          detail=lambda: {"missing": sorted(sensors - in_raw())})
    _record(up_to_every_sensor_in_raw_s=round(time.monotonic() - stack["up_at"], 1))
    owner = {p.stat().st_uid for p in lake.rglob("*.parquet")}
    assert owner == {int(stack["env"]["LAKE_UID"])}, "the lake belongs to LAKE_UID"


def test_sql_in_the_catalog_container_and_the_catalogue_page_answer(stack):
    compose = stack["compose"]
    out = compose("exec", "-T", "catalog", "sensorlake", "sql", "--format", "csv", "-c",
                  "SELECT count(*) AS n, count(DISTINCT sensor_id) AS sensors FROM readings").stdout
    n, sensors = out.strip().splitlines()[-1].split(",")
    assert int(n) > 0 and int(sensors) == 5, out
    url = f"http://127.0.0.1:{PORTS['catalog']}/"

    def page():
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
        return r.status == 200 and "readings" in body and body

    _wait("the catalogue page lists the readings", page, 120)


def test_a_second_up_submits_no_second_job(stack):
    compose = stack["compose"]
    before = _live_jobs()
    assert [j["jid"] for j in before] == [stack["jid"]]
    compose("up", "-d")
    compose("up", "-d", "--force-recreate", "--no-deps", "pipeline")  # the submitter runs again
    _wait("the submitter sees the live job", lambda: "not submitting a second copy" in compose.logs("pipeline"), 180,
          detail=lambda: compose.logs("pipeline"))
    time.sleep(10)
    assert [j["jid"] for j in _live_jobs()] == [stack["jid"]]


def test_killed_taskmanager_then_up_the_job_recovers(stack):
    compose, lake = stack["compose"], stack["lake"]
    jid = stack["jid"]
    _wait("a completed checkpoint", lambda: _completed_checkpoints(jid) > 0, 120)
    compose("kill", "taskmanager")
    killed = time.monotonic()
    compose("up", "-d")
    _wait("the TaskManager back and healthy", lambda: _all_healthy(compose), 300, detail=lambda: _status(compose))
    checkpoints = _completed_checkpoints(jid)
    _wait("the job RUNNING again", _running_job, 300, detail=lambda: _status(compose))
    _wait("new checkpoints after the restore", lambda: _completed_checkpoints(jid) > checkpoints + 1, 180,
          detail=lambda: _status(compose))
    rows = _lake_count(lake, "raw/readings")
    _wait("raw/ growing again", lambda: _lake_count(lake, "raw/readings") > rows, 120)
    _record(taskmanager_kill_to_recovered_s=round(time.monotonic() - killed, 1))
    assert [j["jid"] for j in _live_jobs()] == [jid], "the same job, restored; no copy"


def test_scale_taskmanager_2_gives_flink_two_taskmanagers(stack):
    compose = stack["compose"]
    compose("up", "-d", "--scale", "taskmanager=2")
    _wait("two TaskManagers", lambda: _get_json(f"{FLINK}/overview")["taskmanagers"] == 2, 180,
          detail=lambda: _status(compose))
    _wait("both healthy", lambda: _all_healthy(compose), 180, detail=lambda: _status(compose))
    stats = subprocess.run([dockerhost.docker_cli(), "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}"],
                           capture_output=True, text=True, check=True).stdout
    _record(memory_at_idle={line.split("\t")[0]: line.split("\t")[1].split(" / ")[0]
                            for line in stats.splitlines() if line.startswith(PROJECT)})


def _tick(env: dict, stop: threading.Event) -> None:
    """A live topic: the runner sends a checkpointed bundle's batches on with the next record
    (docs/operations.md), so after the generator stops, a tick a second keeps them moving."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="compose-e2e-tick")
    client.username_pw_set(env.get("SENSORLAKE_MQTT_GENERATOR_USER") or "generator",
                           env["SENSORLAKE_MQTT_GENERATOR_PASSWORD"])
    client.connect("127.0.0.1", PORTS["mqtt"])
    client.loop_start()
    seq = 0
    try:
        while not stop.is_set():
            payload = json.dumps({"sensor_id": "tick", "timestamp": time.time(), "value": 0, "seq": seq})
            client.publish("sensors/tick", payload, qos=1)
            seq += 1
            stop.wait(1)
    finally:
        client.loop_stop()
        client.disconnect()


def test_generator_report_and_raw_agree_reading_by_reading(stack):
    compose, lake = stack["compose"], stack["lake"]
    compose("stop", "generator")  # SIGTERM: the generator writes its report and exits
    report_path = stack["project"] / "generator-report.json"
    compose("cp", "generator:/tmp/generator-report.json", str(report_path))
    report = json.loads(report_path.read_text())
    sent = {sid: {s for lo, hi in r["seqs_sent"] for s in range(lo, hi + 1)} for sid, r in report["sensors"].items()}
    assert report["exit_code"] == 0 and report["totals"]["unacked"] == 0
    assert sum(map(len, sent.values())) == report["totals"]["sent"] > 0
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(stack["env"], stop), daemon=True)
    ticker.start()
    glob = f"{lake}/raw/readings/**/*.parquet"

    def raw_seqs() -> dict[str, list[int]]:
        con = duckdb.connect()
        try:
            rows = con.execute(f"SELECT sensor_id, seq FROM read_parquet('{glob}', hive_partitioning=true) "
                               f"WHERE sensor_id <> 'tick'").fetchall()
        finally:
            con.close()
        out: dict[str, list[int]] = {}
        for sid, seq in rows:
            out.setdefault(sid, []).append(seq)
        return out

    try:
        _wait("every reported reading in raw/",
              lambda: all(sent[s] <= set(raw_seqs().get(s, ())) for s in sent), 240, interval=5,
              detail=lambda: {s: len(sent[s] - set(raw_seqs().get(s, ()))) for s in sent})
        time.sleep(12)  # another flush and checkpoint: nothing more may appear
        raw = raw_seqs()
    finally:
        stop.set()
        ticker.join(10)
    assert set(raw) == set(sent)
    for sid in sent:
        assert sorted(raw[sid]) == sorted(sent[sid]), f"{sid}: lost {sorted(sent[sid] - set(raw[sid]))[:10]}, " \
            f"not sent {sorted(set(raw[sid]) - sent[sid])[:10]}, doubled {len(raw[sid]) - len(set(raw[sid]))}"
    _record(readings_compared=sum(map(len, sent.values())))


def _volumes() -> set[str]:
    out = subprocess.run([dockerhost.docker_cli(), "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                         capture_output=True, text=True, check=True).stdout.split()
    return set(out)


def test_down_keeps_the_lake_and_the_volumes_and_down_v_removes_the_volumes(stack):
    compose, lake = stack["compose"], stack["lake"]
    files = sorted(p.relative_to(lake) for p in lake.rglob("*.parquet"))
    assert files
    compose("down")
    assert compose.ps() == []
    assert _volumes() == {f"{PROJECT}_{v}" for v in VOLUMES}
    assert sorted(p.relative_to(lake) for p in lake.rglob("*.parquet")) == files
    compose("down", "-v")
    assert _volumes() == set()
    assert sorted(p.relative_to(lake) for p in lake.rglob("*.parquet")) == files

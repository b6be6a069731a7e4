"""The data catalogue: catalog.json follows its committed JSON schema, says what the lake holds, and
index.html opens in headless Chromium without console errors, showing every dataset and sensor."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from sensorlake import cli, sql
from sensorlake.catalog import CatalogError, validate_catalog, write_catalog
from sensorlake.catalog.build import DATASETS, _freshness, load_schema
from sensorlake.catalog.serve import CatalogServer
from sensorlake.settings import Settings
from tests.lakefixture import REGISTRY_V2, UNREGISTERED, lake_fixture, past_lake  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def built(lake):
    """The catalogue of the shared lake, built one minute after its newest data."""
    settings = Settings.load(env={})
    doc = write_catalog(str(lake.root), settings, now=lake.end + dt.timedelta(minutes=1))
    return doc, lake.root / "_catalog"


def resources(doc) -> dict[str, dict]:
    return {r["name"]: r for r in doc["resources"]}


def test_schema_is_a_valid_json_schema_and_the_catalogue_follows_it(built):
    doc, folder = built
    jsonschema.Draft7Validator.check_schema(load_schema())
    on_disk = json.loads((folder / "catalog.json").read_text())
    validate_catalog(on_disk)
    assert on_disk["$schema"] == "https://datapackage.org/profiles/2.0/datapackage.json"


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d.pop("resources"), "resources"),
    (lambda d: d["resources"][0].update(path="/etc/passwd"), "path"),
    (lambda d: d["resources"][0].update(path="../outside"), "path"),
    (lambda d: d["resources"][1]["schema"]["fields"][0].update(type="varchar"), "varchar"),
    (lambda d: d["resources"][0]["sensorlake:freshness"].update(stale=True), "stale"),
    (lambda d: d["resources"][0].update(data=[]), "resources/0:"),  # path and data: one or the other
    (lambda d: d["sensorlake:quality"]["sensors"][0].update(status="great"), "great"),
    (lambda d: d["contributors"][0].update(email="nobody"), "email"),
])
def test_schema_rejects_broken_catalogues(built, breakage, message):
    doc = copy.deepcopy(built[0])
    breakage(doc)
    with pytest.raises(CatalogError, match=re.escape(message)):
        validate_catalog(doc)


def test_every_dataset_is_described(built, lake):
    doc, _ = built
    res = resources(doc)
    assert set(res) == {"readings", "readings_1min", "sensor_quality", "rejected", "sensors"}
    assert res["readings"]["sensorlake:rows"] == lake.rows_in_files["raw/readings"]
    assert res["readings_1min"]["sensorlake:rows"] == lake.rows_in_files["curated/readings_1min"]
    assert res["rejected"]["sensorlake:rows"] == lake.rows_in_files["rejected/readings"]
    assert res["sensors"]["sensorlake:rows"] == len(REGISTRY_V2)
    for name, r in res.items():
        assert r["description"] and r["sensorlake:owner"]["email"] == "data-platform@example.com"
        assert r["bytes"] > 0 and r["sensorlake:sampleQueries"]
        fields = {f["name"]: f for f in r["schema"]["fields"]}
        assert all(f["description"] for f in fields.values()), name
    part = res["readings"]["sensorlake:partitioning"]
    assert [k["name"] for k in part["keys"]] == ["date", "hour"] and part["files"] == lake.files["raw/readings"]
    fields = {f["name"]: f for f in res["sensor_quality"]["schema"]["fields"]}
    assert fields["completeness"]["sensorlake:unit"] == "ratio 0..1" and fields["window_start"]["type"] == "datetime"
    assert fields["date"]["type"] == "date" and res["sensor_quality"]["schema"]["primaryKey"] == ["sensor_id", "window_start"]
    cov = res["readings"]["sensorlake:coverage"]
    assert cov["earliest"].startswith(lake.start.strftime("%Y-%m-%dT%H:%M"))
    assert cov["latest"] < (lake.end + dt.timedelta(seconds=1)).isoformat()
    fresh = res["readings_1min"]["sensorlake:freshness"]
    assert fresh["status"] == "ok" and fresh["ageSeconds"] < fresh["warnAfterSeconds"]
    assert res["rejected"]["sensorlake:freshness"]["status"] == "not monitored"


def test_freshness_thresholds():
    s = Settings.load(env={"SENSORLAKE_FRESHNESS_WARN_S": "60", "SENSORLAKE_FRESHNESS_ERROR_S": "600"})
    now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.timezone.utc)
    info = DATASETS["readings"]
    assert [_freshness(now - dt.timedelta(seconds=a), now, info, s)["status"] for a in (30, 61, 601)] == \
        ["ok", "warn", "error"]
    assert _freshness(None, now, info, s)["status"] == "no data"


def test_registry_and_sensor_quality(built, lake):
    doc, _ = built
    reg = doc["sensorlake:registry"]
    assert [v["version"] for v in reg["versions"]] == [v for v, _ in lake.registry_versions]
    assert [s["sensor_id"] for s in reg["sensors"]] == sorted(REGISTRY_V2)
    quality = {s["sensorId"]: s for s in doc["sensorlake:quality"]["sensors"]}
    assert set(quality) == set(REGISTRY_V2) | {UNREGISTERED}
    assert quality["1"]["status"] == "ok" and quality["1"]["completeness"] == 1.0
    assert quality["2"]["status"] == "degraded" and quality["2"]["completeness"] < 0.9
    assert quality["4"]["rangeValidity"] < 0.99 and quality["5"]["lastStatus"] == "missing"
    assert quality[UNREGISTERED]["status"] == "unregistered" and not quality[UNREGISTERED]["registered"]
    for s in quality.values():
        assert len(s["series"]["mean"]) == len(s["series"]["completeness"]) == 1440
    assert sum(v is not None for v in quality["1"]["series"]["mean"]) >= 1430


def test_sample_queries_run(built, lake):
    con = sql.connect(str(lake.root))
    for r in built[0]["resources"]:
        for q in r["sensorlake:sampleQueries"]:
            assert sql.query(con, q["sql"]).num_rows > 0, q


def test_empty_lake_still_gives_a_valid_catalogue(tmp_path):
    doc = write_catalog(str(tmp_path), Settings.load(env={}))
    assert all(r["sensorlake:rows"] == 0 for r in doc["resources"])
    assert {r["sensorlake:freshness"]["status"] for r in doc["resources"]} == {"no data", "not monitored"}
    assert (tmp_path / "_catalog" / "index.html").is_file()


def test_page_names_every_dataset_and_sensor(built):
    doc, folder = built
    page = (folder / "index.html").read_text()
    assert "http://" not in page.replace('href="http', "") and "<script src" not in page and "<link" not in page
    for r in doc["resources"]:
        assert f'id="dataset-{r["name"]}"' in page
    for s in doc["sensorlake:quality"]["sensors"]:
        assert f"<b>{s['sensorId']}</b>" in page
    assert page.count("<svg") == 2 * len(doc["sensorlake:quality"]["sensors"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=timeout)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_console_detection_works(tmp_path):
    """Control: the check below does notice console errors and exceptions."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); nope();</script>")
    messages = console_messages(chromium("--dump-dom", bad.as_uri()).stderr)
    assert any("boom" in m for m in messages) and any("nope is not defined" in m for m in messages)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_page_in_headless_chromium(built):
    doc, folder = built
    page = (folder / "index.html").as_uri()
    dom = chromium("--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    html = dom.stdout
    assert 'data-ready="1"' in html  # the page's script ran to its end
    for r in doc["resources"]:
        assert f'id="dataset-{r["name"]}"' in html
    for s in doc["sensorlake:quality"]["sensors"]:
        assert re.search(rf"<b>{re.escape(s['sensorId'])}</b>", html)
    assert " ago" in html  # times were turned into ages by the script
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "catalog.png"
    shot.unlink(missing_ok=True)
    res = chromium("--hide-scrollbars", "--window-size=1400,2400", f"--screenshot={shot}", page)
    assert res.returncode == 0 and shot.stat().st_size > 20_000
    assert console_messages(res.stderr) == []


def test_serve_builds_serves_and_rebuilds(tmp_path):
    lake = past_lake(tmp_path / "lake", hours=2)
    settings = Settings.load(env={}).replace(lake=str(lake.root))
    server = CatalogServer(settings, interval=0.5, port=0)
    host, port = server.start()
    try:
        assert host == "127.0.0.1"
        base = f"http://{host}:{port}"
        page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "Sensorlake" in page and 'id="dataset-readings_1min"' in page
        doc = json.loads(urllib.request.urlopen(base + "/catalog.json", timeout=10).read())
        validate_catalog(doc)
        health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=10).read())
        first = health["builds"]
        deadline = dt.datetime.now() + dt.timedelta(seconds=30)
        while health["builds"] == first and dt.datetime.now() < deadline:
            health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=10).read())
        assert health["builds"] > first and health["lastError"] is None  # rebuilt periodically
    finally:
        server.stop()


def test_command_line(tmp_path, capsys):
    lake = past_lake(tmp_path / "lake", hours=2)
    assert cli.main(["catalog", "build", "--lake", str(lake.root), "--data-owner", "Energy BI"]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads((lake.root / "_catalog" / "catalog.json").read_text())
    assert doc["contributors"][0]["title"] == "Energy BI"
    assert cli.main(["catalog", "build", "--lake", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip().startswith("sensorlake: error: lake folder")
    assert cli.main(["catalog", "serve", "--lake", str(lake.root), "--interval", "0"]) == 1
    assert "--interval" in capsys.readouterr().err

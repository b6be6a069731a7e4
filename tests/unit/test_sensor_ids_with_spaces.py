"""Sensor ids as the challenge's sensors.json has them ("Sensor 1", with a space) - and worse ones,
with quotes and markup - work everywhere an id goes: the bridge's Kafka key, the parser, the
1-minute windows, the lake's files and partitions, the SQL views, the catalogue page and its plots.

The challenge's payloads for three minutes go through the job's own code (ParseReadings, the
de-duplication, SensorMinutes, the sinks' file naming), driven by hand without Flink, into a lake
that the views and the catalogue then read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from connectors.mqtt_kafka.records import RecordBuilder
from pipelines.dedupe import SeenReadings
from pipelines.kafka_io import KafkaRecord
from pipelines.parsing import ParseReadings
from pipelines.registry_source import store_registry_version
from pipelines.sinks import ChunkWriter, _WindowFileWriter
from pipelines.windows import BatchByShard, SensorMinutes, WindowSettings
from sensorlake import lake as lakedef
from sensorlake import sql
from sensorlake.catalog import write_catalog
from sensorlake.quality import Thresholds
from sensorlake.registry import parse_registry
from sensorlake.settings import DEFAULT_REGISTRY, Settings
from tests.userstate import FakeState as _State

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
ODD = "O'Hara \"lab\" <b>&amp;"  # a quote for SQL, quotes and markup for HTML
MINUTES = 3


class _Inc:
    def inc(self, n=1):
        pass


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """The lake three minutes of the challenge's messages make (plus a few seconds closing minute 3)."""
    root = tmp_path_factory.mktemp("ids") / "lake"
    raw_registry = json.loads(DEFAULT_REGISTRY.read_text())
    raw_registry[ODD] = dict(raw_registry["Sensor 1"], description="an awkward id")
    raw_registry["Sensor 10"] = dict(raw_registry["Sensor 2"], description="sorts after Sensor 9, not Sensor 1")
    registry_bytes = json.dumps(raw_registry).encode()
    registry = parse_registry(registry_bytes)
    store_registry_version(str(root), registry_bytes, now=T0 - timedelta(hours=1))

    # What the bridge makes of the challenge's messages on the single topic `sensors`.
    builder = RecordBuilder("iot.readings.raw", "iot.readings.dlq", "sensors", "bridge-1", 1 << 18)
    records, offsets = [], defaultdict(int)
    for sec in range(MINUTES * 60 + 15):
        for i, sid in enumerate(registry):
            at = T0 + timedelta(seconds=sec, microseconds=0 if sid == "Sensor 3" else 1000 * i + 17)
            payload = json.dumps({"id": sid, "dt": at.replace(tzinfo=None).isoformat(), "value": (sec + i) % 46})
            rec = builder.build(b"sensors", payload.encode(), False, int(at.timestamp() * 1000) + 300)
            assert rec.key == sid.encode()
            assert rec.timestamp_ms == (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
            partition = hash(rec.key) % 3
            records.append(KafkaRecord(partition, offsets[partition], rec.timestamp_ms, rec.key, rec.value,
                                       dict(rec.headers)))
            offsets[partition] += 1

    with mock.patch.object(Metrics, "counter", lambda namespace, name: _Inc()):
        parse = ParseReadings(registry, clock=lambda: NOW.timestamp(), topic_prefix="sensors")
        by_shard = BatchByShard(5_000, WindowSettings().shards)
        minutes = SensorMinutes(lambda: registry, Thresholds(), WindowSettings(), clock=lambda: NOW.timestamp())
    by_shard.setup()
    lake_rows, observations = [], []
    for rec in records:
        for out in parse.process(rec):
            (observations if hasattr(out, "tag") else lake_rows).append(getattr(out, "value", out))
    batch = SeenReadings().open()
    kept = [r for r in lake_rows if batch.fresh(r.row)]
    assert len(kept) == len(lake_rows) == len(records), "no challenge message merged, none rejected"

    with mock.patch.object(Metrics, "counter", lambda namespace, name: _Inc()):
        chunks = ChunkWriter(str(root), lakedef.BY_NAME, 10_000, 1.0)
        minute_files = _WindowFileWriter(str(root), lakedef.BY_NAME, 1.0)
    by_partition = defaultdict(list)
    for r in kept:
        by_partition[r.kafka_partition].append(r)
    for partition, rs in by_partition.items():  # what the sink's flush timer writes
        chunks.flush(partition, _State([rs]), _State())

    by_shard.start_bundle()
    by_shard.process(observations, timestamp=Timestamp(0))  # a list, as the raw stage hands them over
    states, window_rows = {}, []
    for wv in by_shard.finish_bundle():
        shard, _ = wv.value
        window_rows.extend(minutes.process(wv.value, states.setdefault(shard, _State())))
    files = defaultdict(list)
    for w in window_rows:
        files[(w.dataset, w.window_start_ms, 0)].append(w)
    for key, rows in files.items():
        minute_files.flush(key, _State([rows]), _State())
    return root, list(registry)


def test_files_and_partitions_never_hold_an_id(lake):
    root, ids = lake
    paths = [p.relative_to(root).as_posix() for p in root.rglob("*.parquet")]
    assert paths and not [p for p in paths if any(part in p for part in ("Sensor", "Hara", " "))]
    assert {p.split("/")[0] for p in paths} == {"raw", "curated", "quality"}


def test_views_answer_for_every_id(lake):
    root, ids = lake
    con = sql.connect(str(root))
    per_sensor = dict(con.execute("SELECT sensor_id, count(*) FROM readings GROUP BY 1").fetchall())
    assert per_sensor == {sid: MINUTES * 60 + 15 for sid in ids}
    assert con.execute("SELECT count(*) FROM readings WHERE sensor_id = ?", [ODD]).fetchone()[0] == MINUTES * 60 + 15
    assert con.execute("SELECT count(*) FROM readings WHERE sensor_id = 'Sensor 1' AND seq IS NULL").fetchone()[0] \
        == MINUTES * 60 + 15
    quality = con.execute("SELECT sensor_id, status, received, duplicates FROM sensor_quality "
                          "ORDER BY sensor_id, window_start").fetchall()
    assert sorted({q[0] for q in quality}) == sorted(ids)
    assert {(status, received, dups) for _, status, received, dups in quality} == {("ok", 60, 0)}
    assert len(quality) == MINUTES * len(ids)
    means = con.execute("SELECT count(*) FROM readings_1min WHERE sensor_id = 'Sensor 3' AND count = 60").fetchone()
    assert means[0] == MINUTES  # Sensor 3 sends dt without a fraction: the same rows
    assert sorted(r[0] for r in con.execute("SELECT sensor_id FROM sensors").fetchall()) == sorted(ids)
    desc = con.execute("SELECT description FROM sensors WHERE sensor_id = 'Sensor 4'").fetchone()[0]
    assert desc == "Assemlby Floor"  # sic, as the challenge's file has it


def test_catalogue_page_and_plots_show_every_id_escaped(lake):
    root, ids = lake
    doc = write_catalog(str(root), Settings.load(env={}), now=NOW)
    quality = {s["sensorId"]: s for s in doc["sensorlake:quality"]["sensors"]}
    assert set(quality) == set(ids)
    assert list(quality)[:3] == ["Sensor 1", "Sensor 2", "Sensor 3"] and list(quality).index("Sensor 10") > 4
    assert all(q["status"] == "ok" and q["received"] == MINUTES * 60 for q in quality.values())
    con = sql.connect(str(root))
    named = 0
    for r in doc["resources"]:  # the sample queries name the first sensor (the awkward one here)
        for q in r["sensorlake:sampleQueries"]:
            if "sensor_id = '" in q["sql"]:
                named += 1
                assert "O''Hara" in q["sql"]
                assert sql.query(con, q["sql"].replace("current_date", f"DATE '{T0.date()}'")).num_rows > 0, q
    assert named == 2
    page = (root / "_catalog" / "index.html").read_text()
    assert ODD not in page and "<b>&amp;" not in page  # never unescaped
    escaped = "O&#x27;Hara &quot;lab&quot; &lt;b&gt;&amp;amp;"
    assert f"<b>{escaped}</b>" in page
    for sid in ids:
        shown = escaped if sid == ODD else sid
        assert f"<b>{shown}</b>" in page
        assert f'aria-label="{shown}: 1-minute mean, last 24 h"' in page  # the plots

"""`sensorlake sql`: the views over a generated lake (no services).

Row counts against what the fixture wrote, one row per sensor-minute while late updates sit in the
files, partition pruning proven from DuckDB's own profile (files read), empty lakes, export,
output formats and the command line's error handling.
"""

from __future__ import annotations

import csv
import io
import json
import re

import duckdb
import pyarrow.parquet as pq
import pytest

from sensorlake.lake import RAW_READINGS_DATASET, READINGS_1MIN_DATASET, REJECTED_READINGS_DATASET, SENSOR_QUALITY_DATASET
from sensorlake import cli, sql
from tests.lakefixture import REGISTRY_V2, con_fixture, lake_fixture  # noqa: F401 (fixtures)


def count(con, q: str) -> int:
    return sql.query(con, q).column(0)[0].as_py()


def files_read(con, q: str) -> int:
    """Files DuckDB opened for q, from its EXPLAIN ANALYZE profile (summed over scans)."""
    plan = "\n".join(str(r[1]) for r in con.sql("EXPLAIN ANALYZE " + q).fetchall())
    found = [int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", plan)]
    assert found, plan
    return sum(found)


def test_view_row_counts_match_what_was_written(lake, con):
    assert count(con, "SELECT count(*) FROM readings") == lake.rows_in_files[RAW_READINGS_DATASET]
    assert count(con, "SELECT count(*) FROM rejected") == lake.rows_in_files[REJECTED_READINGS_DATASET]
    assert count(con, "SELECT count(*) FROM readings_1min") == lake.sensor_minutes[READINGS_1MIN_DATASET]
    assert count(con, "SELECT count(*) FROM sensor_quality") == lake.sensor_minutes[SENSOR_QUALITY_DATASET]
    rows = sql.query(con, "SELECT sensor_id, count(*) AS n FROM readings GROUP BY 1").to_pylist()
    assert {r["sensor_id"]: r["n"] for r in rows} == lake.raw_per_sensor
    for dataset, view in ((READINGS_1MIN_DATASET, "readings_1min"), (SENSOR_QUALITY_DATASET, "sensor_quality")):
        rows = sql.query(con, f"SELECT strftime(date, '%Y-%m-%d') AS d, count(*) AS n FROM {view} GROUP BY 1").to_pylist()
        assert {r["d"]: r["n"] for r in rows} == lake.rows_per_date[dataset]
    assert len(lake.dates) >= 3  # several days


def test_sensors_view_is_the_newest_registry_version(lake, con):
    rows = {r["sensor_id"]: r for r in sql.query(con, "SELECT * FROM sensors").to_pylist()}
    assert set(rows) == set(REGISTRY_V2)
    assert rows["3"]["description"] == "Deposit (north wall)"  # renamed in the newer version
    assert (rows["6"]["unit"], rows["6"]["range_min"], rows["6"]["range_max"], rows["6"]["interval_ms"],
            rows["6"]["expected_per_minute"]) == ("%", 0, 100, 30000, 2)
    assert {r["registry_version"] for r in rows.values()} == {lake.registry_versions[-1][0]}


def test_one_row_per_sensor_minute_although_late_updates_coexist_in_the_files(lake, con):
    root = lake.root
    stored = count(con, f"SELECT count(*) FROM read_parquet('{root}/{READINGS_1MIN_DATASET}/date=*/*.parquet')")
    assert stored > lake.sensor_minutes[READINGS_1MIN_DATASET]  # the superseded versions are really there
    for view in ("readings_1min", "sensor_quality"):
        dupes = count(con, f"SELECT count(*) FROM (SELECT sensor_id, window_start FROM {view} GROUP BY ALL "
                           "HAVING count(*) > 1)")
        assert dupes == 0, view
    for late in lake.late_updates:
        where = f"WHERE sensor_id = '{late['sensor_id']}' AND window_start = '{late['window_start'].isoformat()}'"
        row = sql.query(con, f"SELECT version, count FROM readings_1min {where}").to_pylist()
        assert row == [{"version": late["version"], "count": late["count"]}], late
        if late["received"] is not None:
            q = sql.query(con, f"SELECT version, received, late FROM sensor_quality {where}").to_pylist()
            assert q == [{"version": late["version"], "received": late["received"], "late": late["late"]}]


def test_a_one_day_query_reads_only_that_days_files(lake, con):
    day = lake.dates[1]
    day_files = len(list((lake.root / READINGS_1MIN_DATASET / f"date={day}").glob("*.parquet")))
    all_files = len(list((lake.root / READINGS_1MIN_DATASET).glob("date=*/*.parquet")))
    assert files_read(con, "SELECT count(*) FROM readings_1min") == all_files
    assert files_read(con, f"SELECT count(*) FROM readings_1min WHERE date = '{day}'") == day_files < all_files
    # through the view's one-row-per-minute window too, with a sensor filter as BI tools send it
    assert files_read(con, f"SELECT avg(mean) FROM readings_1min WHERE date = '{day}' AND sensor_id = '1'") == day_files
    # raw: one hour folder
    hour_files = len(list((lake.root / RAW_READINGS_DATASET / f"date={day}" / "hour=12").glob("*.parquet")))
    assert files_read(con, f"SELECT count(*) FROM readings WHERE date = '{day}' AND hour = 12") == hour_files


def test_relative_date_filters_prune_too(lake, con):
    today = lake.end.strftime("%Y-%m-%d")
    today_files = len(list((lake.root / SENSOR_QUALITY_DATASET / f"date={today}").glob("*.parquet")))
    q = ("SELECT count(*) FROM sensor_quality WHERE date >= CAST(now() - INTERVAL 1 HOUR AS DATE) "
         "AND window_start >= now() - INTERVAL 1 HOUR")
    if (lake.end - lake.end.replace(hour=0, minute=0)).total_seconds() > 3600:  # not just after midnight
        assert files_read(con, q) == today_files


def test_views_work_on_an_empty_lake_with_the_same_columns(lake, con, tmp_path):
    empty = sql.connect(str(tmp_path))
    for view in sql.VIEW_NAMES:
        assert count(empty, f"SELECT count(*) FROM {view}") == 0
        assert empty.sql(f"DESCRIBE {view}").fetchall() == con.sql(f"DESCRIBE {view}").fetchall(), view
    # a lake where only raw data exists yet
    src = next((lake.root / RAW_READINGS_DATASET).glob("date=*/hour=*/*.parquet"))
    dst = tmp_path / RAW_READINGS_DATASET / "date=2026-01-01" / "hour=00" / src.name
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes())
    partial = sql.connect(str(tmp_path))
    assert count(partial, "SELECT count(*) FROM readings") == pq.read_metadata(dst).num_rows
    assert count(partial, "SELECT count(*) FROM readings_1min") == 0


def test_export_writes_a_database_with_the_views(lake, tmp_path, capsys):
    target = tmp_path / "lake.duckdb"
    assert cli.main(["sql", "--lake", str(lake.root), "--export", str(target)]) == 0
    assert "wrote" in capsys.readouterr().err
    db = duckdb.connect(str(target), read_only=True)
    try:
        views = {r[0] for r in db.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert views == set(sql.VIEW_NAMES)
        db.execute("SET TimeZone = 'UTC'")
        assert db.sql("SELECT count(*) FROM readings_1min").fetchall()[0][0] == lake.sensor_minutes[READINGS_1MIN_DATASET]
        comment = db.sql("SELECT comment FROM duckdb_columns() WHERE table_name = 'sensor_quality' "
                         "AND column_name = 'completeness'").fetchall()[0][0]
        assert "received / expected" in comment
    finally:
        db.close()
    assert [p.name for p in tmp_path.iterdir()] == ["lake.duckdb"]  # no temporary files left


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_output_formats(lake, capsys, fmt):
    q = "SELECT sensor_id, description, range_max FROM sensors ORDER BY sensor_id"
    assert cli.main(["sql", "--lake", str(lake.root), "-c", q, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["sensor_id"] for r in rows] == sorted(REGISTRY_V2) and rows[0]["description"] == "Main Entrance"
    elif fmt == "json":
        rows = json.loads(out)
        assert rows[5] == {"sensor_id": "6", "description": "Server Room humidity", "range_max": 100.0}
    else:
        assert "sensor_id" in out and "Server Room humidity" in out and "│" in out


def test_parquet_output_and_json_times(lake, tmp_path, capsys):
    out = tmp_path / "late.parquet"
    q = f"SELECT * FROM readings_1min WHERE date = '{lake.dates[1]}' ORDER BY sensor_id, window_start LIMIT 5"
    assert cli.main(["sql", "--lake", str(lake.root), "-c", q, "--format", "parquet", "--output", str(out)]) == 0
    assert pq.read_table(out).num_rows == 5
    assert cli.main(["sql", "--lake", str(lake.root), "--format", "json", "-c",
                     "SELECT event_time, payload FROM readings ORDER BY event_time LIMIT 1"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["event_time"].endswith("+00:00") and json.loads(row["payload"])["sensor_id"]


def test_user_mistakes_are_one_line_without_traceback(lake, capsys, tmp_path):
    cases = [
        (["-c", "SELECT * FROM no_such_view"], "no_such_view"),
        (["-c", "SELECT 1", "--format", "parquet"], "--output"),
        (["--export", str(tmp_path / "missing" / "x.duckdb")], "does not exist"),
        (["-f", str(tmp_path / "nope.sql")], "cannot read"),
    ]
    for args, needle in cases:
        assert cli.main(["sql", "--lake", str(lake.root), *args]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("sensorlake: error:") and needle in err and "\n" not in err, err


def test_a_query_that_lost_a_file_to_compaction_is_run_again():
    real = duckdb.connect()
    calls = []

    class Flaky:
        def sql(self, q):
            calls.append(q)
            if len(calls) == 1:
                raise duckdb.IOException('IO Error: No such file or directory: "x/date=1/part-0000-s00.parquet"')
            return real.sql(q)

    assert sql.query(Flaky(), "SELECT 42 AS x").to_pylist() == [{"x": 42}]
    assert len(calls) == 2
    with pytest.raises(sql.QueryError, match="Permission"):
        class Denied:
            def sql(self, q):
                raise duckdb.IOException("IO Error: Permission denied")
        sql.query(Denied(), "SELECT 1")


def test_interactive_prompt_keeps_going_after_an_error(lake):
    con = sql.connect(str(lake.root))
    stdin = io.StringIO("SELECT count(*) AS n\nFROM sensors;\nSELECT nope;\n.help\n.format csv\nSELECT 7 AS seven;\n.quit\n")
    out, err = io.StringIO(), io.StringIO()
    assert sql.repl(con, stdin=stdin, out=out, err=err) == 0
    assert "│" in out.getvalue() and "seven\n7\n" in out.getvalue() and "Statements end with ';'" in out.getvalue()
    assert err.getvalue().startswith("error: ") and "nope" in err.getvalue()

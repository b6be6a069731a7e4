"""Every query in docs/queries.md runs against the fixture lake and answers its question."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sensorlake import sql
from tests.lakefixture import REGISTRY_V2, UNREGISTERED, con_fixture, lake_fixture  # noqa: F401 (fixtures)

DOC = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
NAMES = [re.match(r"-- query: (\w+)", b).group(1) if re.match(r"-- query: (\w+)", b) else None for b in BLOCKS]
TEMPERATURES = {k for k, v in REGISTRY_V2.items() if v["type"] == "temperature"}


def rows(con, name: str) -> list[dict]:
    return sql.query(con, BLOCKS[NAMES.index(name)]).to_pylist()


def test_every_query_has_a_name_and_a_check():
    assert None not in NAMES, "start every ```sql block with '-- query: <name>'"
    assert len(set(NAMES)) == len(NAMES)
    checks = {n[len("check_"):] for n in globals() if n.startswith("check_")}
    assert set(NAMES) == checks, "every documented query needs a check_<name> below, and vice versa"


@pytest.mark.parametrize("name", NAMES)
def test_documented_query(name, lake, con):
    result = rows(con, name)
    assert result, f"{name} returned no rows"
    globals()[f"check_{name}"](result, lake)


# ------------------------------------------------------------------ what each answer must look like
def check_last_hour_per_sensor(result, lake):
    by_sensor = {r["sensor_id"]: r for r in result}
    assert set(by_sensor) == {"1", "2", "3", "4", "6"}  # 5 is silent for 3 hours; 99 spoke a day ago
    assert by_sensor["1"]["readings"] >= 50 * 3 and by_sensor["1"]["description"] == "Main Entrance"
    assert by_sensor["2"]["readings"] < by_sensor["1"]["readings"]  # it drops a quarter of its readings
    for r in result:
        assert r["min"] <= r["mean"] <= r["max"]
    assert all(r["max"] <= 45 for r in result if r["sensor_id"] in TEMPERATURES)  # out-of-range not averaged


def check_last_hour_minutes_one_sensor(result, lake):
    assert 50 <= len(result) <= 60
    starts = [r["window_start"] for r in result]
    assert starts == sorted(starts) and all(r["count"] == 3 for r in result)


def check_daily_means(result, lake):
    assert {str(r["date"]) for r in result} == set(lake.dates)
    assert {r["sensor_id"] for r in result} == {"1", "2", "3", "4", "5", "6", UNREGISTERED}
    for r in result:
        if r["sensor_id"] in TEMPERATURES:
            assert 0 <= r["daily_min"] <= r["daily_mean"] <= r["daily_max"] <= 45, r
    assert sum(r["readings"] for r in result) > 0.9 * lake.rows_in_files["raw/readings"]


def check_worst_completeness_this_week(result, lake):
    worst = [r["sensor_id"] for r in result]
    assert worst[0] in ("2", "5") and worst.index("2") < worst.index("1")  # droppy and silent sensors first
    assert UNREGISTERED not in worst
    best = {r["sensor_id"]: r["completeness"] for r in result}
    assert best["1"] == 1.0 and best["2"] < 0.9
    assert [r["completeness"] for r in result] == sorted(r["completeness"] for r in result)


def check_readings_outside_range(result, lake):
    assert len(result) == lake.raw_out_of_range
    assert {r["sensor_id"] for r in result} == {"4"}
    assert all(r["value"] > r["range_max"] for r in result)


def check_outside_range_per_sensor_day(result, lake):
    assert {r["sensor_id"] for r in result} == {"4"}
    assert sum(r["readings_out_of_range"] for r in result) == lake.out_of_range_readings


def check_dataset_freshness(result, lake):
    assert [r["dataset"] for r in result] == ["readings", "readings_1min", "sensor_quality"]
    for r in result:  # the fixture ends at the minute it was built
        assert 0 <= r["age_seconds"] < 600, r


def check_sensor_last_seen(result, lake):
    assert [r["sensor_id"] for r in result][0] == "5"  # the silent one first
    assert {r["sensor_id"] for r in result} == set(REGISTRY_V2)
    by_sensor = {r["sensor_id"]: r for r in result}
    assert by_sensor["5"]["age_seconds"] > 2.5 * 3600 and by_sensor["5"]["latest_status"] == "missing"
    assert by_sensor["1"]["age_seconds"] < 600 and by_sensor["1"]["latest_status"] == "ok"


def check_rejected_by_reason(result, lake):
    codes = {r["reason_code"] for r in result}
    assert codes and codes <= {"not_json", "missing_value", "bad_timestamp", "non_finite_value", "empty_payload"}
    assert all(r["payloads"] > 0 for r in result)


def test_python_example_runs(lake, monkeypatch):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    day = lake.dates[1]
    code = code.replace('"data', f'"{lake.root}').replace("2026-11-28", day)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["today"].num_rows > 0 and scope["day"].num_rows >= lake.rows_per_date["curated/readings_1min"][day]

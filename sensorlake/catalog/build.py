"""Builds the catalogue descriptor: a Frictionless Data Package (v2) describing the lake.

Standard Data Package / Data Resource / Table Schema properties carry what they can (name, title,
description, path, format, mediatype, bytes, schema with field types, descriptions and
``required`` constraints, primaryKey, contributors). What the standard has no property for is in
namespaced custom properties, which the specification allows: ``sensorlake:owner``,
``sensorlake:view``, ``sensorlake:partitioning``, ``sensorlake:rows``, ``sensorlake:coverage``,
``sensorlake:freshness``, ``sensorlake:sampleQueries`` per resource, ``sensorlake:unit`` per field,
and ``sensorlake:registry`` / ``sensorlake:quality`` on the package. ``datapackage.schema.json``
defines all of them; :func:`validate_catalog` checks a descriptor against it.

Counts come from the files as stored: ``sensorlake:rows`` is the number of rows in the Parquet
files (a superseded late-update version counts until compaction merges it away), time coverage is
the earliest and latest event in them. Quality over the last 24 hours is read through the SQL views
(one row per sensor-minute).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from sensorlake import lake as layout
from sensorlake import sql
from sensorlake.lake import Dataset
from sensorlake.quality import Thresholds
from sensorlake.registry import RegistryError, parse_registry
from sensorlake.settings import Settings

UTC = dt.timezone.utc
CATALOG_DIR = layout.CATALOG_DIR
PACKAGE_PROFILE = "https://datapackage.org/profiles/2.0/datapackage.json"
RESOURCE_PROFILE = "https://datapackage.org/profiles/2.0/dataresource.json"
TABLE_PROFILE = "https://datapackage.org/profiles/2.0/tableschema.json"
SCHEMA_FILE = Path(__file__).with_name("datapackage.schema.json")
QUALITY_WINDOW = dt.timedelta(hours=24)
STATUSES = ("ok", "degraded", "bad", "missing", "unregistered", "no data")


class CatalogError(Exception):
    """The catalogue cannot be built or is invalid (one line for the user)."""


# The lake's datasets by view name (titles, time columns and keys come from sensorlake.lake).
DATASETS: dict[str, Dataset] = {ds.view: ds for ds in layout.DATASETS}

# Units of columns whose meaning has one (value-like columns are in the sensor's own unit).
UNITS: dict[str, str] = {
    "value": "sensor unit (column unit)", "mean": "sensor unit (column unit)", "min": "sensor unit (column unit)",
    "max": "sensor unit (column unit)", "stddev": "sensor unit (column unit)",
    "count": "readings", "received": "readings", "in_range": "readings", "out_of_range": "readings",
    "late": "readings", "duplicates": "readings", "expected": "readings per minute",
    "completeness": "ratio 0..1", "range_validity": "ratio 0..1",
    "lat": "degrees (WGS84)", "lng": "degrees (WGS84)", "interval_ms": "milliseconds",
    "range_min": "sensor unit", "range_max": "sensor unit", "expected_per_minute": "readings per minute",
}
_TS_UNIT = "UTC, millisecond precision"


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _field_type(t: pa.DataType) -> dict[str, str]:
    if pa.types.is_timestamp(t):
        return {"type": "datetime"}
    if pa.types.is_date(t):
        return {"type": "date"}
    if pa.types.is_floating(t):
        return {"type": "number"}
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return {"type": "string", "format": "binary"}
    return {"type": "string"}


def _field(name: str, type_: dict[str, str], description: str, required: bool, unit: str | None) -> dict:
    f: dict[str, Any] = {"name": name, **type_, "description": description}
    if required:
        f["constraints"] = {"required": True}
    if unit:
        f["sensorlake:unit"] = unit
    return f


def table_schema(ds: Dataset) -> dict:
    fields = []
    for f in ds.schema:
        desc = (f.metadata or {}).get(b"description", b"").decode()
        unit = _TS_UNIT if pa.types.is_timestamp(f.type) else UNITS.get(f.name)
        fields.append(_field(f.name, _field_type(f.type), desc, not f.nullable, unit))
    for key, duck_type in ds.partition_keys:
        fields.append(_field(key, {"type": "date" if duck_type == "DATE" else "integer"},
                             "Hive partition (folder name); filter on it so queries read fewer files.", True,
                             "UTC date" if key == "date" else "UTC hour 0..23"))
    return {"$schema": TABLE_PROFILE, "fields": fields, "primaryKey": list(ds.unique_key)}


def sensors_schema() -> dict:
    types = {"VARCHAR": {"type": "string"}, "DOUBLE": {"type": "number"}, "INTEGER": {"type": "integer"}}
    fields = [_field(n, types[t], d, n in ("sensor_id", "range_min", "range_max", "interval_ms"), UNITS.get(n))
              for n, t, d in sql.SENSORS_COLUMNS]
    return {"$schema": TABLE_PROFILE, "fields": fields, "primaryKey": ["sensor_id"]}


def sample_queries(view: str, sensor: str) -> list[dict[str, str]]:
    s = sensor.replace("'", "''")
    samples = {
        "readings": [
            ("Latest raw readings of one sensor today",
             f"SELECT event_time, value, unit, seq FROM readings WHERE date = current_date AND sensor_id = '{s}' "
             "ORDER BY event_time DESC LIMIT 20"),
            ("Readings per sensor per hour, today",
             "SELECT sensor_id, hour, count(*) AS readings FROM readings WHERE date = current_date "
             "GROUP BY ALL ORDER BY sensor_id, hour"),
        ],
        "readings_1min": [
            ("One sensor's 1-minute means since yesterday",
             f"SELECT window_start, mean, min, max, count FROM readings_1min WHERE date >= current_date - 1 "
             f"AND sensor_id = '{s}' ORDER BY window_start"),
            ("Hourly means per sensor, last 24 hours",
             "SELECT sensor_id, date_trunc('hour', window_start) AS hour, round(sum(mean * count) / sum(count), 2) "
             "AS mean FROM readings_1min WHERE date >= current_date - 1 AND window_start >= now() - INTERVAL 24 HOUR "
             "AND count > 0 GROUP BY ALL ORDER BY sensor_id, hour"),
        ],
        "sensor_quality": [
            ("Completeness and not-ok minutes per sensor, last 24 hours",
             "SELECT sensor_id, round(avg(completeness), 3) AS completeness, count(*) FILTER (WHERE status <> 'ok') "
             "AS minutes_not_ok FROM sensor_quality WHERE date >= current_date - 1 "
             "AND window_start >= now() - INTERVAL 24 HOUR GROUP BY sensor_id ORDER BY completeness"),
        ],
        "rejected": [
            ("Rejections by reason, last 7 days",
             "SELECT reason_code, count(*) AS payloads, max(kafka_timestamp) AS latest FROM rejected "
             "WHERE date >= current_date - 7 GROUP BY reason_code ORDER BY payloads DESC"),
        ],
        "sensors": [
            ("The registry", "SELECT sensor_id, description, type, unit, range_min, range_max, interval_ms "
                             "FROM sensors ORDER BY sensor_id"),
        ],
    }
    return [{"title": t, "sql": q} for t, q in samples[view]]


def _freshness(latest: dt.datetime | None, now: dt.datetime, info: Dataset, s: Settings) -> dict:
    age = (now - latest).total_seconds() if latest else None
    if not info.monitored:
        status = "not monitored"
    elif latest is None:
        status = "no data"
    elif age > s.freshness_error_s:
        status = "error"
    elif age > s.freshness_warn_s:
        status = "warn"
    else:
        status = "ok"
    return {"latest": _iso(latest), "ageSeconds": None if age is None else round(age, 1),
            "warnAfterSeconds": s.freshness_warn_s if info.monitored else None,
            "errorAfterSeconds": s.freshness_error_s if info.monitored else None, "status": status}


def _thresholds(t: Thresholds) -> dict[str, float]:
    return {"okCompleteness": t.ok_completeness, "okRangeValidity": t.ok_validity,
            "badCompleteness": t.bad_completeness, "badRangeValidity": t.bad_validity}


class _Builder:
    def __init__(self, lake: str, settings: Settings, now: dt.datetime):
        self.lake = sql.local_lake(lake, CatalogError, "the catalogue")
        self.settings = settings
        self.now = now
        self.con = sql.connect(str(self.lake))

    def close(self) -> None:
        self.con.close()

    def rows(self, query: str, params: dict | None = None) -> list[dict]:
        rel = self.con.sql(query, params=params) if params else self.con.sql(query)
        table = rel.to_arrow_table()
        return table.to_pylist()

    # ------------------------------------------------------------------ datasets
    def resource(self, ds: Dataset, sensor: str) -> dict:
        files, size, partitions = sql.stored_files(self.lake / ds.name)
        stats = {"rows": 0, "earliest": None, "latest": None}
        if files:
            glob = sql._literal(ds.glob(str(self.lake)))
            stats = self.rows(
                f"SELECT count(*) AS rows, min({ds.time_column}) AS earliest, max({ds.latest_column}) AS latest "
                f"FROM read_parquet({glob}, hive_partitioning = false)")[0]
        keys = [{"name": k, "type": "date" if t == "DATE" else "integer"} for k, t in ds.partition_keys]
        return {
            "$schema": RESOURCE_PROFILE,
            "name": ds.view,
            "title": ds.title,
            "description": ds.description,
            "type": "table",
            "path": ds.name + "/",
            "format": "parquet",
            "mediatype": "application/vnd.apache.parquet",
            "bytes": size,
            "schema": table_schema(ds),
            "sensorlake:view": ds.view,
            "sensorlake:owner": self.owner(),
            "sensorlake:partitioning": {"style": "hive", "keys": keys,
                                        "glob": ds.glob("").lstrip("/"),
                                        "files": files, "partitions": partitions},
            "sensorlake:rows": stats["rows"],
            "sensorlake:coverage": {"column": ds.time_column if ds.time_column == ds.latest_column
                                    else f"{ds.time_column}..{ds.latest_column}",
                                    "earliest": _iso(stats["earliest"]),
                                    "latest": _iso(stats["latest"])},
            "sensorlake:freshness": _freshness(stats["latest"], self.now, ds, self.settings),
            "sensorlake:sampleQueries": sample_queries(ds.view, sensor),
        }

    def owner(self) -> dict[str, str]:
        return {"title": self.settings.data_owner, "email": self.settings.data_contact}

    # ------------------------------------------------------------------ registry
    def registry(self) -> tuple[dict, dict]:
        stored = sorted(Path(p) for p in glob.glob(layout.registry_glob(str(self.lake))))
        versions = []
        for path in stored:
            entry: dict[str, Any] = {"version": layout.registry_version_of(path),
                                     "path": path.relative_to(self.lake).as_posix()}
            try:
                entry["sensorIds"] = sorted(parse_registry(path.read_bytes()))
            except (RegistryError, OSError) as exc:
                entry["sensorIds"] = []
                entry["error"] = str(exc)
            versions.append(entry)
        sensors = self.rows("SELECT * FROM sensors ORDER BY sensor_id")
        size = sum(p.stat().st_size for p in stored)
        first = sensors[0]["sensor_id"] if sensors else "1"
        resource = {
            "$schema": RESOURCE_PROFILE,
            "name": "sensors",
            "title": "Sensor registry",
            "description": sql.SENSORS_VIEW_DESCRIPTION + " Every version is kept; the view shows the newest.",
            "path": versions[-1]["path"] if versions else layout.REGISTRY_DIR + "/",
            "format": "json",
            "mediatype": "application/json",
            "bytes": size,
            "schema": sensors_schema(),
            "sensorlake:view": "sensors",
            "sensorlake:owner": self.owner(),
            "sensorlake:partitioning": {"style": "hive", "keys": [{"name": "version", "type": "string"}],
                                        "glob": layout.registry_glob("").lstrip("/"),
                                        "files": len(versions), "partitions": len(versions)},
            "sensorlake:rows": len(sensors),
            "sensorlake:coverage": {"column": "registry_version",
                                    "earliest": versions[0]["version"] if versions else None,
                                    "latest": versions[-1]["version"] if versions else None},
            "sensorlake:freshness": {"latest": None, "ageSeconds": None, "warnAfterSeconds": None,
                                     "errorAfterSeconds": None, "status": "not monitored"},
            "sensorlake:sampleQueries": sample_queries("sensors", first),
        }
        registry = {"versions": versions,
                    "sensors": [{k: v for k, v in s.items()} for s in sensors]}
        return resource, registry

    # ------------------------------------------------------------------ quality, last 24 h
    def quality(self, registry_sensors: list[dict]) -> dict:
        end = self.now.replace(second=0, microsecond=0)
        start = end - QUALITY_WINDOW
        minutes = int(QUALITY_WINDOW.total_seconds() // 60)
        params = {"d0": start.date(), "d1": end.date(), "t0": start, "t1": end}
        where = "date BETWEEN $d0 AND $d1 AND window_start >= $t0 AND window_start < $t1"
        totals = {r["sensor_id"]: r for r in self.rows(
            "SELECT sensor_id, count(*) AS minutes, sum(received)::BIGINT AS received, "
            "sum(expected)::DOUBLE AS expected, sum(in_range)::BIGINT AS in_range, "
            "sum(out_of_range)::BIGINT AS out_of_range, sum(late)::BIGINT AS late, "
            "sum(duplicates)::BIGINT AS duplicates, bool_or(expected IS NOT NULL) AS registered, "
            "max(window_end) FILTER (WHERE received > 0) AS last_seen, arg_max(status, window_start) AS last_status, "
            "list(status) AS statuses "
            f"FROM sensor_quality WHERE {where} GROUP BY sensor_id", params)}
        means = self.rows(f"SELECT sensor_id, window_start, mean FROM readings_1min WHERE {where}", params)
        comps = self.rows(f"SELECT sensor_id, window_start, completeness FROM sensor_quality WHERE {where}", params)

        def series(rows: list[dict], column: str) -> dict[str, list]:
            out: dict[str, list] = {}
            for r in rows:
                arr = out.setdefault(r["sensor_id"], [None] * minutes)
                i = int((r["window_start"] - start).total_seconds() // 60)
                if 0 <= i < minutes and r[column] is not None:
                    arr[i] = round(float(r[column]), 4)
            return out

        mean_series, comp_series = series(means, "mean"), series(comps, "completeness")
        thresholds = Thresholds.from_settings(self.settings)
        registered = {s["sensor_id"]: s for s in registry_sensors}
        sensors = []
        for sid in sorted(set(registered) | set(totals), key=lambda x: (len(x), x)):
            t = totals.get(sid)
            reg = registered.get(sid)
            entry: dict[str, Any] = {
                "sensorId": sid, "registered": reg is not None,
                "description": reg["description"] if reg else "(not in the registry)",
                "type": reg["type"] if reg else None, "unit": reg["unit"] if reg else None,
                "rangeMin": reg["range_min"] if reg else None, "rangeMax": reg["range_max"] if reg else None,
            }
            if t is None:
                entry.update({"status": "no data", "lastStatus": None, "minutes": 0, "received": 0, "expected": None,
                              "completeness": None, "rangeValidity": None, "late": 0, "duplicates": 0,
                              "lastSeen": None, "statusMinutes": {}})
            else:
                is_reg = reg is not None and bool(t["registered"])
                received = int(t["received"] or 0)
                expected = float(t["expected"]) if t["expected"] is not None else None
                comp = min(1.0, received / expected) if is_reg and expected else None
                validity = (int(t["in_range"]) / received) if is_reg and received else None
                counts: dict[str, int] = {}
                for st in t["statuses"]:
                    counts[st] = counts.get(st, 0) + 1
                entry.update({
                    "status": thresholds.status(received, comp, validity, is_reg),
                    "lastStatus": t["last_status"], "minutes": int(t["minutes"]), "received": received,
                    "expected": expected, "completeness": None if comp is None else round(comp, 4),
                    "rangeValidity": None if validity is None else round(validity, 4),
                    "late": int(t["late"] or 0), "duplicates": int(t["duplicates"] or 0),
                    "lastSeen": _iso(t["last_seen"]), "statusMinutes": dict(sorted(counts.items())),
                })
            entry["series"] = {"mean": mean_series.get(sid, [None] * minutes),
                               "completeness": comp_series.get(sid, [None] * minutes)}
            sensors.append(entry)
        return {"window": {"start": _iso(start), "end": _iso(end), "stepSeconds": 60, "points": minutes},
                "thresholds": _thresholds(thresholds), "sensors": sensors}


def build_catalog(lake: str, settings: Settings | None = None, now: dt.datetime | None = None) -> dict:
    """The catalogue descriptor of the lake (a dict ready for json.dump)."""
    settings = settings or Settings.load()
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    b = _Builder(lake, settings, now)
    try:
        registry_resource, registry = b.registry()
        sensor = registry["sensors"][0]["sensor_id"] if registry["sensors"] else "1"
        resources = [b.resource(v, sensor) for v in sql.LAKE_VIEWS] + [registry_resource]
        quality = b.quality(registry["sensors"])
    finally:
        b.close()
    return {
        "$schema": PACKAGE_PROFILE,
        "name": "sensorlake",
        "title": "Sensorlake: IoT sensor readings",
        "description": ("Every reading of the field sensors (raw), resampled to 1-minute means (curated) and "
                        "measured for quality per sensor and minute, as Parquet files partitioned by date "
                        "(Hive style). Query them with `sensorlake sql` (DuckDB views of the same names), "
                        "or any Parquet reader."),
        "created": _iso(now),
        "keywords": ["iot", "sensors", "time series", "data quality", "parquet"],
        "contributors": [{"title": settings.data_owner, "email": settings.data_contact,
                          "roles": ["contact", "dataCurator"]}],
        "resources": resources,
        "sensorlake:lake": str(b.lake),
        "sensorlake:registry": registry,
        "sensorlake:quality": quality,
        "sensorlake:howToQuery": [
            {"title": "SQL shell over the lake", "sql": "sensorlake sql -c \"SELECT * FROM sensors\""},
            {"title": "A DuckDB database file for BI tools", "sql": "sensorlake sql --export lake.duckdb"},
        ],
    }


def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_catalog(doc: dict) -> None:
    """Raises CatalogError naming the first problems if doc does not follow datapackage.schema.json."""
    import jsonschema

    validator = jsonschema.Draft7Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:160]}" for e in errors[:3])
        raise CatalogError(f"catalogue does not follow {SCHEMA_FILE.name} ({len(errors)} errors): {shown}")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_catalog(lake: str, settings: Settings | None = None, now: dt.datetime | None = None) -> dict:
    """Builds, validates and writes ``<lake>/_catalog/catalog.json`` and ``index.html``."""
    from sensorlake.catalog.page import render_page

    doc = build_catalog(lake, settings, now)
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    validate_catalog(json.loads(text))  # what readers will parse, not the Python objects
    folder = Path(doc["sensorlake:lake"]) / CATALOG_DIR
    folder.mkdir(exist_ok=True)
    _atomic_write(folder / "catalog.json", text)
    _atomic_write(folder / "index.html", render_page(doc))
    return doc

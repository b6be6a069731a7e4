"""`sensorlake sql`: DuckDB views over the Parquet lake, for BI specialists and data scientists.

Views (created on every connection; they read the files at query time, so new data shows up
without a refresh):

=================  ==============================  ============================================
view               files                           rows
=================  ==============================  ============================================
readings           raw/readings/date=/hour=/       every distinct reading, as received
readings_1min      curated/readings_1min/date=/    one row per sensor-minute (current version)
sensor_quality     quality/sensor_quality_1min/    one row per sensor-minute (current version)
sensors            raw/sensors/version=/           the newest registry version, one row a sensor
rejected           rejected/readings/date=/        dead letters with their reason
=================  ==============================  ============================================

Partition columns ``date`` (DATE) and, for ``readings``, ``hour`` (INTEGER) come from the folder
names (Hive partitioning): a filter on them reads only the matching folders, so put
``date >= ...`` into every query over a long history (docs/queries.md does).

One row per sensor-minute: the pipeline rewrites a minute's file when a late reading updates it
(``version`` + 1). After compaction merged the minute files, such an update can sit next to the
older copy, so ``readings_1min`` and ``sensor_quality`` keep the row with the highest ``version``
(then the latest ``emitted_at``) per (sensor_id, window_start). ``date`` is part of that window's
PARTITION BY (it is a function of window_start), which lets DuckDB push date and sensor filters
below the window, so partition pruning still works through the views.

A dataset that has no files yet gets a view over an empty relation of the right types, so the
same queries run on an empty lake (they return no rows).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterable

import duckdb
import pyarrow as pa

from sensorlake import lake as layout
from sensorlake.lake import Dataset

FORMATS = ("table", "csv", "json", "parquet")


class QueryError(Exception):
    """A query or an output could not be produced; the message is one line for the user."""


LAKE_VIEWS: tuple[Dataset, ...] = layout.DATASETS
SENSORS_VIEW_DESCRIPTION = "The sensor registry's newest version (raw/sensors/version=<UTC>/sensors.json)."
SENSORS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("sensor_id", "VARCHAR", "Sensor id (key of sensors.json)."),
    ("type", "VARCHAR", "Measurement type, e.g. temperature."),
    ("unit", "VARCHAR", "Unit of the values, e.g. C."),
    ("description", "VARCHAR", "Where the sensor is / what it measures."),
    ("lat", "DOUBLE", "Latitude (WGS84)."),
    ("lng", "DOUBLE", "Longitude (WGS84)."),
    ("range_min", "DOUBLE", "Smallest valid value; readings below it are out of range."),
    ("range_max", "DOUBLE", "Largest valid value; readings above it are out of range."),
    ("interval_ms", "INTEGER", "Expected reporting interval in milliseconds (default 1000)."),
    ("expected_per_minute", "DOUBLE", "Readings expected per minute: 60000 / interval_ms."),
    ("registry_version", "VARCHAR", "The registry version (UTC) these rows come from."),
)
VIEW_NAMES = tuple(ds.view for ds in LAKE_VIEWS) + ("sensors",)
_VANISHED = ("No such file", "Cannot open file", "could not open file")


def lake_root(lake: str) -> str:
    """The lake as DuckDB should read it: absolute for local folders, so exported views keep working."""
    lake = lake.rstrip("/") or "/"
    return lake if "://" in lake else os.path.abspath(lake)


def local_lake(lake: str | os.PathLike, error: type[Exception], purpose: str) -> Path:
    """The lake as an existing local folder, else ``error`` with a one-line reason."""
    if "://" in str(lake):
        raise error(f"{purpose} works on a local lake folder, not {lake}")
    path = Path(lake).resolve()
    if not path.is_dir():
        raise error(f"lake folder {path} does not exist")
    return path


def stored_files(base: str | os.PathLike) -> tuple[int, int, int]:
    """(files, bytes, partition folders) of the Parquet files under a local dataset folder that
    readers' globs see: hidden names (``.`` or ``_``: temporary files, compaction staging) skipped."""
    files = size = 0
    folders = set()
    for root, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if not layout.is_hidden(d)]
        for n in names:
            if n.endswith(".parquet") and not layout.is_hidden(n):
                files += 1
                size += os.stat(os.path.join(root, n)).st_size
                folders.add(root)
    return files, size, len(folders)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB type read_parquet gives an Arrow type of our schemas."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    simple = {pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.float64(): "DOUBLE",
              pa.float32(): "FLOAT", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.int16(): "SMALLINT",
              pa.bool_(): "BOOLEAN", pa.binary(): "BLOB", pa.large_binary(): "BLOB", pa.date32(): "DATE"}
    if t in simple:
        return simple[t]
    raise TypeError(f"no DuckDB type for {t}")


def _has_files(con: duckdb.DuckDBPyConnection, pattern: str) -> bool:
    return bool(con.execute("SELECT 1 FROM glob(?) LIMIT 1", [pattern]).fetchall())


def _empty_select(columns: Iterable[tuple[str, str]]) -> str:
    return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in columns) + " WHERE false"


def lake_view_sql(ds: Dataset, lake: str, has_files: bool) -> str:
    if not has_files:
        cols = [(f.name, duckdb_type(f.type)) for f in ds.schema] + list(ds.partition_keys)
        return _empty_select(cols)
    hive_types = ", ".join(f"'{k}': {t}" for k, t in ds.partition_keys)
    scan = (f"SELECT * FROM read_parquet({_literal(ds.glob(lake_root(lake)))}, hive_partitioning = true, "
            f"hive_types = {{{hive_types}}})")
    if not ds.versioned:
        return scan
    # One row per key: the lake's winner. The partition keys are functions of the key, and
    # naming them lets DuckDB push date filters below the window (partition pruning).
    by = ", ".join([*ds.keys, *ds.unique_key])
    order = ", ".join(f"{c} {'DESC' if d == 'descending' else 'ASC'}" for c, d in ds.winner)
    return f"{scan}\nQUALIFY row_number() OVER (PARTITION BY {by} ORDER BY {order}) = 1"


def sensors_view_sql(lake: str, has_files: bool) -> str:
    if not has_files:
        return _empty_select((name, t) for name, t, _ in SENSORS_COLUMNS)
    pattern = _literal(layout.registry_glob(lake_root(lake)))
    # Version folder names are UTC stamps (YYYY-MM-DDTHH-MM-SSZ): the greatest name is the newest.
    return f"""WITH newest AS (
  SELECT filename, content FROM read_text({pattern}) ORDER BY filename DESC LIMIT 1),
entries AS (
  SELECT regexp_extract(filename, {_literal(layout.REGISTRY_VERSION_REGEX)}, 1) AS registry_version,
         unnest(map_entries(content::JSON::MAP(VARCHAR, JSON))) AS e
  FROM newest)
SELECT e.key AS sensor_id,
       e.value->>'type' AS type,
       e.value->>'unit' AS unit,
       e.value->>'description' AS description,
       TRY_CAST(e.value->>'lat' AS DOUBLE) AS lat,
       TRY_CAST(e.value->>'lng' AS DOUBLE) AS lng,
       CAST(e.value->'range'->>0 AS DOUBLE) AS range_min,
       CAST(e.value->'range'->>1 AS DOUBLE) AS range_max,
       CAST(coalesce(e.value->>'interval_ms', '1000') AS INTEGER) AS interval_ms,
       60000.0 / CAST(coalesce(e.value->>'interval_ms', '1000') AS INTEGER) AS expected_per_minute,
       registry_version
FROM entries"""


def create_views(con: duckdb.DuckDBPyConnection, lake: str) -> dict[str, bool]:
    """Creates (or replaces) the lake's views; returns view name -> whether it has files yet."""
    present: dict[str, bool] = {}
    for ds in LAKE_VIEWS:
        present[ds.view] = _has_files(con, ds.glob(lake_root(lake)))
        con.execute(f"CREATE OR REPLACE VIEW {ds.view} AS {lake_view_sql(ds, lake, present[ds.view])}")
        _comment(con, ds.view, ds.description,
                 [(f.name, (f.metadata or {}).get(b"description", b"").decode()) for f in ds.schema]
                 + [(k, "Hive partition (folder name); filter on it to read fewer files.") for k in ds.keys])
    present["sensors"] = _has_files(con, layout.registry_glob(lake_root(lake)))
    con.execute(f"CREATE OR REPLACE VIEW sensors AS {sensors_view_sql(lake, present['sensors'])}")
    _comment(con, "sensors", SENSORS_VIEW_DESCRIPTION, [(n, d) for n, _, d in SENSORS_COLUMNS])
    return present


def _comment(con: duckdb.DuckDBPyConnection, view: str, text: str, columns: list[tuple[str, str]]) -> None:
    """Descriptions that BI tools show (duckdb_views(), duckdb_columns())."""
    con.execute(f"COMMENT ON VIEW {view} IS {_literal(text)}")
    for name, desc in columns:
        if desc:
            con.execute(f"COMMENT ON COLUMN {view}.{name} IS {_literal(desc)}")


def connect(lake: str, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake's views, timestamps shown in UTC."""
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    create_views(con, lake)
    return con


def query(con: duckdb.DuckDBPyConnection, sql: str, retries: int = 3) -> pa.Table | None:
    """Runs sql (one or more statements) and returns the last statement's rows, if it has any.

    Compaction swaps a partition's folder atomically; a query that listed the old files just before
    the swap can find them gone when it opens them. That query is simply run again (it then sees
    the compacted files), so readers never see an error, a duplicate or a gap.
    """
    for attempt in range(retries + 1):
        try:
            rel = con.sql(sql)
            if rel is None:
                return None
            table = rel.to_arrow_table()
            if table.column_names == ["Success"] and table.num_rows == 0:
                return None  # SET, PRAGMA and friends
            return table
        except duckdb.IOException as exc:
            if attempt == retries or not any(s in str(exc) for s in _VANISHED):
                raise QueryError(_one_line(exc)) from exc
            time.sleep(0.05 * (attempt + 1))
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from exc
    raise AssertionError("unreachable")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


def export_database(lake: str, path: str) -> dict[str, bool]:
    """Writes a DuckDB database file holding the views (over the lake's absolute path).

    The file is built next to its destination and renamed over it, so a BI tool never opens a
    half-written database. Views of datasets that had no files yet stay empty until re-exported.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise QueryError(f"cannot export to {path}: folder {folder} does not exist")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    for leftover in (tmp, tmp + ".wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    try:
        con = duckdb.connect(tmp)
        try:
            present = create_views(con, lake)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from exc
    finally:
        for leftover in (tmp, tmp + ".wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return present


# ----------------------------------------------------------------------------- output
def _plain(value: Any) -> Any:
    """JSON/CSV-friendly values: ISO-8601 times, text for UTF-8 bytes, base64 for other bytes."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_result(table: pa.Table | None, fmt: str, out: IO[str] | None = None, output: str | None = None,
                 con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Prints a result as table/csv/json (to ``out``, default stdout), or writes it to ``output``."""
    out = out or sys.stdout
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if table is None:
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if not output:
            raise QueryError("--format parquet needs --output FILE")
        pq.write_table(table, output, compression="zstd")
        print(f"wrote {table.num_rows} rows to {output}", file=sys.stderr)
        return
    target: IO[str] = open(output, "w", encoding="utf-8", newline="") if output else out
    try:
        if fmt == "json":
            json.dump([_plain(r) for r in table.to_pylist()], target, indent=1, ensure_ascii=False)
            target.write("\n")
        elif fmt == "csv":
            w = csv.writer(target, lineterminator="\n")
            w.writerow(table.column_names)
            for row in table.to_pylist():
                w.writerow(["" if v is None else _plain(v) for v in row.values()])
        else:
            rel = (con or duckdb.connect()).from_arrow(table)
            rows = max(table.num_rows, 1)
            if target is sys.stdout:  # DuckDB prints through Python's sys.stdout
                rel.show(max_rows=rows, max_width=10_000, null_value="NULL")
            else:
                import contextlib
                import io

                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    rel.show(max_rows=rows, max_width=10_000, null_value="NULL")
                target.write(buf.getvalue())
    finally:
        if output:
            target.close()


# ----------------------------------------------------------------------------- interactive
REPL_HELP = """Statements end with ';'. Views: readings, readings_1min, sensor_quality, sensors, rejected.
Commands: .views (list views), .format table|csv|json, .help, .quit (or Ctrl-D)."""


def repl(con: duckdb.DuckDBPyConnection, fmt: str = "table", stdin: IO[str] | None = None,
         out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """A small interactive prompt: statements until ';', errors are one line and the prompt goes on."""
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    try:
        import readline  # noqa: F401  (line editing and history when available)
    except ImportError:
        pass
    interactive = stdin.isatty()
    if interactive:
        print("sensorlake sql: DuckDB over the lake. " + REPL_HELP, file=err)
    pending: list[str] = []
    while True:
        prompt = ("sensorlake> " if not pending else "       ...> ") if interactive else ""
        try:
            line = input(prompt) if interactive else stdin.readline()
        except EOFError:
            line = None
        if line is None or (not interactive and line == ""):
            if pending and "".join(pending).strip():
                _run_print(con, "\n".join(pending), fmt, out, err)
            return 0
        stripped = line.strip()
        if not pending and stripped.startswith("."):
            cmd, _, arg = stripped.partition(" ")
            if cmd in (".quit", ".exit", ".q"):
                return 0
            if cmd == ".help":
                print(REPL_HELP, file=out)
            elif cmd in (".views", ".tables"):
                _run_print(con, "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal "
                                "ORDER BY view_name", fmt, out, err)
            elif cmd == ".format" and arg.strip() in FORMATS[:3]:
                fmt = arg.strip()
            else:
                print(f"unknown command {stripped!r}; try .help", file=err)
            continue
        pending.append(line)
        if stripped.endswith(";"):
            _run_print(con, "\n".join(pending), fmt, out, err)
            pending = []


def _run_print(con, sql: str, fmt: str, out: IO[str], err: IO[str]) -> bool:
    try:
        write_result(query(con, sql), fmt, out=out, con=con)
        return True
    except QueryError as exc:
        print(f"error: {exc}", file=err)
        return False


def run_cli(lake: str, command: str | None, fmt: str, output: str | None, export: str | None,
            file: str | None = None) -> int:
    """What `sensorlake sql` does; raises QueryError for anything the user should fix."""
    if fmt == "parquet" and not output and not export:
        raise QueryError("--format parquet needs --output FILE")
    if export:
        present = export_database(lake, export)
        missing = [v for v, ok in present.items() if not ok]
        print(f"wrote {export}: views {', '.join(VIEW_NAMES)} over {lake_root(lake)}"
              + (f" (no files yet, empty until re-exported: {', '.join(missing)})" if missing else ""),
              file=sys.stderr)
        if command is None and file is None:
            return 0
    if file is not None:
        try:
            with open(file, encoding="utf-8") as fh:
                command = fh.read()
        except OSError as exc:
            raise QueryError(f"cannot read {file}: {exc.strerror}") from exc
    if "://" not in lake and not os.path.isdir(lake):
        print(f"sensorlake sql: lake folder {lake_root(lake)} does not exist (yet): every view is empty",
              file=sys.stderr)
    con = connect(lake)
    try:
        if command is None and not sys.stdin.isatty():
            command = sys.stdin.read()  # `sensorlake sql < report.sql`
        if command is None:
            return repl(con, fmt)
        write_result(query(con, command), fmt, output=output, con=con)
        return 0
    finally:
        con.close()


# ----------------------------------------------------------------------------- command line
HELP = "Query the lake with SQL (DuckDB views readings, readings_1min, sensor_quality, sensors, rejected)."
DESCRIPTION = HELP + """

examples:
  sensorlake sql                                   interactive prompt (statements end with ';')
  sensorlake sql -c "SELECT * FROM sensors"
  sensorlake sql -c "SELECT * FROM readings_1min WHERE date = current_date" --format csv > today.csv
  sensorlake sql -f docs/report.sql --format json
  sensorlake sql -c "SELECT * FROM readings WHERE date = '2026-11-27'" --format parquet --output day.parquet
  sensorlake sql --export lake.duckdb              a DuckDB database with the views, for BI tools

Filter on `date` (and `hour` for readings) so DuckDB reads only those folders. Timestamps are UTC.
JSON/CSV: times as ISO-8601, binary payloads as UTF-8 text (base64 when not valid UTF-8)."""


def configure_parser(p) -> None:
    from sensorlake.settings import LAKE_TOOL_SETTINGS, Settings

    src = p.add_mutually_exclusive_group()
    src.add_argument("-c", "--command", metavar="SQL", help="run these statements and print the last result")
    src.add_argument("-f", "--file", metavar="FILE", help="run the statements in FILE")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the result to FILE (required for parquet)")
    p.add_argument("--export", metavar="FILE.duckdb",
                   help="write a DuckDB database file holding the views (over this lake's absolute path)")
    Settings.add_arguments(p, LAKE_TOOL_SETTINGS)


def run(args) -> int:
    from sensorlake.settings import Settings

    settings = Settings.from_args(args)
    return run_cli(settings.lake, args.command, args.format, args.output, args.export, args.file)

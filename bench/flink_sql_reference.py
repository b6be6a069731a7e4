"""The native reference of bench/pipeline.py: the 1-minute means as a Flink SQL job (PyFlink Table API).

Runs with the Flink venv's python (apache-flink 1.19.3 from PyPI, not the pipeline's venv: the two
pin different Beam and pyarrow releases). It submits one streaming job to a running Flink cluster
(a remote TableEnvironment, the REST address given) and exits; the job keeps running until it is
cancelled. What the job does:

    Kafka topic (JSON payloads of our contract; event time = the payload's ISO-8601 ``timestamp``,
    watermark = event time - out-of-orderness, the same 10 s as our pipeline's default)
      -> TUMBLE(1 minute) per sensor_id: count, mean, min, max
      -> Parquet files (filesystem connector, ZSTD, one folder per date), committed on checkpoints

With ``--with-raw`` a second INSERT of the same statement set also writes every reading as a
Parquet row (sensor_id, event_time, value, seq, payload, Kafka coordinates), the work our job's
raw/ branch does, so both halves of our job have a native counterpart.

The connector and format jars (bench/flink-sql-jars/pom.xml) are passed as ``--jar`` and shipped
with the job (``pipeline.jars``); the shared cluster's lib/ is left alone.

    <flink venv>/bin/python bench/flink_sql_reference.py --rest 127.0.0.1:8081 \
        --bootstrap 127.0.0.1:9092 --topic t --group-id g --out /tmp/native --jar a.jar --jar b.jar
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def kafka_with(topic: str, bootstrap: str, group_id: str, **fmt: str) -> str:
    """The WITH clause of a Kafka source table read from the earliest offset."""
    opts = {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": bootstrap,
            "properties.group.id": group_id, "scan.startup.mode": "earliest-offset", **fmt}
    return "WITH (\n" + ",\n".join(f"  '{k}' = '{v}'" for k, v in opts.items()) + "\n)"


def source_ddl(topic: str, bootstrap: str, group_id: str, out_of_orderness_s: int) -> str:
    # TIMESTAMP_LTZ in the JSON format's ISO-8601 mode reads "2026-11-28T17:00:00.123456Z" as is.
    return f"""
CREATE TABLE readings (
  sensor_id STRING,
  `timestamp` TIMESTAMP_LTZ(3),
  `value` DOUBLE,
  seq BIGINT,
  WATERMARK FOR `timestamp` AS `timestamp` - INTERVAL '{out_of_orderness_s}' SECOND
) """ + kafka_with(topic, bootstrap, group_id, **{"format": "json", "json.timestamp-format.standard": "ISO-8601",
                                                  "json.ignore-parse-errors": "true"})


def raw_source_ddl(topic: str, bootstrap: str, group_id: str) -> str:
    """The same topic, payload bytes kept (format raw): the raw/ counterpart parses it in SQL."""
    return """
CREATE TABLE payloads (
  payload BYTES,
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  kafka_timestamp TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
) """ + kafka_with(topic, bootstrap, f"{group_id}-raw", format="raw")


def sink_ddl(name: str, columns: str, path: str) -> str:
    return f"""
CREATE TABLE {name} ({columns}, dt STRING) PARTITIONED BY (dt) WITH (
  'connector' = 'filesystem',
  'path' = '{path}',
  'format' = 'parquet',
  'parquet.compression' = 'ZSTD',
  'sink.rolling-policy.file-size' = '128MB',
  'sink.rolling-policy.rollover-interval' = '10 min'
)"""


MINUTE_COLUMNS = ("sensor_id STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), `count` BIGINT, "
                  "mean DOUBLE, min_value DOUBLE, max_value DOUBLE")
MINUTES_INSERT = """
INSERT INTO minutes
SELECT sensor_id, window_start, window_end, COUNT(*), AVG(`value`), MIN(`value`), MAX(`value`),
       DATE_FORMAT(window_start, 'yyyy-MM-dd')
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(`timestamp`), INTERVAL '1' MINUTE))
GROUP BY sensor_id, window_start, window_end"""

RAW_COLUMNS = ("sensor_id STRING, event_time TIMESTAMP(3), `value` DOUBLE, seq BIGINT, payload BYTES, "
               "kafka_partition INT, kafka_offset BIGINT, kafka_timestamp TIMESTAMP(3)")
RAW_INSERT = """
INSERT INTO raw_readings
SELECT JSON_VALUE(p, '$.sensor_id'),
       CAST(TO_TIMESTAMP(REPLACE(REPLACE(JSON_VALUE(p, '$.timestamp'), 'T', ' '), 'Z', ''),
                         'yyyy-MM-dd HH:mm:ss.SSSSSS') AS TIMESTAMP(3)),
       CAST(JSON_VALUE(p, '$.value') AS DOUBLE), CAST(JSON_VALUE(p, '$.seq') AS BIGINT),
       payload, kafka_partition, kafka_offset, CAST(kafka_timestamp AS TIMESTAMP(3)),
       DATE_FORMAT(kafka_timestamp, 'yyyy-MM-dd')
FROM (SELECT CAST(payload AS STRING) AS p, payload, kafka_partition, kafka_offset, kafka_timestamp
      FROM payloads)"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rest", required=True, help="host:port of the Flink REST API")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group-id", required=True)
    p.add_argument("--out", required=True, help="output folder (local path); minutes/ and raw/ go below it")
    p.add_argument("--jar", action="append", default=[], help="a connector/format jar to ship with the job")
    p.add_argument("--job-name", default="sensorlake-bench-native")
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--checkpoint-ms", type=int, default=5000)
    p.add_argument("--out-of-orderness-s", type=int, default=10)
    p.add_argument("--idle-timeout-s", type=int, default=0, help="source idle timeout (0: none)")
    p.add_argument("--with-raw", action="store_true", help="also write every reading to Parquet")
    a = p.parse_args(argv)

    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    host, port = a.rest.rsplit(":", 1)
    conf = Configuration()
    for k, v in {
        "execution.target": "remote",
        "rest.address": host,
        "rest.port": port,
        "pipeline.name": a.job_name,
        "pipeline.jars": ";".join(Path(j).resolve().as_uri() for j in a.jar),
        "parallelism.default": str(a.parallelism),
        "execution.checkpointing.interval": f"{a.checkpoint_ms} ms",
        "table.local-time-zone": "UTC",
    }.items():
        conf.set_string(k, v)
    if a.idle_timeout_s:
        # Only for a topic with an empty partition (few sensors): an idle timeout also lets the
        # watermark pass a partition that merely paused during a backlog, whose records are then
        # dropped as late (seen here: 10 s dropped ~0.1% of 1M readings).
        conf.set_string("table.exec.source.idle-timeout", f"{a.idle_timeout_s} s")
    t_env = TableEnvironment.create(EnvironmentSettings.new_instance().in_streaming_mode()
                                    .with_configuration(conf).build())
    out = Path(a.out).resolve()
    t_env.execute_sql(source_ddl(a.topic, a.bootstrap, a.group_id, a.out_of_orderness_s))
    t_env.execute_sql(sink_ddl("minutes", MINUTE_COLUMNS, (out / "minutes").as_uri()))
    statements = t_env.create_statement_set()
    statements.add_insert_sql(MINUTES_INSERT)
    if a.with_raw:
        t_env.execute_sql(raw_source_ddl(a.topic, a.bootstrap, a.group_id))
        t_env.execute_sql(sink_ddl("raw_readings", RAW_COLUMNS, (out / "raw").as_uri()))
        statements.add_insert_sql(RAW_INSERT)
    result = statements.execute()
    job_id = str(result.get_job_client().get_job_id())
    print(json.dumps({"job_id": job_id, "job_name": a.job_name}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

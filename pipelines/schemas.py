"""Arrow schemas of the lake's datasets.

Every field carries a ``description`` in its metadata because the data catalogue shows it: the
schema is the one place a column's meaning is written down. Timestamps are ``timestamp[ms, UTC]``
as the design's lake layout requires, so DuckDB/pandas/Spark read them as instants.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

RAW_READINGS_DATASET = "raw/readings"
REJECTED_READINGS_DATASET = "rejected/readings"


def _f(name: str, type_: pa.DataType, description: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"description": description.encode()})


RAW_READINGS = pa.schema([
    _f("sensor_id", pa.string(), "Sensor id as sent (JSON integers converted to text)."),
    _f("event_time", TS, "When the sensor measured the value (payload timestamp, UTC)."),
    _f("value", pa.float64(), "Measured value, finite."),
    _f("unit", pa.string(), "Unit from the payload, else from the sensor registry, else empty."),
    _f("type", pa.string(), "Measurement type from the payload, else the registry, else empty."),
    _f("seq", pa.int64(), "Per-sensor message counter from the sender, if it sends one.", True),
    _f("registered", pa.bool_(), "Whether the sensor id was in the registry at parse time."),
    _f("payload", pa.binary(), "The MQTT payload bytes verbatim, for audit and re-parsing."),
    _f("mqtt_topic", pa.string(), "MQTT topic the reading arrived on (Kafka header mqtt_topic).",
       True),
    _f("kafka_partition", pa.int32(), "Kafka partition of the record."),
    _f("kafka_offset", pa.int64(), "Kafka offset of the record; with the partition, a unique key."),
    _f("kafka_timestamp", TS, "Kafka record timestamp (CreateTime set by the bridge)."),
    _f("ingest_time", TS, "When the pipeline parsed the record (processing time)."),
])

REJECTED_READINGS = pa.schema([
    _f("payload", pa.binary(), "The MQTT payload bytes verbatim (empty if the record had none)."),
    _f("reason_code", pa.string(), "Stable machine-readable rejection code (see REASON_CODES)."),
    _f("reason", pa.string(), "Human-readable explanation of the rejection."),
    _f("kafka_partition", pa.int32(), "Kafka partition of the record."),
    _f("kafka_offset", pa.int64(), "Kafka offset of the record; with the partition, a unique key."),
    _f("kafka_timestamp", TS, "Kafka record timestamp (CreateTime set by the bridge)."),
    _f("mqtt_topic", pa.string(), "MQTT topic the payload arrived on (Kafka header mqtt_topic).",
       True),
    _f("ingest_time", TS, "When the pipeline parsed the record (processing time)."),
])

SCHEMAS: dict[str, pa.Schema] = {
    RAW_READINGS_DATASET: RAW_READINGS,
    REJECTED_READINGS_DATASET: REJECTED_READINGS,
}
"""Dataset name -> schema, in the shape WriteLakeChunks takes."""

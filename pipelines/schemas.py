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
READINGS_1MIN_DATASET = "curated/readings_1min"
SENSOR_QUALITY_DATASET = "quality/sensor_quality_1min"


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

_WINDOW = [
    _f("sensor_id", pa.string(), "Sensor id."),
    _f("window_start", TS, "Start of the 1-minute event-time window (inclusive, UTC)."),
    _f("window_end", TS, "End of the 1-minute event-time window (exclusive, UTC)."),
]
_VERSION = [
    _f("version", pa.int32(), "Pane of this sensor-minute: 0 when first written, +1 per late "
       "update. Files are rewritten in place, so one row per sensor-minute is the rule; if two "
       "ever coexist (a late update after compaction), the highest version is current."),
    _f("emitted_at", TS, "When the pipeline computed this version of the row (processing time)."),
]

READINGS_1MIN = pa.schema([
    *_WINDOW,
    _f("count", pa.int64(), "Distinct in-range readings in the window (duplicates and "
       "out-of-range values excluded)."),
    _f("mean", pa.float64(), "Mean of the in-range values; null when count is 0.", True),
    _f("min", pa.float64(), "Smallest in-range value; null when count is 0.", True),
    _f("max", pa.float64(), "Largest in-range value; null when count is 0.", True),
    _f("stddev", pa.float64(), "Sample standard deviation (n-1) of the in-range values, as SQL "
       "stddev/stddev_samp; null when count < 2.", True),
    _f("first_event_time", TS, "Event time of the earliest in-range reading in the window.", True),
    _f("last_event_time", TS, "Event time of the latest in-range reading in the window.", True),
    _f("unit", pa.string(), "Unit of the values (registry, else the readings)."),
    *_VERSION,
])

SENSOR_QUALITY = pa.schema([
    *_WINDOW,
    _f("expected", pa.float64(), "Readings expected in the window: 60000 / interval_ms of the "
       "registry; null for unregistered sensors.", True),
    _f("received", pa.int64(), "Distinct readings received (duplicates count once)."),
    _f("completeness", pa.float64(), "min(1, received / expected); null when unregistered.", True),
    _f("in_range", pa.int64(), "Received readings inside the registry's [min, max]."),
    _f("out_of_range", pa.int64(), "Received readings outside the registry's [min, max]."),
    _f("range_validity", pa.float64(), "in_range / received; null when received is 0 or the "
       "sensor is unregistered.", True),
    _f("late", pa.int64(), "Readings that arrived after the sensor's watermark had passed the "
       "window (kept and counted; they updated the row)."),
    _f("duplicates", pa.int64(), "Readings received again with the same key (sensor_id, seq, or "
       "event time when there is no seq)."),
    _f("status", pa.string(), "missing | bad | degraded | ok | unregistered (see thresholds)."),
    _f("thresholds_version", pa.string(), "The quality thresholds the status was computed with."),
    *_VERSION,
])

SCHEMAS: dict[str, pa.Schema] = {
    RAW_READINGS_DATASET: RAW_READINGS,
    REJECTED_READINGS_DATASET: REJECTED_READINGS,
    READINGS_1MIN_DATASET: READINGS_1MIN,
    SENSOR_QUALITY_DATASET: SENSOR_QUALITY,
}
"""Dataset name -> schema, in the shape WriteLakeChunks takes."""

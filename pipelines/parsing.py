"""Parsing MQTT payloads (as carried by Kafka) into typed readings or explicit rejections.

``parse_reading`` is pure and total: any bytes give a ``Reading`` or a ``Rejection`` with a stable
``reason_code``, never an exception, so one malformed message can never fail (and endlessly
replay) a streaming bundle. Rejections are kept, not dropped: ``ParseReadings`` routes them to
``rejected/readings`` with their Kafka coordinates.

The contract itself (field names and aliases, sensor ids, timestamp forms, values, topics) is
``sensorlake.contract``, the one implementation the bridge uses too; docs/contract.md has it as a
table (docs/design.md, "Message contract", the why). What only the pipeline decides:

* ``timestamp_out_of_range``: before 1970, or more than ``max_future_ms`` (a day) ahead of now.
* ``seq`` (optional): a non-negative 64-bit integer; ``unit``/``type``: ``metadata`` first, then
  the top level, then the registry.
* Unknown sensors are accepted with ``registered=False``: the registry may lag behind the fleet.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.sinks import LakeRecord
from pipelines.windows import Observation
from sensorlake import contract
from sensorlake.contract import (EPOCH_SECONDS_LIMIT, MAX_SENSOR_ID_LEN, epoch_to_ms,  # noqa: F401 - re-exported
                                 iso_to_ms)
from sensorlake.lake import RAW_READINGS_DATASET, REJECTED_READINGS_DATASET
from sensorlake.registry import Sensor

DEFAULT_MAX_PAYLOAD_BYTES = 262_144
DEFAULT_MAX_FUTURE_MS = 86_400_000  # one day: clocks drift, but not by days
_INT64_MAX = 2**63 - 1

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

REASON_CODES: tuple[str, ...] = (
    "payload_too_large",     # bigger than max_payload_bytes (checked before decoding)
    "empty_payload",         # zero bytes (or a Kafka record without a value)
    "not_utf8",              # bytes are not valid UTF-8
    "not_json",              # text is not JSON
    "not_object",            # JSON, but not an object
    "missing_sensor_id",
    "missing_value",
    "missing_timestamp",
    "bad_sensor_id",         # wrong type, empty or too long
    "bad_value_type",        # not a JSON number (bool, string, list, ...)
    "non_finite_value",      # NaN / Infinity / -Infinity
    "number_out_of_range",   # a number that does not fit a float64
    "bad_timestamp",         # wrong type or not ISO-8601
    "timestamp_out_of_range",  # before 1970 or too far in the future
    "bad_field_type",        # metadata/unit/type/seq of the wrong type
    "unparseable",           # anything unexpected: a bug guard, should stay at zero
)


# A NamedTuple's own constructor is a Python function: 0.36 us a record against 0.16 for this
# (timeit), and the parser builds three records per reading. It fills no defaults: every field is
# given (tests/unit/test_parsing.py compares whole records, so a field added later fails there).
_tuple = tuple.__new__


class Reading(NamedTuple):
    sensor_id: str
    event_time_ms: int
    value: float
    unit: str
    type: str
    seq: int | None
    registered: bool


class Rejection(NamedTuple):
    reason_code: str
    message: str


def _reject(code: str, message: str) -> Rejection:
    return Rejection(code, message)


def _text_field(name: str, *sources: Mapping) -> str | None | Rejection:
    for src in sources:
        v = src.get(name)
        if v is None:
            continue
        if not isinstance(v, str):
            return _reject("bad_field_type", f"{name} must be a string, got {type(v).__name__}")
        return v
    return None


def _parse(payload: bytes, registry: Mapping[str, Sensor], now_ms: int, max_payload_bytes: int,
           max_future_ms: int, topic_sensor_id: str | None) -> Reading | Rejection:
    if payload is None or len(payload) == 0:
        return _reject("empty_payload", "payload is empty")
    if len(payload) > max_payload_bytes:
        return _reject("payload_too_large",
                       f"payload is {len(payload)} bytes, limit is {max_payload_bytes}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject("not_utf8", f"payload is not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        doc = contract.DECODER.decode(text)
    except ValueError as exc:  # JSONDecodeError, and int literals beyond the digit limit
        return _reject("not_json", f"payload is not JSON: {exc}"[:200])
    except RecursionError:  # [[[[...]]]] deeper than the decoder's stack: not a reading either
        return _reject("not_json", "payload is not JSON we accept: nested too deeply")
    if not isinstance(doc, dict):
        return _reject("not_object", f"payload is JSON {type(doc).__name__}, expected an object")

    # sensor id: the payload's sensor_id or id, else the topic's
    name, raw = contract.pick(doc, contract.SENSOR_ID_FIELDS)
    if name is None:
        if topic_sensor_id is None:
            return _reject("missing_sensor_id", "sensor id is missing: no sensor_id or id in the payload, "
                                                "none in the topic")
        sid = topic_sensor_id
    else:
        sid = contract.sensor_id(raw, name)
        if isinstance(sid, contract.Invalid):
            return _reject(*sid)

    # value
    raw = doc.get(contract.VALUE_FIELD)
    if raw is None:
        return _reject("missing_value", "value is missing or null")
    value = contract.reading_value(raw)
    if isinstance(value, contract.Invalid):
        return _reject(*value)

    # timestamp: the payload's timestamp or dt
    name, ts = contract.pick(doc, contract.TIMESTAMP_FIELDS)
    if name is None:
        return _reject("missing_timestamp", "timestamp is missing: no timestamp or dt in the payload")
    ms = contract.timestamp_ms(ts, name)
    if isinstance(ms, contract.Invalid):
        return _reject(*ms)
    if ms < 0:
        return _reject("timestamp_out_of_range", f"{name} {ts!r} is before 1970-01-01")
    if ms > now_ms + max_future_ms:
        return _reject("timestamp_out_of_range",
                       f"{name} {ts!r} is more than {max_future_ms} ms in the future")

    # seq (optional)
    seq = doc.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)
                            or not 0 <= seq <= _INT64_MAX):
        return _reject("bad_field_type",
                       f"seq must be a non-negative 64-bit integer, got {seq!r}"[:200])

    # unit / type: metadata, then top level, then registry
    meta = doc.get("metadata")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        return _reject("bad_field_type", f"metadata must be an object, got {type(meta).__name__}")
    unit = _text_field("unit", meta, doc)
    if isinstance(unit, Rejection):
        return unit
    kind = _text_field("type", meta, doc)
    if isinstance(kind, Rejection):
        return kind
    sensor = registry.get(sid)
    if unit is None:
        unit = sensor.unit if sensor is not None else ""
    if kind is None:
        kind = sensor.type if sensor is not None else ""
    return _tuple(Reading, (sid, ms, value, unit, kind, seq, sensor is not None))


def parse_reading(payload: bytes, *, registry: Mapping[str, Sensor], now_ms: int,
                  max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                  max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                  topic_sensor_id: str | None = None) -> Reading | Rejection:
    """Parse one payload; never raises (a failure to parse is data, not an error).

    ``topic_sensor_id``: the sensor the MQTT topic names (``contract.topic_sensor_id``), used when
    the payload names none."""
    try:
        return _parse(payload, registry, now_ms, max_payload_bytes, max_future_ms, topic_sensor_id)
    except Exception as exc:  # noqa: BLE001 - totality is the contract; the code flags a bug
        return _reject("unparseable", f"unexpected {type(exc).__name__}: {exc}"[:200])


def ms_to_datetime(ms: int) -> datetime:
    """Exact (integer) ms -> aware UTC datetime: what a timestamp[ms, UTC] column reads back as."""
    return _EPOCH + timedelta(milliseconds=ms)


def _arrival_ms(record, now_ms: int) -> int:
    """When the bridge received the message (its receive_ms header), else the record's time."""
    raw = (record.headers or {}).get("receive_ms")
    try:
        return int(bytes(raw)) if raw is not None else (record.timestamp_ms if record.timestamp_ms >= 0 else now_ms)
    except ValueError:
        return record.timestamp_ms if record.timestamp_ms >= 0 else now_ms


def _header_text(headers: Mapping | None, name: str) -> str | None:
    if not headers:
        return None
    v = headers.get(name)
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", errors="replace")
    return str(v)


class ParseReadings(beam.DoFn):
    """KafkaRecord -> LakeRecord (raw or rejected row, with its Kafka coordinates), plus an
    Observation per reading on tag ``readings`` (for the 1-minute windows). Where a row is stored
    is the sink's business (sensorlake.lake).

    ``registry`` is a mapping, or a callable returning the current one (a ``RegistrySource``
    follows registry updates without a restart). ``topic_prefix``: the bridge's MQTT topic prefix,
    so that a payload without a sensor id takes the one its topic (``<prefix>/<id>``) names.
    Element timestamps are left alone: they are the Kafka CreateTime, i.e. event time already.
    """

    READINGS_TAG = "readings"

    def __init__(self, registry: Mapping[str, Sensor] | Callable[[], Mapping[str, Sensor]] | None = None, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 max_future_ms: int = DEFAULT_MAX_FUTURE_MS, clock=time.time, topic_prefix: str = "sensors"):
        if callable(registry):
            self._registry = registry
        else:
            fixed = dict(registry or {})
            self._registry = lambda: fixed
        self._max_payload_bytes = max_payload_bytes
        self._max_future_ms = max_future_ms
        self._clock = clock
        self._topic_prefix = topic_prefix
        self._parsed = Metrics.counter("parsing", "parsed")
        self._rejected = Metrics.counter("parsing", "rejected")
        self._unregistered = Metrics.counter("parsing", "unregistered")
        self._by_reason = {c: Metrics.counter("parsing", f"rejected_{c}") for c in REASON_CODES}
        # Counted here, reported by report_counts once per batch: a Beam counter's inc looks up the
        # current metrics container on every call, a few microseconds per record.
        self.discard_counts()
        self._topics: dict[bytes, tuple[str | None, str | None]] = {}  # raw topic -> (topic, its sensor id)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def process(self, record) -> Iterable:
        lake_record, observation = self.parse(record, self.now_ms())
        yield lake_record
        if observation is not None:
            yield beam.pvalue.TaggedOutput(self.READINGS_TAG, observation)

    def start_bundle(self):
        self.discard_counts()

    def finish_bundle(self):
        self.report_counts()

    def discard_counts(self) -> None:
        """Forgets what parse counted since the last report: a bundle that failed is retried, and
        its records are counted when they are parsed again."""
        self._counts = {"parsed": 0, "unregistered": 0}
        self._reasons = {}

    def report_counts(self) -> None:
        """Adds what parse counted since the last call to the job's counters."""
        counts, reasons = self._counts, self._reasons
        if counts["parsed"]:
            self._parsed.inc(counts["parsed"])
        if counts["unregistered"]:
            self._unregistered.inc(counts["unregistered"])
        if reasons:
            self._rejected.inc(sum(reasons.values()))
            for code, n in reasons.items():
                self._by_reason[code].inc(n)
        self.discard_counts()

    def _topic(self, headers: Mapping | None) -> tuple[str | None, str | None]:
        """The record's MQTT topic as text and the sensor id it names, decoded once per topic (a
        fleet's topics repeat with every reading)."""
        raw = headers.get("mqtt_topic") if headers else None
        if not isinstance(raw, bytes):
            topic = _header_text(headers, "mqtt_topic")
            return topic, contract.topic_sensor_id(topic, self._topic_prefix)
        known = self._topics.get(raw)
        if known is None:
            if len(self._topics) >= 100_000:  # bounded: topics outside a fleet's naming may not repeat
                self._topics.clear()
            topic = raw.decode("utf-8", errors="replace")
            known = self._topics[raw] = (topic, contract.topic_sensor_id(topic, self._topic_prefix))
        return known

    def parse(self, record, now_ms: int) -> tuple[LakeRecord, Observation | None]:
        """One record's lake row and, for a reading, its Observation; ``now_ms`` is the ingest
        time (a caller parsing a whole batch asks the clock once).

        Timestamps in the rows are epoch ms: Arrow's timestamp[ms] columns take them as they are,
        and three datetimes per reading cost about 3 us of the worker's CPU (bench/PIPELINE.md)."""
        payload = record.value if record.value is not None else b""
        topic, topic_sensor_id = self._topic(record.headers)
        result = parse_reading(payload, registry=self._registry(),
                               now_ms=now_ms, max_payload_bytes=self._max_payload_bytes,
                               max_future_ms=self._max_future_ms, topic_sensor_id=topic_sensor_id)
        # A record without a timestamp (-1) is filed under the day it was ingested.
        kafka_ts = record.timestamp_ms if record.timestamp_ms >= 0 else now_ms
        if isinstance(result, Reading):
            self._counts["parsed"] += 1
            if not result.registered:
                self._counts["unregistered"] += 1
            row = {
                "sensor_id": result.sensor_id, "event_time": result.event_time_ms, "value": result.value,
                "unit": result.unit, "type": result.type, "seq": result.seq,
                "registered": result.registered, "payload": bytes(payload), "mqtt_topic": topic,
                "kafka_partition": record.partition, "kafka_offset": record.offset,
                "kafka_timestamp": kafka_ts, "ingest_time": now_ms,
            }
            return (_tuple(LakeRecord, (record.partition, record.offset, RAW_READINGS_DATASET, row)),
                    _tuple(Observation, (result.sensor_id, result.event_time_ms, result.value, result.seq,
                                         _arrival_ms(record, now_ms), result.unit, record.partition)))
        self._reasons[result.reason_code] = self._reasons.get(result.reason_code, 0) + 1
        row = {
            "payload": bytes(payload), "reason_code": result.reason_code,
            "reason": result.message, "kafka_partition": record.partition,
            "kafka_offset": record.offset, "kafka_timestamp": kafka_ts,
            "mqtt_topic": topic, "ingest_time": now_ms,
        }
        return LakeRecord(record.partition, record.offset, REJECTED_READINGS_DATASET, row), None

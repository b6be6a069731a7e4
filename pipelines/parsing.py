"""Parsing MQTT payloads (as carried by Kafka) into typed readings or explicit rejections.

``parse_reading`` is pure and total: any bytes give a ``Reading`` or a ``Rejection`` with a stable
``reason_code``, never an exception, so one malformed message can never fail (and endlessly
replay) a streaming bundle. Rejections are kept, not dropped: ``ParseReadings`` routes them to
``rejected/readings`` with their Kafka coordinates.

Contract decisions (see docs/design.md, "Message contract"):

* Numeric timestamps: ``abs(t) < 1e11`` means epoch **seconds** (int or float; up to year 5138),
  otherwise epoch **milliseconds**. Millisecond timestamps before 1973-03-03T09:46:40Z are thus
  read as seconds (and land far in the future, so they are rejected, not mis-dated silently).
  Float seconds are rounded to the nearest millisecond; ISO fractions are truncated to ms.
* ISO-8601 strings go through ``datetime.fromisoformat`` (3.11: ``Z``, offsets); no offset = UTC.
* ``value`` must be a JSON number: bools, numeric strings ("21.4"), lists are ``bad_value_type``.
  NaN/Infinity tokens (which Python's json accepts) are ``non_finite_value``; literals that
  overflow a float (``1e400``) are ``number_out_of_range``.
* ``sensor_id``: non-empty string or JSON integer (turned into text), at most 128 characters.
* Unknown sensors are accepted with ``registered=False``: the registry may lag behind the fleet.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.sinks import LakeRecord
from pipelines.windows import Observation
from sensorlake.contract import EPOCH_SECONDS_LIMIT, epoch_to_ms, iso_to_ms  # noqa: F401 - re-exported
from sensorlake.lake import RAW_READINGS_DATASET, REJECTED_READINGS_DATASET
from sensorlake.registry import Sensor

DEFAULT_MAX_PAYLOAD_BYTES = 262_144
DEFAULT_MAX_FUTURE_MS = 86_400_000  # one day: clocks drift, but not by days
MAX_SENSOR_ID_LEN = 128
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


class _NonFinite:
    """Stands for a NaN/Infinity token, so it can be told apart from an overflowing literal."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token


def _parse_constant(token: str) -> _NonFinite:
    return _NonFinite(token)


_decoder = json.JSONDecoder(parse_constant=_parse_constant)


def _reject(code: str, message: str) -> Rejection:
    return Rejection(code, message)


def _timestamp_ms(ts: Any) -> int | Rejection:
    if isinstance(ts, bool) or ts is None:
        return _reject("bad_timestamp",
                       f"timestamp must be ISO-8601 text or epoch number, got {ts!r}")
    if isinstance(ts, (int, float)):
        ms = epoch_to_ms(ts)
        if ms is None:
            return _reject("bad_timestamp", f"timestamp is not a finite number: {ts!r}")
        return ms
    if isinstance(ts, str):
        try:
            ms = iso_to_ms(ts)
        except OverflowError:  # e.g. year 1 with a positive offset
            return _reject("timestamp_out_of_range", f"timestamp out of range: {ts[:64]!r}")
        if ms is None:
            return _reject("bad_timestamp", f"timestamp is not ISO-8601: {ts[:64]!r}")
        return ms
    return _reject("bad_timestamp",
                   f"timestamp must be ISO-8601 text or epoch number, got {type(ts).__name__}")


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
           max_future_ms: int) -> Reading | Rejection:
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
        doc = _decoder.decode(text)
    except ValueError as exc:  # JSONDecodeError, and int literals beyond the digit limit
        return _reject("not_json", f"payload is not JSON: {exc}"[:200])
    except RecursionError:  # [[[[...]]]] deeper than the decoder's stack: not a reading either
        return _reject("not_json", "payload is not JSON we accept: nested too deeply")
    if not isinstance(doc, dict):
        return _reject("not_object", f"payload is JSON {type(doc).__name__}, expected an object")

    # sensor_id
    sid = doc.get("sensor_id")
    if sid is None:
        return _reject("missing_sensor_id", "sensor_id is missing or null")
    if isinstance(sid, int) and not isinstance(sid, bool):
        sid = str(sid)
    elif not isinstance(sid, str):
        return _reject("bad_sensor_id",
                       f"sensor_id must be a string or integer, got {type(sid).__name__}")
    if not sid.strip():
        return _reject("bad_sensor_id", "sensor_id is empty")
    if len(sid) > MAX_SENSOR_ID_LEN:
        return _reject("bad_sensor_id",
                       f"sensor_id is {len(sid)} characters, limit is {MAX_SENSOR_ID_LEN}")

    # value
    if "value" not in doc or doc["value"] is None:
        return _reject("missing_value", "value is missing or null")
    raw = doc["value"]
    if isinstance(raw, _NonFinite):
        return _reject("non_finite_value", f"value is {raw.token}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return _reject("bad_value_type", f"value must be a JSON number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:
        return _reject("number_out_of_range", "value does not fit a 64-bit float")
    if not math.isfinite(value):  # only overflowing literals get here: tokens were caught above
        return _reject("number_out_of_range", "value does not fit a 64-bit float")

    # timestamp
    ts = doc.get("timestamp")
    if ts is None:
        return _reject("missing_timestamp", "timestamp is missing or null")
    if isinstance(ts, _NonFinite):
        return _reject("bad_timestamp", f"timestamp is {ts.token}")
    ms = _timestamp_ms(ts)
    if isinstance(ms, Rejection):
        return ms
    if ms < 0:
        return _reject("timestamp_out_of_range", f"timestamp {ts!r} is before 1970-01-01")
    if ms > now_ms + max_future_ms:
        return _reject("timestamp_out_of_range",
                       f"timestamp {ts!r} is more than {max_future_ms} ms in the future")

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
    return Reading(sid, ms, value, unit, kind, seq, sensor is not None)


def parse_reading(payload: bytes, *, registry: Mapping[str, Sensor], now_ms: int,
                  max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                  max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> Reading | Rejection:
    """Parse one payload; never raises (a failure to parse is data, not an error)."""
    try:
        return _parse(payload, registry, now_ms, max_payload_bytes, max_future_ms)
    except Exception as exc:  # noqa: BLE001 - totality is the contract; the code flags a bug
        return _reject("unparseable", f"unexpected {type(exc).__name__}: {exc}"[:200])


def ms_to_datetime(ms: int) -> datetime:
    """Exact (integer) ms -> aware UTC datetime, as pyarrow wants for timestamp[ms, UTC]."""
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
    follows registry updates without a restart). Element timestamps are left alone: they are the
    Kafka CreateTime, i.e. event time already.
    """

    READINGS_TAG = "readings"

    def __init__(self, registry: Mapping[str, Sensor] | Callable[[], Mapping[str, Sensor]] | None = None, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 max_future_ms: int = DEFAULT_MAX_FUTURE_MS, clock=time.time):
        if callable(registry):
            self._registry = registry
        else:
            fixed = dict(registry or {})
            self._registry = lambda: fixed
        self._max_payload_bytes = max_payload_bytes
        self._max_future_ms = max_future_ms
        self._clock = clock
        self._parsed = Metrics.counter("parsing", "parsed")
        self._rejected = Metrics.counter("parsing", "rejected")
        self._unregistered = Metrics.counter("parsing", "unregistered")
        self._by_reason = {c: Metrics.counter("parsing", f"rejected_{c}") for c in REASON_CODES}

    def process(self, record) -> Iterable:
        now_ms = int(self._clock() * 1000)
        ingest_time = ms_to_datetime(now_ms)
        payload = record.value if record.value is not None else b""
        result = parse_reading(payload, registry=self._registry(),
                               now_ms=now_ms, max_payload_bytes=self._max_payload_bytes,
                               max_future_ms=self._max_future_ms)
        topic = _header_text(record.headers, "mqtt_topic")
        # A record without a timestamp (-1) is filed under the day it was ingested.
        kafka_ts = ms_to_datetime(record.timestamp_ms if record.timestamp_ms >= 0 else now_ms)
        if isinstance(result, Reading):
            self._parsed.inc()
            if not result.registered:
                self._unregistered.inc()
            et = ms_to_datetime(result.event_time_ms)
            row = {
                "sensor_id": result.sensor_id, "event_time": et, "value": result.value,
                "unit": result.unit, "type": result.type, "seq": result.seq,
                "registered": result.registered, "payload": bytes(payload), "mqtt_topic": topic,
                "kafka_partition": record.partition, "kafka_offset": record.offset,
                "kafka_timestamp": kafka_ts, "ingest_time": ingest_time,
            }
            yield LakeRecord(record.partition, record.offset, RAW_READINGS_DATASET, row)
            yield beam.pvalue.TaggedOutput(self.READINGS_TAG, Observation(
                result.sensor_id, result.event_time_ms, result.value, result.seq,
                _arrival_ms(record, now_ms), result.unit, record.partition))
        else:
            self._rejected.inc()
            self._by_reason[result.reason_code].inc()
            row = {
                "payload": bytes(payload), "reason_code": result.reason_code,
                "reason": result.message, "kafka_partition": record.partition,
                "kafka_offset": record.offset, "kafka_timestamp": kafka_ts,
                "mqtt_topic": topic, "ingest_time": ingest_time,
            }
            yield LakeRecord(record.partition, record.offset, REJECTED_READINGS_DATASET, row)

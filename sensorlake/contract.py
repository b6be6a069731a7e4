"""The message contract, implemented once: field names and aliases, sensor ids, timestamps, values
and topics. docs/contract.md has the same rules as a table.

Two readers use it and must never disagree:

* the bridge (connectors/mqtt_kafka) keys each Kafka record by the reading's sensor id and stamps
  it with the reading's event time, using :func:`scan`;
* the pipeline (pipelines/parsing.py) turns each payload into a reading or a rejection, using
  :func:`pick`, :func:`sensor_id`, :func:`timestamp_ms` and :func:`reading_value` on the payload
  decoded by :data:`DECODER`.

Both decode with the same decoder and read the fields with the same functions, so for a reading
the pipeline accepts, the Kafka key is its sensor id and the record timestamp its event time
(tests/unit/test_contract.py checks it on thousands of generated payloads). Kept free of Beam so
the bridge imports nothing heavy.

The rules:

* sensor id: ``sensor_id``, else ``id`` (the challenge's generator sends ``id``); the first of
  them that is present and not null is used, the other is ignored. A non-empty string of at most
  128 characters (spaces are fine: "Sensor 1") or a JSON integer (turned into text). When the
  payload has neither, the topic ``<prefix>/<id>`` names the sensor (its last level); the topic
  ``<prefix>`` itself (the challenge's ``sensors``) names none.
* event time: ``timestamp``, else ``dt`` (the challenge's name), same precedence.
  - ISO-8601 text: ``Z``, an offset, or no zone at all (= UTC, the challenge's
    ``datetime.utcnow().isoformat()``), with any fraction or none; truncated to milliseconds.
  - a JSON number: epoch seconds when ``abs(t) < 1e11`` (up to the year 5138), else epoch
    milliseconds; float seconds are rounded to the nearest millisecond.
  - a string of digits ("1764349200", "20261202") is rejected: it could be epoch seconds, epoch
    milliseconds or an ISO basic date, and guessing would file readings under the wrong day.
    Send epoch time as a JSON number.
* value: a JSON number (integer or float); not a bool, not a string; NaN/Infinity are rejected.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Mapping, NamedTuple

SENSOR_ID_FIELDS = ("sensor_id", "id")
TIMESTAMP_FIELDS = ("timestamp", "dt")
VALUE_FIELD = "value"
MAX_SENSOR_ID_LEN = 128

#: |epoch| below this is seconds, at or above it milliseconds (1e11 s is the year 5138;
#: 1e11 ms is 1973).
EPOCH_SECONDS_LIMIT = 100_000_000_000

_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_NUMERIC = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


class Invalid(NamedTuple):
    """A field that is present but unusable: the pipeline's reason code and message."""

    code: str
    message: str


class NonFinite:
    """Stands for a NaN/Infinity token of the payload (``json`` would make it a float), so that it
    can be told apart from a literal that overflows a float (``1e400``)."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token

    def __repr__(self) -> str:
        return self.token


#: The JSON decoder of the contract: Python's, with NaN/Infinity tokens kept as NonFinite.
DECODER = json.JSONDecoder(parse_constant=NonFinite)


# ---------------------------------------------------------------------------- fields
def pick(doc: Mapping, names: tuple[str, ...]) -> tuple[str | None, Any]:
    """(name, value) of the first of ``names`` present in ``doc`` with a non-null value;
    (None, None) when there is none."""
    for name in names:
        value = doc.get(name)
        if value is not None:
            return name, value
    return None, None


def sensor_id(value: Any, field: str = "sensor_id") -> str | Invalid:
    """A sensor id from the payload: a non-empty string (at most 128 characters) or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        return Invalid("bad_sensor_id", f"{field} must be a string or integer, got {type(value).__name__}")
    if not value.strip():
        return Invalid("bad_sensor_id", f"{field} is empty")
    if len(value) > MAX_SENSOR_ID_LEN:
        return Invalid("bad_sensor_id", f"{field} is {len(value)} characters, limit is {MAX_SENSOR_ID_LEN}")
    return value


def topic_sensor_id(topic: str | bytes | None, prefix: str) -> str | None:
    """The sensor a topic names: the last level of ``<prefix>/.../<id>``; None for the prefix
    itself (the challenge's single topic ``sensors``), for a topic outside the prefix or ending
    with ``/``. Not validated like a payload's id: an id the pipeline rejects cannot be published
    as a topic level anyway (MQTT levels are non-empty UTF-8 without wildcards)."""
    if not topic:
        return None
    if isinstance(topic, (bytes, bytearray, memoryview)):
        try:
            topic = bytes(topic).decode("utf-8")
        except UnicodeDecodeError:
            return None
    root = prefix.strip("/")
    if root and not topic.startswith(root + "/"):
        return None
    last = topic[topic.rfind("/") + 1:]
    return last or None


def epoch_to_ms(value: int | float) -> int | None:
    """Epoch seconds or milliseconds, told apart by magnitude, to ms; None if not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if -EPOCH_SECONDS_LIMIT < value < EPOCH_SECONDS_LIMIT:
        return value * 1000 if isinstance(value, int) else round(value * 1000)
    return value if isinstance(value, int) else round(value)


def iso_to_ms(text: str) -> int | None:
    """ISO-8601 with ``Z``, an offset or no zone (no zone means UTC) to epoch ms, truncated
    (floored) from microseconds; None if invalid."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    # integer arithmetic: exact, and several times faster than datetime subtraction
    us = (((dt.toordinal() - _EPOCH_ORDINAL) * 86_400 + dt.hour * 3600 + dt.minute * 60 + dt.second) * 1_000_000
          + dt.microsecond)
    off = dt.utcoffset()
    if off is not None:
        us -= (off.days * 86_400 + off.seconds) * 1_000_000 + off.microseconds
    return us // 1000


def _numeric_text(text: str) -> bool:
    # ISO's usual (extended) form has a "-" after the year: skip the regex for it
    return text[4:5] != "-" and _NUMERIC.fullmatch(text) is not None


def timestamp_ms(value: Any, field: str = "timestamp") -> int | Invalid:
    """A reading's event time in epoch milliseconds (see the module's rules), or why not.

    Range checks against the clock (before 1970, too far ahead) are the caller's: the bridge and
    the pipeline each have their own limit."""
    if isinstance(value, str):
        if _numeric_text(value):
            return Invalid("bad_timestamp", f"{field} is a number in a string ({value[:64]!r}): send epoch "
                                            "time as a JSON number, or ISO-8601 text")
        ms = iso_to_ms(value)
        if ms is None:
            return Invalid("bad_timestamp", f"{field} is not ISO-8601: {value[:64]!r}")
        return ms
    if isinstance(value, bool) or value is None:
        return Invalid("bad_timestamp", f"{field} must be ISO-8601 text or an epoch number, got {value!r}")
    if isinstance(value, NonFinite):
        return Invalid("bad_timestamp", f"{field} is {value.token}")
    if isinstance(value, (int, float)):
        ms = epoch_to_ms(value)
        if ms is None:
            return Invalid("bad_timestamp", f"{field} is not a finite number: {value!r}")
        return ms
    return Invalid("bad_timestamp", f"{field} must be ISO-8601 text or an epoch number, got {type(value).__name__}")


def reading_value(raw: Any) -> float | Invalid:
    """The reading's value as a float: a JSON number, finite."""
    if isinstance(raw, NonFinite):
        return Invalid("non_finite_value", f"value is {raw.token}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return Invalid("bad_value_type", f"value must be a JSON number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except OverflowError:
        return Invalid("number_out_of_range", "value does not fit a 64-bit float")
    if not math.isfinite(value):  # only overflowing literals get here: tokens are NonFinite
        return Invalid("number_out_of_range", "value does not fit a 64-bit float")
    return value


# ---------------------------------------------------------------------------- what the bridge reads
class Envelope(NamedTuple):
    """What the bridge needs of a payload. Each field is None when the payload has no such field
    (or is not a JSON object), an Invalid when it has one the pipeline will reject."""

    sensor_id: str | Invalid | None
    timestamp_ms: int | Invalid | None


NOTHING = Envelope(None, None)


def envelope_of(doc: Any) -> Envelope:
    """The sensor id and event time of a decoded payload, by the contract's rules."""
    if not isinstance(doc, dict):
        return NOTHING
    name, raw = pick(doc, SENSOR_ID_FIELDS)
    sid = None if name is None else sensor_id(raw, name)
    name, raw = pick(doc, TIMESTAMP_FIELDS)
    ts = None if name is None else timestamp_ms(raw, name)
    return Envelope(sid, ts)


def scan(payload: bytes) -> Envelope:
    """:func:`envelope_of` the raw payload, decoded as the pipeline decodes it; NOTHING when it is
    not JSON. Never raises. The bridge calls it for every message.

    Decoding in full costs about as much as searching the bytes for the fields did (measured:
    ~2.5-3.5 us for a reading either way, most of it the timestamp), and cannot disagree with the
    pipeline's reading of the same payload."""
    try:
        return envelope_of(DECODER.decode(payload.decode("utf-8")))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOTHING

"""Event time of a reading, for the Kafka record timestamp.

The pipeline reads Kafka with the CreateTime policy, so the record timestamp must be the
reading's own time (a backfill then lands in last week's windows instead of being late). This
runs once per message on the bridge's hot path, so it looks for ``"timestamp"`` with one regex
and only parses the whole JSON document when that is ambiguous (the key occurs more than once, or
is not at the top level). Never raises: anything unparseable is ``None`` (use receive time).
"""

from __future__ import annotations

import json
import re

from sensorlake import contract
from sensorlake.contract import epoch_to_ms

#: Kafka 4 rejects records more than ``log.message.timestamp.after.max.ms`` (1 h by default)
#: ahead of the broker clock; such a record would block the bridge, so it is re-stamped.
MAX_FUTURE_MS = 3600 * 1000

_KEY = b'"timestamp"'
_TS = re.compile(rb'"timestamp"\s*:\s*(?:"([^"\\]{1,64})"|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))')
_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")

# Why a record is not stamped with its event time (the ``timestamp_fallback`` header).
NO_TIMESTAMP = "no_timestamp"
FUTURE = "future"
BEFORE_EPOCH = "before_epoch"
REJECTED = "rejected_by_kafka"


def iso_to_ms(text: str) -> int | None:
    """The contract's ISO rule; None also when an offset pushes the instant out of range."""
    try:
        return contract.iso_to_ms(text)
    except OverflowError:
        return None


def value_to_ms(value: object) -> int | None:
    """A decoded JSON ``timestamp`` value (string or number) to epoch milliseconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return epoch_to_ms(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC.fullmatch(text):
            return epoch_to_ms(float(text))
        return iso_to_ms(text)
    return None


def event_time_ms(payload: bytes) -> int | None:
    """The reading's top-level ``timestamp`` in epoch ms, or None when absent or unparseable."""
    try:
        count = payload.count(_KEY)
        if count == 0:
            return None
        m = _TS.search(payload) if count == 1 else None
        # fast path only when the key is at the top level (one "{" open before it)
        if m is not None and payload.count(b"{", 0, m.start()) - payload.count(b"}", 0, m.start()) == 1:
            text, number = m.groups()
            if number is not None:
                return epoch_to_ms(float(number))
            return value_to_ms(text.decode("utf-8", "replace"))
        doc = json.loads(payload)
        if isinstance(doc, dict):
            return value_to_ms(doc.get("timestamp"))
        return None
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None


def record_timestamp(event_ms: int | None, receive_ms: int) -> tuple[int, str | None]:
    """(timestamp for the Kafka record, fallback reason or None when it is the event time).

    Falls back to the receive time for what Kafka would refuse: more than an hour in the future
    (it would otherwise fail the send and stall the ordered acks) or before 1970 (negative).
    """
    if event_ms is None:
        return receive_ms, NO_TIMESTAMP
    if event_ms < 0:
        return receive_ms, BEFORE_EPOCH
    if event_ms > receive_ms + MAX_FUTURE_MS:
        return receive_ms, FUTURE
    return event_ms, None

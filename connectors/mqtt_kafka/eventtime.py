"""Event time of a reading, for the Kafka record timestamp.

The pipeline reads Kafka with the CreateTime policy, so the record timestamp must be the
reading's own time (a backfill then lands in last week's windows instead of being late). The
reading's time is found by the contract's one implementation (``sensorlake.contract.scan``: the
top-level ``timestamp``, else ``dt``), so the bridge and the pipeline never disagree about it.
Anything absent or unusable is ``None`` (use receive time).
"""

from __future__ import annotations

from sensorlake import contract

#: Kafka 4 rejects records more than ``log.message.timestamp.after.max.ms`` (1 h by default)
#: ahead of the broker clock; such a record would block the bridge, so it is re-stamped.
MAX_FUTURE_MS = 3600 * 1000

# Why a record is not stamped with its event time (the ``timestamp_fallback`` header).
NO_TIMESTAMP = "no_timestamp"
FUTURE = "future"
BEFORE_EPOCH = "before_epoch"
REJECTED = "rejected_by_kafka"


def usable(ts: int | contract.Invalid | None) -> int | None:
    """An Envelope's event time, or None when the payload has none the pipeline would accept."""
    return ts if isinstance(ts, int) else None


def event_time_ms(payload: bytes) -> int | None:
    """The reading's event time in epoch ms, or None when absent or unparseable. Never raises."""
    return usable(contract.scan(payload).timestamp_ms)


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

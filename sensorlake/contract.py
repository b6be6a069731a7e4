"""The message contract's timestamp rule, shared by the bridge and the pipeline.

The bridge stamps Kafka records with it and the pipeline parses event times with it; one rule
keeps a reading's Kafka timestamp and its event_time equal. Kept free of Beam so the bridge's
hot path imports nothing heavy.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

#: |epoch| below this is seconds, at or above it milliseconds (1e11 s is the year 5138;
#: 1e11 ms is 1973).
EPOCH_SECONDS_LIMIT = 100_000_000_000

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def epoch_to_ms(value: int | float) -> int | None:
    """Epoch seconds or milliseconds, told apart by magnitude, to ms; None if not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if -EPOCH_SECONDS_LIMIT < value < EPOCH_SECONDS_LIMIT:
        return value * 1000 if isinstance(value, int) else round(value * 1000)
    return value if isinstance(value, int) else round(value)


def iso_to_ms(text: str) -> int | None:
    """ISO-8601 with ``Z``, an offset or no zone (no zone means UTC) to epoch ms; None if invalid.

    Raises OverflowError when an offset pushes the instant outside datetime's range.
    """
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - _EPOCH_UTC) // _MS

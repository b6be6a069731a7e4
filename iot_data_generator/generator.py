"""The deterministic core of the IoT data generator.

Nothing here touches the network or the wall clock: given the sensors, the options and a start
time, :class:`ReadingStream` yields the same ``(topic, payload, meta)`` messages in the same order
every time. The MQTT side (``cli.py``) only paces and publishes them, so values, fault injection
and the loss-accounting report can be tested without a broker.

Counting rules (the report and the loss accounting rely on them):

* ``seq`` is a per-sensor counter from 0. Every *generated* reading takes the next seq, dropped
  ones included, so gaps in what arrives are exactly the drops (and any transport loss).
* A silent window (``--silent``) means the device was not sampling: no reading and no seq.
* ``--count`` counts generated readings (dropped ones included) over all sensors.
* drop and malformed rates are per generated reading; out-of-range, late and duplicate rates are
  per published (not dropped) reading.
* A malformed message is an *extra* message on the sensor's topic, in addition to the reading of
  that slot: it takes no seq, carries none, and is not counted as sent. The pipeline must reject it.
* A duplicate is the same payload bytes published again right after the original.
* A late reading keeps its original timestamp and is published ``late_delay`` seconds of event
  time after its slot; readings still waiting when the stream ends are published at the end.
* Timestamps sit on the slots (start + seq * interval, silent slots aside); publish times are
  staggered within the interval per sensor, so the rate is steady rather than one burst a slot.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

from sensorlake.registry import Sensor

FAULT_NAMES = ("drop", "out_of_range", "malformed", "duplicate", "late")
MALFORMED_KINDS = (
    "truncated",
    "not_json",
    "missing_sensor_id",
    "missing_value",
    "missing_timestamp",
    "non_numeric_value",
    "non_finite_value",
    "bad_timestamp",
)
SYNTHETIC_PREFIX = "synthetic-"
DEFAULT_LATE_DELAY_S = (30.0, 90.0)

# Reading kinds in Meta.kind
READING, DUPLICATE, MALFORMED = "reading", "duplicate", "malformed"


@dataclass(frozen=True)
class FaultRates:
    """Per-message probabilities, each in [0, 1]."""

    drop: float = 0.0
    out_of_range: float = 0.0
    malformed: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0

    def __post_init__(self) -> None:
        for name in FAULT_NAMES:
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} rate must be within [0, 1], got {v}")

    @property
    def any(self) -> bool:
        return any(getattr(self, n) for n in FAULT_NAMES)


NO_FAULTS = FaultRates()


@dataclass(slots=True)
class Meta:
    """What the publisher and the ledger need to know about one message."""

    sensor_id: str
    seq: int | None
    kind: str  # READING, DUPLICATE or MALFORMED
    event_us: int  # event time of the reading (epoch microseconds)
    offset_us: int  # when to publish, in microseconds of stream time since the start
    late: bool = False
    out_of_range: bool = False
    malformed_kind: str | None = None


class Message(NamedTuple):
    topic: str
    payload: bytes
    meta: Meta


@dataclass(frozen=True)
class GeneratorConfig:
    sensors: Mapping[str, Sensor]
    start: datetime
    seed: int = 0
    topic_prefix: str = "sensors"
    count: int | None = None  # generated readings over all sensors, then stop
    horizon_s: float | None = None  # stream seconds, then stop
    # Effective interval = interval_ms * interval_scale. 1.0 keeps the registry's intervals;
    # the CLI scales them so that --rate holds while event time tracks the wall clock.
    interval_scale: float = 1.0
    faults: Mapping[str, FaultRates] = field(default_factory=dict)
    silent: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    late_delay_s: tuple[float, float] = DEFAULT_LATE_DELAY_S

    def natural_rate(self) -> float:
        """Readings per second of stream time over all sensors."""
        return sum(1000.0 / (s.interval_ms * self.interval_scale) for s in self.sensors.values())


# --------------------------------------------------------------------------- registry helpers
def with_synthetic(sensors: Mapping[str, Sensor], n: int) -> dict[str, Sensor]:
    """Adds ``n`` sensors shaped like the registry's (cycling through them as templates)."""
    out = dict(sensors)
    templates = list(sensors.values())
    if n and not templates:
        raise ValueError("cannot add synthetic sensors to an empty registry")
    width = max(4, len(str(n)))
    for i in range(1, n + 1):
        t = templates[(i - 1) % len(templates)]
        sid = f"{SYNTHETIC_PREFIX}{i:0{width}d}"
        if sid in out:
            raise ValueError(f"synthetic sensor id {sid!r} is already in the registry")
        jitter = (i % 100) * 1e-4
        out[sid] = Sensor(
            sensor_id=sid,
            lat=None if t.lat is None else _nudge(t.lat, jitter, 90),
            lng=None if t.lng is None else _nudge(t.lng, -jitter, 180),
            unit=t.unit,
            type=t.type,
            range_min=t.range_min,
            range_max=t.range_max,
            description=f"Synthetic {t.type} sensor {i} (like {t.description or t.sensor_id})",
            interval_ms=t.interval_ms,
        )
    return out


def _nudge(v: float, by: float, bound: float) -> float:
    """v moved by ``by``, or the other way when that would leave [-bound, bound] (the challenge's
    sensors sit on lat 90)."""
    return round(v + by if -bound <= v + by <= bound else v - by, 6)


def registry_document(sensors: Mapping[str, Sensor]) -> dict:
    """The sensors.json shape, so a run with synthetic sensors can hand the pipeline its registry."""
    doc = {}
    for sid, s in sensors.items():
        doc[sid] = {
            "lat": s.lat,
            "lng": s.lng,
            "unit": s.unit,
            "type": s.type,
            "range": [_num(s.range_min), _num(s.range_max)],
            "description": s.description,
            "interval_ms": s.interval_ms,
        }
    return doc


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


# --------------------------------------------------------------------------- time formatting
def to_epoch_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class _IsoFormatter:
    """ISO-8601 UTC with microseconds and ``Z``; caches the per-second prefix (hot path)."""

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec: int | None = None
        self._prefix = ""

    def __call__(self, us: int) -> str:
        sec, frac = divmod(us, 1_000_000)
        if sec != self._sec:
            t = time.gmtime(sec)
            self._prefix = (
                f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
                f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
            )
            self._sec = sec
        return f"{self._prefix}{frac:06d}Z"


# --------------------------------------------------------------------------- value model
class SensorModel:
    """Daily sinusoid + slow mean-reverting drift + small white noise, clamped to the range.

    The parameters come from (seed, sensor id) only, so adding sensors or changing fault
    rates never changes another sensor's values.
    """

    DRIFT_TAU_S = 900.0  # drift decorrelates over ~15 minutes

    def __init__(self, sensor: Sensor, seed: int, interval_us: float) -> None:
        rng = random.Random(f"sensorlake-model:{seed}:{sensor.sensor_id}")
        self.lo, self.hi = sensor.range_min, sensor.range_max
        span = self.hi - self.lo
        self.span = span
        self.decimals = 2 if span <= 0 else max(2, 3 - math.floor(math.log10(span)))
        self.base = self.lo + span * rng.uniform(0.35, 0.55)
        self.amp = span * rng.uniform(0.06, 0.14)
        # Warmest around mid-afternoon local solar time (longitude shifts it from UTC).
        peak_local_h = rng.uniform(13.5, 16.5)
        lng = sensor.lng if isinstance(sensor.lng, (int, float)) else 0.0
        self.peak_s = ((peak_local_h - lng / 15.0) * 3600.0) % 86_400.0
        drift_sd = span * 0.01
        self.phi = math.exp(-(interval_us / 1e6) / self.DRIFT_TAU_S)
        self.drift_step = drift_sd * math.sqrt(max(0.0, 1.0 - self.phi * self.phi))
        self.noise_sd = span * 0.002
        self.drift = rng.gauss(0.0, drift_sd)
        self.rng = rng

    def value(self, event_us: int) -> float:
        gauss = self.rng.gauss
        self.drift = self.phi * self.drift + gauss(0.0, self.drift_step)
        day_pos = ((event_us / 1e6 - self.peak_s) % 86_400.0) / 86_400.0
        v = self.base + self.amp * math.cos(2.0 * math.pi * day_pos) + self.drift + gauss(0.0, self.noise_sd)
        v = round(v, self.decimals)
        return min(self.hi, max(self.lo, v))

    def out_of_range(self, rng: random.Random) -> float:
        width = self.span if self.span > 0 else max(1.0, abs(self.hi))
        excess = width * rng.uniform(0.05, 0.5)
        v = self.hi + excess if rng.random() < 0.5 else self.lo - excess
        v = round(v, self.decimals)
        if self.lo <= v <= self.hi:  # rounding can only pull it back for absurdly tiny ranges
            v = self.hi + width
        return v


# --------------------------------------------------------------------------- the stream
@dataclass
class SensorCounters:
    """Generation-side facts; what was acknowledged is tallied by :class:`Ledger`."""

    next_seq: int = 0
    dropped: int = 0
    silenced: int = 0


class _SensorState:
    __slots__ = ("sensor", "topic", "sid_json", "meta_json", "interval_us", "phase_us", "silent_us",
                 "model", "fault_rng", "detail_rng", "faults", "slot", "counters")


class ReadingStream:
    """Iterate to get the messages in publish order; call :meth:`stop` to wind down early.

    After :meth:`stop` no new readings are generated; the late readings still waiting are
    yielded next (in their release order) and the iteration ends.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        if not config.sensors:
            raise ValueError("no sensors to generate readings for")
        lo, hi = config.late_delay_s
        if not (0 <= lo <= hi):
            raise ValueError(f"late delay must satisfy 0 <= min <= max, got {config.late_delay_s}")
        self.config = config
        self.start_us = to_epoch_us(config.start)
        self.prefix = config.topic_prefix.rstrip("/")
        self._states: list[_SensorState] = []
        for sid, sensor in config.sensors.items():
            st = _SensorState()
            st.sensor = sensor
            st.topic = f"{self.prefix}/{sid}" if self.prefix else sid
            st.sid_json = json.dumps(sid)
            st.meta_json = json.dumps({"unit": sensor.unit, "type": sensor.type})
            st.interval_us = sensor.interval_ms * 1000.0 * config.interval_scale
            if st.interval_us <= 0:
                raise ValueError("interval_scale must be positive")
            st.silent_us = sorted(
                (int(a * 1e6), int(b * 1e6)) for a, b in config.silent.get(sid, ())
            )
            st.model = SensorModel(sensor, config.seed, st.interval_us)
            st.fault_rng = random.Random(f"sensorlake-faults:{config.seed}:{sid}")
            st.detail_rng = random.Random(f"sensorlake-fault-details:{config.seed}:{sid}")
            st.faults = config.faults.get(sid, NO_FAULTS)
            st.slot = 0
            st.counters = SensorCounters()
            self._states.append(st)
        # Publish times are staggered across the interval (timestamps stay on the slot), so many
        # sensors make a steady stream rather than one burst per interval.
        groups: dict[float, list[_SensorState]] = {}
        for st in self._states:
            groups.setdefault(st.interval_us, []).append(st)
        for interval_us, members in groups.items():
            for rank, st in enumerate(members):
                st.phase_us = int(interval_us * rank / len(members))
        self.counters: dict[str, SensorCounters] = {
            st.sensor.sensor_id: st.counters for st in self._states
        }
        self.generated = 0
        self._late: list[tuple[int, int, Message]] = []
        self._late_tie = 0
        self._stopping = False
        self.draining = False  # True once only held-back late readings remain to be yielded
        self._iso = _IsoFormatter()

    def stop(self) -> None:
        self._stopping = True

    def pending(self) -> list[Message]:
        """Late readings generated but not yet yielded (unsent if the run is aborted)."""
        return [m for _, _, m in sorted(self._late)]

    def __iter__(self) -> Iterator[Message]:
        cfg = self.config
        states = self._states
        # Heap of (publish offset, sensor index); a slot's event offset is slot * interval.
        heap = [(st.phase_us, i) for i, st in enumerate(states)]
        heapq.heapify(heap)
        horizon_us = None if cfg.horizon_s is None else int(round(cfg.horizon_s * 1e6))
        count = cfg.count
        late = self._late
        while heap and not self._stopping:
            at, i = heap[0]
            st = states[i]
            off = int(round(st.slot * st.interval_us))
            if horizon_us is not None and off >= horizon_us:
                heapq.heappop(heap)  # this sensor is done; others may still have earlier slots
                continue
            if count is not None and self.generated >= count:
                break
            while late and late[0][0] <= at:
                yield heapq.heappop(late)[2]
            st.slot += 1
            heapq.heapreplace(heap, (int(round(st.slot * st.interval_us)) + st.phase_us, i))
            if st.silent_us and _in_windows(off, st.silent_us):
                st.counters.silenced += 1
                continue
            self.generated += 1
            yield from self._reading(st, off, at)
        self.draining = True
        while late:
            yield heapq.heappop(late)[2]

    def _reading(self, st: _SensorState, off: int, at: int) -> Iterator[Message]:
        c = st.counters
        seq = c.next_seq
        c.next_seq += 1
        event_us = self.start_us + off
        value = st.model.value(event_us)
        r = st.fault_rng.random
        # Always draw all five, so one fault's decisions do not depend on the other rates.
        u_drop, u_mal, u_oor, u_late, u_dup = r(), r(), r(), r(), r()
        f = st.faults
        sid = st.sensor.sensor_id
        ts = self._iso(event_us)
        if u_drop < f.drop:
            c.dropped += 1
        else:
            oor = u_oor < f.out_of_range
            if oor:
                value = st.model.out_of_range(st.detail_rng)
            payload = (
                f'{{"sensor_id": {st.sid_json}, "timestamp": "{ts}", "value": {value!r}, '
                f'"seq": {seq}, "metadata": {st.meta_json}}}'
            ).encode()
            is_late = u_late < f.late
            publish_at = at
            if is_late:
                lo, hi = self.config.late_delay_s
                publish_at = at + int(round(st.detail_rng.uniform(lo, hi) * 1e6))
            msg = Message(st.topic, payload, Meta(sid, seq, READING, event_us, publish_at, is_late, oor))
            dup = None
            if u_dup < f.duplicate:
                dup = Message(st.topic, payload, Meta(sid, seq, DUPLICATE, event_us, publish_at, is_late, oor))
            if is_late:
                self._push_late(publish_at, msg)
                if dup is not None:
                    self._push_late(publish_at, dup)
            else:
                yield msg
                if dup is not None:
                    yield dup
        if u_mal < f.malformed:
            kind, payload = _malformed(st, ts, value, st.detail_rng)
            yield Message(st.topic, payload, Meta(sid, None, MALFORMED, event_us, at, malformed_kind=kind))

    def _push_late(self, at: int, msg: Message) -> None:
        self._late_tie += 1
        heapq.heappush(self._late, (at, self._late_tie, msg))


def _in_windows(off: int, windows: list[tuple[int, int]]) -> bool:
    for a, b in windows:
        if a <= off < b:
            return True
    return False


def _malformed(st: _SensorState, ts: str, value: float, rng: random.Random) -> tuple[str, bytes]:
    """A payload that the contract rejects; never carries a seq, so it can't shadow a reading."""
    kind = MALFORMED_KINDS[rng.randrange(len(MALFORMED_KINDS))]
    sid = st.sensor.sensor_id
    meta = {"unit": st.sensor.unit, "type": st.sensor.type}
    doc: dict = {"sensor_id": sid, "timestamp": ts, "value": value, "metadata": meta}
    if kind == "truncated":
        full = json.dumps(doc).encode()
        return kind, full[: rng.randrange(1, len(full) - 1)]
    if kind == "not_json":
        return kind, f"{sid} {value} {st.sensor.unit} @ {ts}".encode() + b"\xff"
    if kind == "missing_sensor_id":
        del doc["sensor_id"]
    elif kind == "missing_value":
        del doc["value"]
    elif kind == "missing_timestamp":
        del doc["timestamp"]
    elif kind == "non_numeric_value":
        doc["value"] = "n/a"
    elif kind == "non_finite_value":
        doc["value"] = float("nan")
    elif kind == "bad_timestamp":
        doc["timestamp"] = "not-a-timestamp"
    return kind, json.dumps(doc).encode()


# --------------------------------------------------------------------------- the challenge's messages
def challenge_payload(sensor_id: str, utc: datetime, value: int) -> bytes:
    """Exactly what the challenge's own generator publishes: ``json.dumps`` of id, dt and value,
    ``dt`` being ``datetime.utcnow().isoformat()`` (no zone; no fraction when the microsecond is 0)."""
    if utc.tzinfo is not None:
        utc = utc.astimezone(timezone.utc).replace(tzinfo=None)
    return json.dumps({"id": sensor_id, "dt": utc.isoformat(), "value": value}).encode()


def challenge_value(rng: random.Random, sensor: Sensor) -> int:
    """An integer drawn uniformly from the sensor's range, as the challenge's generator draws it."""
    lo, hi = math.ceil(sensor.range_min), math.floor(sensor.range_max)
    return rng.randint(lo, hi) if lo <= hi else round(sensor.range_min)


class ChallengeStream:
    """The challenge's generator as a stream: each sensor publishes (``dt`` = the UTC time of that
    moment), then sleeps its ``interval_ms`` (the challenge's INTERVAL_MS, 1000) before the next.
    All sensors start at once. No seq in the payload: ``Meta.seq`` only numbers each sensor's
    messages for the report.

    ``pace=False`` (dry runs, tests): no sleeping, and time is simulated from ``start`` as if every
    publish took no time. Stops after ``count`` messages or ``duration_s`` seconds, or on :meth:`stop`.
    """

    def __init__(self, sensors: Mapping[str, Sensor], topic: str, seed: int, *, count: int | None = None,
                 duration_s: float | None = None, pace: bool = True, start: datetime | None = None,
                 clock=time.monotonic, sleep=time.sleep) -> None:
        if not sensors:
            raise ValueError("no sensors to generate readings for")
        self.sensors = sensors
        self.topic = topic
        self.rng = random.Random(f"sensorlake-challenge:{seed}")
        self.count = count
        self.duration_s = duration_s
        self.pace = pace
        self.start = start
        self._clock = clock
        self._sleep = sleep
        self.counters = {sid: SensorCounters() for sid in sensors}
        self.generated = 0
        self.draining = False
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    def pending(self) -> list[Message]:
        return []

    def __iter__(self) -> Iterator[Message]:
        t0 = self._clock() if self.pace else 0.0
        start = self.start or datetime.now(timezone.utc)
        heap = [(t0, i, sid) for i, sid in enumerate(self.sensors)]
        while not self._stopping:
            at, i, sid = heap[0]
            if self.count is not None and self.generated >= self.count:
                break
            if self.duration_s is not None and at - t0 >= self.duration_s:
                break
            if self.pace:
                while not self._stopping and (left := at - self._clock()) > 0:
                    self._sleep(min(left, 0.25))
                if self._stopping:
                    break
                utc = datetime.now(timezone.utc)
            else:
                utc = start + timedelta(seconds=at - t0)
            sensor = self.sensors[sid]
            c = self.counters[sid]
            event_us = to_epoch_us(utc)
            payload = challenge_payload(sid, utc, challenge_value(self.rng, sensor))
            self.generated += 1
            yield Message(self.topic, payload, Meta(sid, c.next_seq, READING, event_us, int((at - t0) * 1e6)))
            c.next_seq += 1
            done = self._clock() if self.pace else at
            heapq.heapreplace(heap, (done + sensor.interval_ms / 1000.0, i, sid))  # publish, then sleep
        self.draining = True


# --------------------------------------------------------------------------- accounting
class RangeSet:
    """Sorted disjoint inclusive integer ranges; O(1) for the usual in-order append."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, x: int) -> bool:
        """Adds x; returns False if it was already there."""
        starts, ends = self.starts, self.ends
        if ends and x == ends[-1] + 1:
            ends[-1] = x
            return True
        if ends and x > ends[-1]:
            starts.append(x)
            ends.append(x)
            return True
        i = bisect.bisect_right(starts, x) - 1  # range starting at or before x
        if i >= 0 and x <= ends[i]:
            return False
        joins_left = i >= 0 and ends[i] == x - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == x + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = x
        elif joins_right:
            starts[i + 1] = x
        else:
            starts.insert(i + 1, x)
            ends.insert(i + 1, x)
        return True

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self.starts, self.ends)]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in zip(self.starts, self.ends))


def compact_ranges(seqs: Iterable[int]) -> list[list[int]]:
    rs = RangeSet()
    for s in seqs:
        rs.add(s)
    return rs.ranges()


SENSOR_COUNTERS = ("sent", "dropped", "duplicates", "malformed", "late", "out_of_range", "silenced",
                   "unacked", "refused", "unsent")


class Ledger:
    """Tally of what the broker acknowledged: the basis of loss accounting.

    ``sent`` counts distinct readings with a successful acknowledgement (PUBACK for QoS 1);
    duplicates and malformed messages are counted apart and never as sent.
    """

    def __init__(self, sensor_ids: Iterable[str]) -> None:
        self.per_sensor = {sid: dict.fromkeys(("sent", "duplicates", "malformed", "late", "out_of_range",
                                               "unacked", "refused", "unsent"), 0) for sid in sensor_ids}
        self.seqs = {sid: RangeSet() for sid in self.per_sensor}
        self.malformed_kinds: dict[str, int] = dict.fromkeys(MALFORMED_KINDS, 0)
        self.unacked_messages = 0
        self.refused_messages = 0

    def ack(self, meta: Meta) -> None:
        c = self.per_sensor[meta.sensor_id]
        if meta.kind == READING:
            c["sent"] += 1
            self.seqs[meta.sensor_id].add(meta.seq)
            if meta.late:
                c["late"] += 1
            if meta.out_of_range:
                c["out_of_range"] += 1
        elif meta.kind == DUPLICATE:
            c["duplicates"] += 1
        else:
            c["malformed"] += 1
            self.malformed_kinds[meta.malformed_kind] += 1

    def unacked(self, meta: Meta) -> None:
        """Handed to the client but not acknowledged in time: it may or may not have arrived."""
        self.unacked_messages += 1
        if meta.kind == READING:
            self.per_sensor[meta.sensor_id]["unacked"] += 1

    def unsent(self, meta: Meta) -> None:
        """Generated but never handed to the client (the run was aborted)."""
        if meta.kind == READING:
            self.per_sensor[meta.sensor_id]["unsent"] += 1

    def refused(self, meta: Meta) -> None:
        """The broker answered with a failure reason code (e.g. not authorised for the topic)."""
        self.refused_messages += 1
        if meta.kind == READING:
            self.per_sensor[meta.sensor_id]["refused"] += 1

    def report(self, stream: ReadingStream, options: Mapping | None = None, **extra) -> dict:
        """The JSON report; per sensor ``seq_max + 1 == sent + dropped + unacked + refused + unsent``."""
        unsent = {sid: c["unsent"] for sid, c in self.per_sensor.items()}
        for m in stream.pending():
            if m.meta.kind == READING:
                unsent[m.meta.sensor_id] = unsent.get(m.meta.sensor_id, 0) + 1
        sensors = {}
        for sid, c in self.per_sensor.items():
            gen = stream.counters[sid]
            sensors[sid] = {
                "sent": c["sent"],
                "dropped": gen.dropped,
                "duplicates": c["duplicates"],
                "malformed": c["malformed"],
                "late": c["late"],
                "out_of_range": c["out_of_range"],
                "silenced": gen.silenced,
                "unacked": c["unacked"],
                "refused": c["refused"],
                "unsent": unsent.get(sid, 0),
                "seq_min": 0 if gen.next_seq else None,
                "seq_max": gen.next_seq - 1 if gen.next_seq else None,
                "seqs_sent": self.seqs[sid].ranges(),
            }
        totals = {k: sum(s[k] for s in sensors.values()) for k in SENSOR_COUNTERS}
        totals["generated"] = stream.generated
        totals["messages_unacked"] = self.unacked_messages
        totals["messages_refused"] = self.refused_messages
        totals["malformed_kinds"] = {k: v for k, v in self.malformed_kinds.items() if v}
        out = {"format": "sensorlake-generator-report/1"}
        out.update(extra)
        out["options"] = dict(options or {})
        out["totals"] = totals
        out["sensors"] = sensors
        return out


def simulate(config: GeneratorConfig) -> tuple[list[Message], dict]:
    """Runs the stream as if every message were acknowledged (tests, dry runs)."""
    stream = ReadingStream(config)
    ledger = Ledger(config.sensors)
    messages = []
    for msg in stream:
        ledger.ack(msg.meta)
        messages.append(msg)
    return messages, ledger.report(stream)

"""1-minute event-time windows per sensor, with a per-sensor watermark, and their quality.

Why not Beam's FixedWindows: the watermark that KafkaIO gives a Python pipeline cannot be trusted
for this. Its CreateTime policy is built with a maximum delay of 0 from Python (every reading a
millisecond out of order is late), and an idle partition moves the watermark to the wall clock
(a backfill of last week becomes too late to count). So each sensor keeps its own clock in keyed
state, which is also what a per-sensor quality metric means:

* watermark(sensor) = newest event time seen - ``out_of_orderness_ms`` (default 10 s);
* a window [s, s+60 s) *closes* when the watermark passes s+60 s: its curated and quality rows
  are emitted (version 0), and a registered sensor with no readings in it gets a ``missing`` row;
* readings for a closed window arrive *late*: within ``allowed_lateness_ms`` they update the
  window (``late`` += 1, row re-emitted with version + 1); beyond it they are counted in
  ``windows/dropped_beyond_lateness`` (they are in raw/ regardless);
* a sensor that sends nothing has no event time to advance its clock. ``BatchByShard`` tells
  every known sensor the *arrival* clocks of the Kafka partitions (the bridge's receive time of
  the newest record in each); a sensor that has not sent anything for ``idle_timeout_ms`` of its
  own partition's arrival time is moved to ``arrival - out_of_orderness``. Arrival time per
  partition, not wall-clock time, so that catching up a backlog after a restart (or one reader
  being ahead of another) does not make readings late.

Backfill: a sensor's readings stamped two days ago advance only that sensor's clock, so they land
in the windows of two days ago. A jump of the clock over a long empty gap lists at most
``max_missing_windows`` ``missing`` rows (the most recent ones) and counts the rest.

Duplicates (same seq, or same event time without seq) are counted per window, never averaged.
"""

from __future__ import annotations

import bisect
import math
import pickle
import time
from array import array
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipelines.batching import Batch, GroupPerBundle, KeyedBatch, shard_of
from pipelines.dedupe import add_seq
from sensorlake.lake import READINGS_1MIN_DATASET, SENSOR_QUALITY_DATASET
from sensorlake.quality import Thresholds, completeness, range_validity
from sensorlake.registry import Sensor

WINDOW_MS = 60_000
UTC = timezone.utc


class Observation(NamedTuple):
    """A parsed reading, as the windows need it; arrival_ms is the bridge's receive time."""

    sensor_id: str
    event_time_ms: int
    value: float
    seq: int | None
    arrival_ms: int
    unit: str
    partition: int = 0  # Kafka partition: whose arrival clock says whether this sensor is idle


class Heartbeat(NamedTuple):
    """The arrival clocks (bridge receive time of the newest record) of the Kafka partitions one
    reader has seen, as ((partition, ms), ...): moves idle sensors on.

    A sensor that has sent readings is judged by its own partition's clock only (it remembers its
    partition in its state), so a reader that is ahead on other partitions never makes it late;
    a registered sensor that never sent anything is judged by the slowest clock.
    """

    clocks: tuple[tuple[int, int], ...]


class WindowRow(NamedTuple):
    dataset: str
    window_start_ms: int
    sensor_id: str
    row: dict


class WindowSettings(NamedTuple):
    out_of_orderness_ms: int = 10_000
    allowed_lateness_ms: int = 300_000
    idle_timeout_ms: int = 30_000
    max_missing_windows: int = 60
    shards: int = 64  # keys the sensors' clocks are spread over (see batching.shard_of)

    @classmethod
    def from_settings(cls, s) -> "WindowSettings":
        return cls(s.out_of_orderness_ms, s.allowed_lateness_ms, s.idle_timeout_ms, s.max_missing_windows,
                   s.state_shards)

    @property
    def horizon_ms(self) -> int:
        """How long an unregistered sensor is remembered after its last reading: long enough for
        its last windows to close and pass their lateness."""
        return self.idle_timeout_ms + self.out_of_orderness_ms + self.allowed_lateness_ms + 2 * WINDOW_MS


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def window_start(ms: int) -> int:
    return ms - ms % WINDOW_MS


def _new_acc(unit: str) -> dict:
    # A plain dict (not a class) so that savepoints survive code changes.
    return {"seqs": [], "times": array("q"), "received": 0, "n": 0, "mean": 0.0, "m2": 0.0, "min": None,
            "max": None, "first": None, "last": None, "out": 0, "late": 0, "dup": 0, "version": -1, "unit": unit}


_PACKED_FIELDS = tuple(_new_acc(""))  # a packed window is its values in this order: new fields go last


def _pack(acc: dict) -> bytes:
    """A closed window as one bytes object.

    A closed window changes only when a late reading comes (rarely), but the shard's state is
    decoded whole for every bundle and held until the bundle commits: as dicts, the five or six
    closed windows each sensor keeps within the allowed lateness were most of the worker's peak of
    Python objects at 5,000 sensors (docs/results.md, K12). Packed, each is one object, unpacked
    only when a late reading touches it. The values go without their keys and the array as its
    bytes, so a packed window is smaller than the dict it replaces (bench/state.py)."""
    return pickle.dumps(tuple(acc[k].tobytes() if k == "times" else acc[k] for k in _PACKED_FIELDS),
                        pickle.HIGHEST_PROTOCOL)


def _unpack(acc: dict | bytes | None) -> dict | None:
    """A window's tallies. Older jobs' state holds closed windows as dicts, or as bytes of a pickled
    dict (ff5b668): both come back as they were."""
    if not isinstance(acc, bytes):
        return acc
    values = pickle.loads(acc)
    if isinstance(values, dict):
        return values
    unpacked = {**_new_acc(""), **dict(zip(_PACKED_FIELDS, values))}  # a field added since: its default
    times = array("q")
    times.frombytes(unpacked["times"])
    unpacked["times"] = times
    return unpacked


def _first_time(acc: dict, obs: Observation) -> bool:
    """Whether the window has not had this reading yet, remembering it.

    The readings a window has had are kept as merged seq ranges (one range for a sensor's minute)
    and an array of event times (readings without seq), not as a set of keys: every sensor keeps
    about seven windows within the allowed lateness, the shard's state is decoded whole for each
    bundle and held until the bundle commits, and as sets the windows of a 2,500-sensor fleet were
    600,000 Python objects at once, whose arenas the worker then kept (docs/results.md, K8-K9)."""
    if "keys" in acc:  # a window restored from a savepoint of a job from before the ranges
        keys = acc.pop("keys")
        acc["seqs"], acc["times"] = [], array("q", sorted(k[1] for k in keys if isinstance(k, tuple)))
        for seq in sorted(k for k in keys if not isinstance(k, tuple)):
            add_seq(acc["seqs"], seq)
    if obs.seq is not None:
        return add_seq(acc["seqs"], obs.seq)
    times, t = acc["times"], obs.event_time_ms
    i = bisect.bisect_left(times, t)
    if i < len(times) and times[i] == t:
        return False
    times.insert(i, t)
    return True


def _add(acc: dict, obs: Observation, sensor: Sensor | None) -> bool:
    """Adds a reading to a window's tallies; False if it is a duplicate."""
    if not _first_time(acc, obs):
        acc["dup"] += 1
        return False
    acc["received"] += 1
    if not acc["unit"]:
        acc["unit"] = obs.unit
    value = obs.value
    if sensor is not None and not sensor.in_range(value):
        acc["out"] += 1
        return True
    # Welford: stable mean and variance in one pass. (Written with locals and comparisons rather
    # than min()/max() calls: this runs for every reading, bench/windows_stage.py.)
    n = acc["n"] = acc["n"] + 1
    delta = value - acc["mean"]
    mean = acc["mean"] = acc["mean"] + delta / n
    acc["m2"] += delta * (value - mean)
    low = acc["min"]
    if low is None or value < low:
        acc["min"] = value
    high = acc["max"]
    if high is None or value > high:
        acc["max"] = value
    t = obs.event_time_ms
    first = acc["first"]
    if first is None or t < first:
        acc["first"] = t
    last = acc["last"]
    if last is None or t > last:
        acc["last"] = t
    return True


def window_rows(sensor_id: str, start: int, acc: dict, sensor: Sensor | None, thresholds: Thresholds,
                emitted_ms: int) -> Iterable[WindowRow]:
    """The curated row (only when there are in-range values) and the quality row of a window."""
    common = {"sensor_id": sensor_id, "window_start": _dt(start), "window_end": _dt(start + WINDOW_MS)}
    version = {"version": acc["version"], "emitted_at": _dt(emitted_ms)}
    registered = sensor is not None
    n = acc["n"]
    if n > 0:
        yield WindowRow(READINGS_1MIN_DATASET, start, sensor_id, {
            **common, "count": n, "mean": acc["mean"], "min": acc["min"], "max": acc["max"],
            "stddev": math.sqrt(acc["m2"] / (n - 1)) if n > 1 else None,
            "first_event_time": _dt(acc["first"]), "last_event_time": _dt(acc["last"]),
            "unit": sensor.unit if registered and sensor.unit else acc["unit"], **version})
    received = acc["received"]
    if not registered and received == 0:
        return
    expected = sensor.expected_per_minute if registered else None
    comp = completeness(received, expected)
    validity = range_validity(received - acc["out"], received, registered)
    yield WindowRow(SENSOR_QUALITY_DATASET, start, sensor_id, {
        **common, "expected": expected, "received": received, "completeness": comp,
        "in_range": received - acc["out"], "out_of_range": acc["out"], "range_validity": validity,
        "late": acc["late"], "duplicates": acc["dup"],
        "status": thresholds.status(received, comp, validity, registered),
        "thresholds_version": thresholds.version, **version})


def _empty_minutes(first: int, end: int, opened: Mapping[int, dict | bytes], limit: int) -> tuple[list[int], int]:
    """Window starts in [first, end) without readings: the newest ``limit`` ones, and how many
    older ones are not listed (a clock jump over days must not emit thousands of rows)."""
    floor = max(first, end - limit * WINDOW_MS)
    listed = [s for s in range(floor, end, WINDOW_MS) if s not in opened]
    older = (floor - first) // WINDOW_MS - sum(1 for s in opened if first <= s < floor)
    return listed, older


class SensorMinutes(beam.DoFn):
    """(shard, [Observation | Heartbeat, ...]) -> WindowRows, with the clocks of the shard's sensors
    in keyed state (a dict by sensor id; see batching.shard_of for why not a key per sensor).

    ``registry`` is a callable returning the current registry, so that a reloaded registry applies
    to the next window without a restart; ``clock`` gives processing time (``emitted_at``).
    """

    SENSORS = ReadModifyWriteStateSpec("sensors", PickleCoder())

    def __init__(self, registry: Callable[[], Mapping[str, Sensor]], thresholds: Thresholds,
                 settings: WindowSettings = WindowSettings(), clock: Callable[[], float] | None = None):
        self._registry = registry
        self._thresholds = thresholds
        self._s = settings
        self._clock = clock
        self._members: tuple[object, dict[int, list[str]]] = (None, {})
        self._on_time = Metrics.counter("windows", "windows_closed")
        self._missing = Metrics.counter("windows", "missing_windows")
        self._suppressed = Metrics.counter("windows", "missing_windows_not_listed")
        self._late = Metrics.counter("windows", "late_readings")
        self._late_updates = Metrics.counter("windows", "late_updates")
        self._dropped = Metrics.counter("windows", "dropped_beyond_lateness")
        self._duplicates = Metrics.counter("windows", "duplicates")
        self._forgotten = Metrics.counter("windows", "unregistered_sensors_forgotten")

    def _now_ms(self) -> int:
        return int((self._clock or time.time)() * 1000)

    def _registered_in(self, shard: int, registry: Mapping[str, Sensor]) -> list[str]:
        """The registered sensors of a shard, computed once per registry version."""
        if self._members[0] is not registry:
            members: dict[int, list[str]] = {}
            for sensor_id in sorted(registry):
                members.setdefault(shard_of(sensor_id, self._s.shards), []).append(sensor_id)
            self._members = (registry, members)
        return self._members[1].get(shard, [])

    def process(self, element, state=beam.DoFn.StateParam(SENSORS)):
        shard, events = element  # the shard's events of one bundle, in arrival order
        registry = self._registry()
        sensors: dict[str, dict] = state.read() or {}
        out: list[WindowRow] = []
        for event in events:
            if isinstance(event, Heartbeat):
                self._beat(shard, sensors, event, registry, out)
                continue
            st = sensors.get(event.sensor_id)
            if st is None:
                st = sensors[event.sensor_id] = self._start(
                    event.event_time_ms - self._s.out_of_orderness_ms, event.arrival_ms)
                st["next"] = window_start(event.event_time_ms)
            self._observe(event.sensor_id, st, event, registry.get(event.sensor_id), out)
        state.write(sensors)
        yield from out

    def _beat(self, shard: int, sensors: dict[str, dict], beat: Heartbeat, registry: Mapping[str, Sensor],
              out: list[WindowRow]) -> None:
        """A heartbeat reaches every sensor of the shard: the registered ones (a silent one gets its
        `missing` minutes) and the unregistered ones seen within the horizon; an unregistered
        sensor silent for longer has no window left that could change, so it is forgotten."""
        clocks = dict(beat.clocks)
        for sensor_id in self._registered_in(shard, registry):
            if sensor_id not in sensors:
                st = self._heartbeat(sensor_id, None, beat, registry[sensor_id], out)
                if st is not None:
                    sensors[sensor_id] = st
        for sensor_id in list(sensors):
            st, sensor = sensors[sensor_id], registry.get(sensor_id)
            own = clocks.get(st.get("partition"))  # its own partition's clock, as for idleness
            if sensor is None and own is not None and (st["last_arrival"] or 0) < own - self._s.horizon_ms:
                del sensors[sensor_id]
                self._forgotten.inc()
                continue
            self._heartbeat(sensor_id, st, beat, sensor, out)

    def _heartbeat(self, sensor_id: str, st: dict | None, beat: Heartbeat, sensor: Sensor | None,
                   out: list[WindowRow]) -> dict | None:
        clocks = dict(beat.clocks)
        if st is None:
            if sensor is None:
                return None  # an unknown sensor we have no readings of: nothing to report
            # Report from the minute the stream was first seen flowing, not before it.
            arrival = min(clocks.values())
            st = self._start(arrival - self._s.out_of_orderness_ms, None)
            st["next"] = window_start(arrival)
        elif st["last_arrival"] is None:
            arrival = min(clocks.values())  # never sent anything: the slowest partition decides
        else:
            arrival = clocks.get(st.get("partition"))
            if arrival is None or arrival - st["last_arrival"] < self._s.idle_timeout_ms:
                return st  # not idle, or not its partition's clock: its own readings move it
        self._advance(sensor_id, st, arrival - self._s.out_of_orderness_ms, sensor, out)
        return st

    @staticmethod
    def _start(wm: int, arrival: int | None) -> dict:
        return {"wm": wm, "max_event": None, "last_arrival": arrival, "next": window_start(wm), "open": {}}

    def _observe(self, sensor_id: str, st: dict, obs: Observation, sensor: Sensor | None,
                 out: list[WindowRow]) -> None:
        arrival, t = obs.arrival_ms, obs.event_time_ms
        last_arrival = st["last_arrival"]
        if last_arrival is None or arrival > last_arrival:
            st["last_arrival"] = arrival
        st["partition"] = obs.partition
        start = t - t % WINDOW_MS  # window_start, inlined: this runs for every reading
        max_event = st["max_event"]
        if max_event is None and start < st["next"]:
            # The clock so far came from heartbeats only: the sensor's own first reading (a
            # backfill, or a partition read late) sets it instead. Minutes reported missing and
            # still held get their data and a higher version when they close again.
            st.update(wm=t - self._s.out_of_orderness_ms, next=start)
        opened = st["open"]
        acc = opened.get(start)
        if acc.__class__ is bytes:
            acc = _unpack(acc)
        if start >= st["next"]:  # on time: the window is still open
            if acc is None:
                acc = _new_acc(obs.unit)
            opened[start] = acc
            if not _add(acc, obs, sensor):
                self._duplicates.inc()
        elif start + WINDOW_MS + self._s.allowed_lateness_ms > st["wm"]:  # late, within lateness
            if acc is None:  # a window closed without a row (unregistered, or not listed)
                acc = _new_acc(obs.unit)
            if _add(acc, obs, sensor):
                acc["late"] += 1
                self._late.inc()
            else:
                self._duplicates.inc()
            acc["version"] += 1
            self._late_updates.inc()
            out.extend(window_rows(sensor_id, start, acc, sensor, self._thresholds, self._now_ms()))
            opened[start] = _pack(acc)
        else:
            self._dropped.inc()
        if max_event is None or t > max_event:
            st["max_event"] = t
            self._advance(sensor_id, st, t - self._s.out_of_orderness_ms, sensor, out)

    def _advance(self, sensor_id: str, st: dict, wm: int, sensor: Sensor | None,
                 out: list[WindowRow]) -> None:
        """Moves the sensor's watermark to wm: closes the windows it passes, forgets old ones."""
        first_open = wm - wm % WINDOW_MS  # windows before it have ended (end <= wm)
        if first_open <= st["next"]:
            # Nothing to close: the common case, a reading in the same minute as the last one. The
            # windows beyond lateness are forgotten when one closes (a late reading is judged by
            # the watermark, not by whether its window is still held).
            if wm > st["wm"]:
                st["wm"] = wm
            return
        wm = max(wm, st["wm"])
        st["wm"] = wm
        first_open = window_start(wm)
        now = self._now_ms()
        opened = st["open"]
        closing = [s for s in opened if st["next"] <= s < first_open]
        if sensor is not None:  # empty minutes of a registered sensor are `missing`
            empty, not_listed = _empty_minutes(st["next"], first_open, opened, self._s.max_missing_windows)
            for s in empty:
                opened[s] = _new_acc(sensor.unit)
            closing += empty
            self._missing.inc(len(empty))
            self._suppressed.inc(not_listed)
        closing.sort()
        for s in closing:
            acc = _unpack(opened[s])
            acc["version"] += 1
            self._on_time.inc()
            out.extend(window_rows(sensor_id, s, acc, sensor, self._thresholds, now))
            opened[s] = _pack(acc)
        st["next"] = max(st["next"], first_open)
        for s in [s for s in opened if s + WINDOW_MS + self._s.allowed_lateness_ms <= wm]:
            del opened[s]  # beyond lateness: nothing can change it any more


class BatchByShard(GroupPerBundle):
    """Observations -> (shard, Batch) once per shard per bundle, with heartbeats among them.

    An element is an Observation or a list of them (the raw stage hands over each packed Kafka
    batch's readings as one Batch: a reading crossing the harness alone cost more Python time than
    the window it goes to, bench/PIPELINE.md). A shard's Batch keeps arrival order.

    Every ``interval_ms`` of arrival time a Heartbeat, this reader's arrival clock per Kafka
    partition, goes to every shard after the reading that moved the clock; each sensor applies the
    clock of its own partition (see Heartbeat), so catching up a backlog partition by partition, or
    a reader ahead of another, never makes a sensor late. The clocks are per DoFn instance and soft:
    a heartbeat can only move an idle sensor on, so repeats from parallel instances are harmless,
    and after a restart the clocks rebuild from the records.
    """

    def __init__(self, interval_ms: int, shards: int):
        self._interval_ms = interval_ms
        self._shards = shards
        self._heartbeats = Metrics.counter("windows", "heartbeats")

    def setup(self):
        self._clock: dict[int, int] = {}  # partition -> newest arrival time
        self._last_beat = 0

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        if timestamp < self._earliest:
            self._earliest = timestamp
        groups, clock, shards = self._groups, self._clock, self._shards
        for obs in element if isinstance(element, list) else (element,):
            shard = shard_of(obs.sensor_id, shards)
            group = groups.get(shard)
            if group is None:
                group = groups[shard] = Batch()
            group.append(obs)
            if obs.arrival_ms <= clock.get(obs.partition, 0):
                continue
            clock[obs.partition] = obs.arrival_ms
            newest = max(clock.values())
            if newest - self._last_beat < self._interval_ms:
                continue
            self._last_beat = newest
            beat = Heartbeat(tuple(sorted(clock.items())))
            self._heartbeats.inc(shards)
            for s in range(shards):
                groups.setdefault(s, Batch()).append(beat)
        return ()  # everything comes out in GroupPerBundle.finish_bundle


class ResampleAndScore(beam.PTransform):
    """Observations (alone or in lists) -> WindowRows of curated/readings_1min and
    quality/sensor_quality_1min."""

    def __init__(self, registry: Callable[[], Mapping[str, Sensor]], thresholds: Thresholds,
                 settings: WindowSettings, heartbeat_interval_ms: int, clock=None):
        super().__init__()
        self._registry = registry
        self._thresholds = thresholds
        self._s = settings
        self._interval = heartbeat_interval_ms
        self._clock = clock

    def expand(self, observations):
        return (observations
                | "BatchByShard" >> beam.ParDo(BatchByShard(self._interval, self._s.shards))
                .with_output_types(KeyedBatch)
                | "SensorMinutes" >> beam.ParDo(
                    SensorMinutes(self._registry, self._thresholds, self._s, self._clock)))

"""The sensor registry as the running job sees it: re-read while it runs, every version stored raw.

Why not a periodic side input: in Beam 2.62 a Python PeriodicImpulse is a splittable DoFn, whose
support on the portable Flink runner is the weakest part of that stack; a file re-read from each
worker needs no extra source. Each DoFn instance holds a ``RegistrySource``; at most every
``refresh_s`` it looks at the file (one stat-sized read, by any Beam filesystem path), and when the
bytes changed it parses them and stores the new version under ``raw/sensors/``. A broken registry
file keeps the previous registry in force (counted and logged), it never stops the job.

The version folder is named after the file's modification time, so parallel workers that notice
the same change write the same folder (idempotent) instead of one version each.

A worker process holds one parsed copy of each registry version, whatever the number of DoFn
instances holding a ``RegistrySource``: the SDK harness builds a new set of DoFns for every bundle
that runs alongside another of the same stage (and after every job restart), and a parsed registry
of 5,000 sensors is 7 MB. Soak workers held four copies, one overloaded run ten.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from sensorlake import lake as layout
from sensorlake.registry import RegistryError, Sensor, parse_registry

log = logging.getLogger("sensorlake.registry")


def store_registry_version(lake: str, raw: bytes, now: dt.datetime | None = None) -> str | None:
    """Stores a registry version (sensorlake.lake.registry_version_path) unless the newest stored
    version has the same bytes."""
    digest = hashlib.sha256(raw).hexdigest()
    existing = sorted(m.path for m in FileSystems.match([layout.registry_glob(lake)])[0].metadata_list)
    if existing:
        with FileSystems.open(existing[-1]) as fh:
            if hashlib.sha256(fh.read()).hexdigest() == digest:
                return None
    path = layout.registry_version_path(lake, now or dt.datetime.now(dt.timezone.utc))
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileSystems.create(path) as fh:
        fh.write(raw)
    return path


_PARSED: collections.OrderedDict[str, dict[str, Sensor]] = collections.OrderedDict()  # digest -> registry
_PARSED_KEPT = 2  # the version in force and the one replacing it
_PARSED_LOCK = threading.Lock()


def parse_shared(raw: bytes) -> dict[str, Sensor]:
    """The registry of these bytes, parsed once per process; callers must not mutate it.
    Raises RegistryError like parse_registry."""
    digest = hashlib.sha256(raw).hexdigest()
    with _PARSED_LOCK:
        registry = _PARSED.get(digest)
        if registry is None:
            registry = _PARSED[digest] = parse_registry(raw)
            while len(_PARSED) > _PARSED_KEPT:
                _PARSED.popitem(last=False)
        return registry


def _read(path: str) -> tuple[bytes, dt.datetime]:
    meta = FileSystems.match([path])[0].metadata_list
    if not meta:
        raise OSError(f"registry {path} not found")
    with FileSystems.open(path) as fh:
        raw = fh.read()
    return raw, dt.datetime.fromtimestamp(meta[0].last_updated_in_seconds, dt.timezone.utc)


class RegistrySource:
    """Callable returning the current registry; picklable (state is rebuilt on each worker)."""

    def __init__(self, path: str, lake: str | None, refresh_s: float, initial: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._path = path
        self._lake = lake
        self._refresh_s = refresh_s
        self._initial = initial
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._digest: str | None = None
        self._registry: dict[str, Sensor] = parse_shared(self._initial) if self._initial is not None else {}
        self._next_check = 0.0

    def __getstate__(self):
        return {k: getattr(self, k) for k in ("_path", "_lake", "_refresh_s", "_initial", "_clock")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def __call__(self) -> dict[str, Sensor]:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._refresh_s
            self._refresh()
        return self._registry

    def _refresh(self) -> None:
        try:
            raw, mtime = _read(self._path)
        except OSError as exc:
            Metrics.counter("registry", "read_errors").inc()
            log.warning("registry unreadable, keeping the previous one", extra={"error": str(exc)})
            return
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return
        try:
            registry = parse_shared(raw)
        except RegistryError as exc:
            Metrics.counter("registry", "invalid_versions").inc()
            log.warning("registry invalid, keeping the previous one", extra={"error": str(exc)})
            self._digest = digest  # do not re-parse (and re-log) the same broken bytes
            return
        if self._lake:
            store_registry_version(self._lake, raw, now=mtime)
        if self._digest is not None:
            Metrics.counter("registry", "reloads").inc()
            log.info("registry reloaded", extra={"sensors": len(registry)})
        self._digest = digest
        self._registry = registry

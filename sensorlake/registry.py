"""The sensor registry (sensors.json): the challenge's shape plus optional ``interval_ms``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

DEFAULT_INTERVAL_MS = 1000


class RegistryError(ValueError):
    """The registry file is not usable; the message says which sensor and field."""


@dataclass(frozen=True)
class Sensor:
    sensor_id: str
    lat: float | None
    lng: float | None
    unit: str
    type: str
    range_min: float
    range_max: float
    description: str
    interval_ms: int = DEFAULT_INTERVAL_MS

    @property
    def expected_per_minute(self) -> float:
        return 60_000 / self.interval_ms

    def in_range(self, value: float) -> bool:
        return self.range_min <= value <= self.range_max


def parse_registry(raw: bytes | str) -> dict[str, Sensor]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"registry is not valid JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise RegistryError("registry must be a JSON object of sensor id -> sensor")
    sensors: dict[str, Sensor] = {}
    for sid, spec in doc.items():
        if not isinstance(spec, Mapping):
            raise RegistryError(f"sensor {sid!r}: expected an object")
        rng = spec.get("range")
        if not (isinstance(rng, (list, tuple)) and len(rng) == 2
                and all(isinstance(v, (int, float)) for v in rng) and rng[0] <= rng[1]):
            raise RegistryError(f"sensor {sid!r}: range must be [min, max] numbers, got {rng!r}")
        interval = spec.get("interval_ms", DEFAULT_INTERVAL_MS)
        if not isinstance(interval, int) or interval <= 0:
            raise RegistryError(f"sensor {sid!r}: interval_ms must be a positive integer")
        sensors[str(sid)] = Sensor(
            sensor_id=str(sid),
            lat=spec.get("lat"),
            lng=spec.get("lng"),
            unit=str(spec.get("unit", "")),
            type=str(spec.get("type", "")),
            range_min=float(rng[0]),
            range_max=float(rng[1]),
            description=str(spec.get("description", "")),
            interval_ms=interval,
        )
    return sensors


def load_registry(path: str | Path) -> dict[str, Sensor]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc.strerror}") from exc
    return parse_registry(data)

"""The sensor registry (sensors.json): the challenge's shape plus optional ``interval_ms``."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

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


SCHEMA_FILE = Path(__file__).with_name("schemas") / "registry.schema.json"


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def _explain(error) -> str:
    path = list(error.absolute_path)
    if not path:
        return ("registry must be a JSON object of sensor id -> sensor" if error.validator == "type"
                else f"registry: {error.message}")
    where = f"sensor {path[0]!r}" + (f": {path[1]}" if len(path) > 1 else "")
    return f"{where}: {error.message}"


def parse_registry(raw: bytes | str) -> dict[str, Sensor]:
    """Validates a registry document against schemas/registry.schema.json (the first problem is
    named: sensor and field) and returns its sensors."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"registry is not valid JSON: {exc}") from exc
    error = next(iter(sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))), None)
    if error is not None:
        raise RegistryError(_explain(error))
    sensors: dict[str, Sensor] = {}
    for sid, spec in doc.items():
        low, high = spec["range"]
        if low > high:  # beyond JSON Schema: one field compared with another
            raise RegistryError(f"sensor {sid!r}: range: min {low} is above max {high}")
        sensors[sid] = Sensor(
            sensor_id=sid,
            lat=spec.get("lat"),
            lng=spec.get("lng"),
            unit=spec.get("unit", ""),
            type=spec.get("type", ""),
            range_min=float(low),
            range_max=float(high),
            description=spec.get("description", ""),
            interval_ms=spec.get("interval_ms", DEFAULT_INTERVAL_MS),
        )
    return sensors


def load_registry(path: str | Path) -> dict[str, Sensor]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc.strerror}") from exc
    return parse_registry(data)

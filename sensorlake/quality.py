"""Per-sensor quality: the definitions of docs/design.md ("Quality definitions"), in one place.

Pure functions over tallies, so the rules are tested without Beam and read in one place: the
pipeline applies them to each sensor-minute, the catalogue to a sensor's last 24 hours.
Thresholds come from Settings (env/flags) only; their values are written into every row as
``thresholds_version`` so a changed threshold never silently re-labels history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensorlake.settings import Settings

MISSING, BAD, DEGRADED, OK, UNREGISTERED = "missing", "bad", "degraded", "ok", "unregistered"
STATUSES = (MISSING, BAD, DEGRADED, OK, UNREGISTERED)


def _default(name: str) -> float:
    return Settings.model_fields[f"quality_{name}"].default


@dataclass(frozen=True)
class Thresholds:
    """The status rule's four thresholds (defaults: the settings' defaults)."""

    ok_completeness: float = _default("ok_completeness")
    ok_validity: float = _default("ok_validity")
    bad_completeness: float = _default("bad_completeness")
    bad_validity: float = _default("bad_validity")

    @classmethod
    def from_settings(cls, settings) -> "Thresholds":
        return cls(settings.quality_ok_completeness, settings.quality_ok_validity,
                   settings.quality_bad_completeness, settings.quality_bad_validity)

    @property
    def version(self) -> str:
        """Readable, so a BI user sees the rule without looking it up."""
        return (f"ok:c>={self.ok_completeness:g},v>={self.ok_validity:g};"
                f"bad:c<{self.bad_completeness:g}|v<{self.bad_validity:g}")

    def status(self, received: int, completeness: float | None, validity: float | None,
               registered: bool = True) -> str:
        if not registered:
            return UNREGISTERED
        if received == 0:
            return MISSING
        assert completeness is not None and validity is not None
        if completeness < self.bad_completeness or validity < self.bad_validity:
            return BAD
        if completeness >= self.ok_completeness and validity >= self.ok_validity:
            return OK
        return DEGRADED


def completeness(received: int, expected: float | None) -> float | None:
    if expected is None:
        return None
    return min(1.0, received / expected) if expected > 0 else 1.0


def range_validity(in_range: int, received: int, registered: bool = True) -> float | None:
    if not registered or received == 0:
        return None
    return in_range / received

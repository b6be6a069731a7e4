"""The running job's registry: re-read on a clock, each version stored raw, a broken file ignored."""

from __future__ import annotations

import json
import os
import pickle

from pipelines.registry_source import RegistrySource

ONE = {"1": {"unit": "C", "type": "temperature", "range": [0, 45]}}
TWO = ONE | {"2": {"unit": "C", "type": "temperature", "range": [0, 45], "interval_ms": 2000}}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _write(path, doc, mtime):
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.utime(path, (mtime, mtime))


def _versions(lake):
    return sorted(p.parent.name for p in (lake / "raw" / "sensors").glob("version=*/sensors.json"))


def test_a_changed_registry_is_picked_up_after_the_refresh_interval(tmp_path):
    reg, lake, clock = tmp_path / "sensors.json", tmp_path / "lake", Clock()
    _write(reg, ONE, 1_795_860_000)  # 2026-11-28T10:00:00Z
    source = RegistrySource(str(reg), str(lake), refresh_s=60, clock=clock)
    assert set(source()) == {"1"}
    _write(reg, TWO, 1_795_860_120)
    clock.t = 59
    assert set(source()) == {"1"}  # not looked at again yet
    clock.t = 60
    assert set(source()) == {"1", "2"} and source()["2"].expected_per_minute == 30
    assert _versions(lake) == ["version=2026-11-28T10-00-00Z", "version=2026-11-28T10-02-00Z"]


def test_a_broken_registry_keeps_the_previous_one(tmp_path):
    reg, lake, clock = tmp_path / "sensors.json", tmp_path / "lake", Clock()
    _write(reg, ONE, 1_795_860_000)
    source = RegistrySource(str(reg), str(lake), refresh_s=1, clock=clock)
    assert set(source()) == {"1"}
    _write(reg, "{not json", 1_795_860_060)
    clock.t = 5
    assert set(source()) == {"1"}
    reg.unlink()
    clock.t = 10
    assert set(source()) == {"1"}
    assert len(_versions(lake)) == 1


def test_workers_get_a_fresh_reader_and_store_the_same_version_folder(tmp_path):
    """Parallel workers that see the same change write the same folder (named by mtime)."""
    reg, lake = tmp_path / "sensors.json", tmp_path / "lake"
    _write(reg, ONE, 1_795_860_000)
    source = RegistrySource(str(reg), str(lake), refresh_s=60, initial=json.dumps(ONE).encode())
    a, b = pickle.loads(pickle.dumps(source)), pickle.loads(pickle.dumps(source))
    assert set(a()) == set(b()) == {"1"}
    assert _versions(lake) == ["version=2026-11-28T10-00-00Z"]


def test_copies_of_a_source_in_one_worker_share_one_parsed_registry(tmp_path):
    """The SDK harness unpickles a DoFn (and its RegistrySource) once per concurrent bundle: the
    copies must not each hold a parsed registry."""
    reg, lake = tmp_path / "sensors.json", tmp_path / "lake"
    _write(reg, ONE, 1_795_860_000)
    source = RegistrySource(str(reg), str(lake), refresh_s=60, initial=json.dumps(ONE).encode())
    copies = [pickle.loads(pickle.dumps(source)) for _ in range(3)]
    assert len({id(c()) for c in copies}) == 1
    _write(reg, TWO, 1_795_860_060)  # a new version: parsed once too, and not the old object
    fresh = [pickle.loads(pickle.dumps(source)) for _ in range(2)]
    assert set(fresh[0]()) == {"1", "2"} and fresh[0]() is fresh[1]()
    assert copies[0]() is not fresh[0]()

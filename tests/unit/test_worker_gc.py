"""The job's stages tune the garbage collector of the process they run in (pipelines/worker_gc.py)."""

from __future__ import annotations

import gc

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines import worker_gc
from pipelines.kafka_io import KafkaRecord, pack_batch
from pipelines.raw_lake import WriteRawLake
from sensorlake import lake as lakedef


@pytest.fixture
def untuned(monkeypatch):
    before = gc.get_threshold()
    monkeypatch.setattr(worker_gc, "_tuned", False)
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_a_stage_set_up_in_a_worker_freezes_the_heap_and_raises_the_first_threshold(untuned, tmp_path):
    batch = (0, pack_batch([KafkaRecord(0, 0, 0, None, b'{"id": "s1", "dt": 1795885200, "value": 1}', {})]))
    with TestPipeline() as p:
        _ = p | beam.Create([batch]) | WriteRawLake({}, str(tmp_path), lakedef.BY_NAME, flush_seconds=0)
    assert gc.get_threshold() == (worker_gc.GEN0_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 10_000  # Beam's and our modules, out of the collector's sight


def test_tuning_is_once_per_process_and_never_lowers_a_threshold(untuned):
    gc.set_threshold(50_000, 5, 5)
    worker_gc.tune()
    frozen = gc.get_freeze_count()
    worker_gc.tune()
    assert gc.get_threshold() == (50_000, 5, 5)
    assert gc.get_freeze_count() == frozen

"""Transform ids that stay put when the pipeline changes, so that an upgraded job can restore the
savepoint of the job before it.

Beam's Python SDK numbers transform ids in the order it meets them
(``ref_AppliedPTransform_<label>_<n>``), and Beam's Flink runner keys user timers by transform id
(user state only by its state name). So a transform added or removed ahead of a DoFn with a timer
renumbers that DoFn, and a job restored from the savepoint of the job before fails on the first
restored timer ("No receiver found for timer ref_AppliedPTransform_..._14 ts-flush") and restarts
for ever: bench/upgrade.py showed it from the code before 2883713 (docs/operations.md). Here a
transform's id is its full label, which Beam keeps unique, plus a hash of it (labels are
normalised and cut to 100 characters, which could make two alike): the same transform has the same
id in every version of the pipeline.

Flink's operator uids are the fused stages' names (``[2]{RawLake, ResampleAndScore}``), which this
does not change: a change that moves a transform to another stage still needs the savepoint's
state mapped by hand (docs/operations.md).
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, ComponentIdMap


class StableIdMap(ComponentIdMap):
    """Beam's id map, with transform ids from the transform's label alone."""

    def _unique_ref(self, obj=None, obj_type=None, label=None):
        if obj_type is not AppliedPTransform:
            return super()._unique_ref(obj, obj_type, label)
        full = label if label is not None else getattr(obj, "full_label", "")
        digest = hashlib.sha1(full.encode()).hexdigest()[:10]
        return f"{self._normalize(f'{self.namespace}_AppliedPTransform_{full}')[:100]}_{digest}"


def pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Pipeline whose transform ids are stable; set before any transform is applied, because
    an external transform's expansion already takes ids from the map."""
    p = beam.Pipeline(options=options)
    p.component_id_map = StableIdMap(p.component_id_map.namespace)
    return p

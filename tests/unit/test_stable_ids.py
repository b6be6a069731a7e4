"""Transform ids that survive a change of the pipeline (pipelines/stable_ids.py).

The Flink runner keys user timers by transform id, so the id of the minute files' writer (a
processing-time timer) must not move when a transform is added before it: else the upgraded job
cannot restore its savepoint (bench/upgrade.py).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import stable_ids
from pipelines.sinks import WriteWindowFiles
from sensorlake import lake

WRITER = "WriteMinutes/FlushMinuteFiles"


def _ids(make, extra_step: bool) -> dict[str, str]:
    """unique name -> transform id of a small pipeline ending in the job's minute-file writer."""
    p = make(PipelineOptions())
    rows = p | "Rows" >> beam.Create([1, 2, 3])
    if extra_step:
        rows = rows | "AddedLater" >> beam.Map(lambda r: r)
    _ = rows | "WriteMinutes" >> WriteWindowFiles("/tmp/unused-lake", lake.BY_NAME, 4, 5.0)
    proto = p.to_runner_api()
    return {t.unique_name: tid for tid, t in proto.components.transforms.items()}


def test_a_transform_added_before_the_timer_keeps_the_writers_id():
    before, after = _ids(stable_ids.pipeline, False), _ids(stable_ids.pipeline, True)
    assert before[WRITER] == after[WRITER]
    assert WRITER.replace("/", "-") in before[WRITER]  # readable in the runner's logs


def test_beams_own_ids_move_which_is_why_the_module_exists():
    before, after = _ids(lambda o: beam.Pipeline(options=o), False), _ids(lambda o: beam.Pipeline(options=o), True)
    assert before[WRITER] != after[WRITER]


def test_ids_are_unique_and_every_other_component_keeps_beams_ids():
    p = stable_ids.pipeline(PipelineOptions())
    _ = p | "Rows" >> beam.Create([1]) | "WriteMinutes" >> WriteWindowFiles("/tmp/unused-lake", lake.BY_NAME, 4, 5.0)
    labels = set()

    class Labels(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            if node.full_label:  # the pipeline's root, not a transform of the proto
                labels.add(node.full_label)

        def visit_transform(self, node):
            labels.add(node.full_label)

    p.visit(Labels())
    proto = p.to_runner_api()
    # two transforms given one id would leave one of them out of the proto's map
    assert labels <= {t.unique_name for t in proto.components.transforms.values()}
    assert len(labels) > 5
    assert all(c.startswith("ref_PCollection_") for c in proto.components.pcollections)


def test_labels_alike_after_normalising_get_different_ids():
    m = stable_ids.StableIdMap()
    a = m._unique_ref(None, beam.pipeline.AppliedPTransform, "Write Minutes")
    b = m._unique_ref(None, beam.pipeline.AppliedPTransform, "Write/Minutes")
    assert a != b and a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]

"""The Beam options every submission of the lake job carries (pipelines/options.py)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.stager import SUBMISSION_ENV_DEPENDENCIES_FILE, Stager

from pipelines.options import flink_options
from sensorlake.settings import Settings


def _staged_names(options, tmp_path) -> list[str]:
    return [beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
            for a in Stager.create_job_resources(options, str(tmp_path))]


def test_a_submission_stages_no_pip_freeze_of_the_submitter(tmp_path):
    """Beam's stager runs `pip freeze` for a file only Dataflow reads; with our options it stages
    nothing of the kind (a Beam upgrade that renames the experiment fails here)."""
    options = flink_options(Settings(), "sensorlake-test")
    assert SUBMISSION_ENV_DEPENDENCIES_FILE not in _staged_names(options, tmp_path)
    # and without the experiment Beam would stage it: the check above can fail
    bare = flink_options(Settings(), "sensorlake-test", ["--experiments=other"])
    assert bare.view_as(DebugOptions).experiments == ["other"]
    assert SUBMISSION_ENV_DEPENDENCIES_FILE in _staged_names(bare, tmp_path)


def test_an_extra_option_replaces_ours_of_the_same_name():
    options = flink_options(Settings(), "sensorlake-test", ["--parallelism=3"]).get_all_options()
    assert options["parallelism"] == 3 and options["job_name"] == "sensorlake-test"
    assert options["experiments"] == ["disable_logging_submission_environment"]


def test_flink_may_hand_records_between_chained_operators_without_copying():
    """Beam's FlinkPipelineOptions.objectReuse: the job's Java transforms (KafkaIO's read, our
    PackPerPartition) never change their inputs; the running job's config is checked in
    tests/integration/test_lake_pipeline.py."""
    options = flink_options(Settings(), "sensorlake-test").get_all_options(retain_unknown_options=True)
    assert options["object_reuse"] is True

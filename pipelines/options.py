"""Beam pipeline options built from the shared Settings, so flags and env mean one thing."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from sensorlake.settings import Settings


def flink_options(settings: Settings, job_name: str, extra: list[str] | None = None) -> PipelineOptions:
    """Options for a streaming job on the Flink cluster behind our job server."""
    args = [
        "--runner=FlinkRunner",
        f"--job_endpoint={settings.job_endpoint}",
        f"--artifact_endpoint={settings.artifact_endpoint}",
        f"--flink_master={settings.flink_master}",
        f"--environment_type={settings.environment_type}",
        "--streaming",
        f"--job_name={job_name}",
        f"--parallelism={settings.parallelism}",
        f"--checkpointing_interval={settings.checkpoint_interval_ms}",
        # Big bundles: the keyed stages get one batch per key per bundle (pipelines/batching.py), and
        # the runner's default of 1,000 elements / 1 s would touch each of 1,000 sensors about once.
        # ("mills" is the Java option's spelling; "millis" is silently discarded.)
        f"--max_bundle_size={settings.bundle_max_elements}",
        f"--max_bundle_time_mills={settings.bundle_max_ms}",
        # A bundle open at a checkpoint is finished before the barrier, so its output goes
        # downstream at once. Without this the runner parks that output in the checkpoint until
        # the stage's next bundle, and on a topic gone quiet the last readings waited for the next
        # record (tests/integration/test_lake_pipeline.py produces once, then waits for them).
        "--finish_bundle_before_checkpointing",
        # Checkpoints outlive a cancelled job, so it can be resumed from them.
        "--externalized_checkpoints_enabled",
        # Flink copies every record between chained operators unless told the functions never
        # change their inputs, which Beam's model already requires of every transform. The copy
        # is an encode and decode of each Kafka record with its headers in the source's thread
        # (JFR of the TaskManager: 38 % of that thread's samples; bench/PIPELINE.md).
        "--object_reuse",
        # Beam runs `pip freeze` at every submission to stage a list of the submitter's packages,
        # which only Dataflow reads: about a second of the time to RUNNING here.
        "--experiments=disable_logging_submission_environment",
    ]
    if settings.environment_config:
        args.append(f"--environment_config={settings.environment_config}")
    extra = list(extra or [])
    overridden = {a.split("=", 1)[0] for a in extra}
    # An extra option replaces ours of the same name (a repeated option makes the job server fail).
    return PipelineOptions([a for a in args if a.split("=", 1)[0] not in overridden] + extra)

"""Starts one Beam Python SDK worker for the PROCESS environment, in our image, without Go.

In compose the lake job's Python code runs in the TaskManager containers: the Flink runner starts
the environment's command (``SENSORLAKE_ENVIRONMENT_CONFIG``: docker/beam-worker.sh, which runs
this module) once per SDK worker, as ``--id=ID --provision_endpoint=HOST:PORT
[--semi_persist_dir=DIR]``, and waits for the worker to call back on the control endpoint.

Beam's own launcher for that (``boot``, in Beam's SDK container images) is a Go program. It is
not used here, for three reasons: its only source outside Docker Hub is the Go module proxy, so the
image build would need a Go toolchain of its own (Debian bookworm's Go 1.19 is too old for Beam's
module) and a second download path; what it does beyond what we need (building a venv, pip
installing staged packages, running several workers) does not apply to an image that already holds
the pinned apache-beam and our package; and the rest is a page of Python with the SDK's own gRPC
stubs. So this does what ``boot`` does for a Python worker:

1. asks the provision service (with the ``worker_id`` header) for the pipeline options and the
   logging, artifact, control and status endpoints;
2. fetches the staged artifacts into ``<semi_persist_dir>/staged`` (a pickled main session, if
   any, is loaded from there by the harness); Python packages among them are not installed, the
   image has what the job runs (a warning names them);
3. replaces itself with ``python -m apache_beam.runners.worker.sdk_worker_main`` and the
   environment that module reads (PIPELINE_OPTIONS, SEMI_PERSISTENT_DIRECTORY, the service
   descriptors, RUNNER_CAPABILITIES, WORKER_ID), so the TaskManager holds the harness's pid.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from sensorlake import memory

LOG = logging.getLogger("sensorlake.beam_worker")
PACKAGE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar")


def worker_environment(info, worker_id: str, semi_persist_dir: Path) -> dict[str, str]:
    """What sdk_worker_main reads, from a ProvisionInfo (as Beam's boot sets it)."""
    from google.protobuf import json_format, text_format

    env = {
        "WORKER_ID": worker_id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "SEMI_PERSISTENT_DIRECTORY": str(semi_persist_dir),
        "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(info.logging_endpoint),
        "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(info.control_endpoint),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
    }
    if info.HasField("status_endpoint"):
        env["STATUS_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(info.status_endpoint)
    return env


def fetch_artifacts(info, worker_id: str, staged: Path) -> list[str]:
    """Writes every staged dependency to `staged`/<staged name>; returns the names."""
    import grpc
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_artifact_api_pb2, beam_artifact_api_pb2_grpc, beam_runner_api_pb2

    staged.mkdir(parents=True, exist_ok=True)
    if not info.dependencies:
        return []
    names = []
    with grpc.insecure_channel(info.artifact_endpoint.url) as channel:
        stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
        for n, dep in enumerate(info.dependencies):
            name = f"artifact-{n}"
            if dep.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
                name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            target = staged / Path(name).name
            with open(target, "wb") as out:
                for chunk in stub.GetArtifact(beam_artifact_api_pb2.GetArtifactRequest(artifact=dep),
                                              metadata=[("worker_id", worker_id)]):
                    out.write(chunk.data)
            names.append(target.name)
    return names


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s beam-worker %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="beam-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True)
    parser.add_argument("--provision_endpoint", required=True)
    parser.add_argument("--semi_persist_dir", default=None)
    # boot's other flags: the provision info carries these endpoints, so they are only accepted.
    for flag in ("--logging_endpoint", "--artifact_endpoint", "--control_endpoint"):
        parser.add_argument(flag, default=None)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        LOG.warning("ignoring arguments %s", unknown)

    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)], timeout=60).info
    # One folder per worker: several workers of one TaskManager never share their staged files.
    semi = Path(args.semi_persist_dir or tempfile.gettempdir()) / f"beam-worker-{args.id}"
    names = fetch_artifacts(info, args.id, semi / "staged")
    packages = [n for n in names if n.endswith(PACKAGE_SUFFIXES) or n == "requirements.txt"]
    if packages:
        LOG.warning("staged packages %s are not installed: the image holds what the job runs", packages)
    env = {**memory.environment(), **os.environ, **worker_environment(info, args.id, semi)}
    LOG.info("worker %s: %d artifact(s) staged; starting the SDK harness", args.id, len(names))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "sensorlake.memory",
                               "apache_beam.runners.worker.sdk_worker_main"], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

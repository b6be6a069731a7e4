"""sensorlake/beam_worker.py, the PROCESS environment's worker launcher, against fake Beam services.

The compose test runs it for real inside the TaskManagers; here: what it asks the provision
service (with the worker id), what it stages, and the environment it hands the SDK harness.
"""

from __future__ import annotations

import json
from concurrent import futures

import grpc
import pytest
from apache_beam.portability import common_urns
from apache_beam.portability.api import (beam_artifact_api_pb2, beam_artifact_api_pb2_grpc, beam_provision_api_pb2,
                                         beam_provision_api_pb2_grpc, beam_runner_api_pb2)

from sensorlake import beam_worker

SESSION = b"pickled main session bytes" * 1000


class _Services(beam_provision_api_pb2_grpc.ProvisionServiceServicer,
                beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceServicer):
    def __init__(self, port: int):
        self.port = port
        self.worker_ids: list[str] = []

    def GetProvisionInfo(self, request, context):  # noqa: N802 - gRPC API
        self.worker_ids.append(dict(context.invocation_metadata()).get("worker_id"))
        info = beam_provision_api_pb2.ProvisionInfo()
        info.pipeline_options.update({"beam:option:job_name:v1": "sensorlake-lake", "beam:option:streaming:v1": True})
        info.logging_endpoint.url = "localhost:1"
        info.control_endpoint.url = "localhost:2"
        info.artifact_endpoint.url = f"localhost:{self.port}"
        info.runner_capabilities.append("beam:protocol:control_response_elements_embedding:v1")
        dep = info.dependencies.add()
        dep.type_urn = common_urns.artifact_types.FILE.urn
        dep.role_urn = common_urns.artifact_roles.STAGING_TO.urn
        dep.role_payload = beam_runner_api_pb2.ArtifactStagingToRolePayload(
            staged_name="pickled_main_session").SerializeToString()
        return beam_provision_api_pb2.GetProvisionInfoResponse(info=info)

    def GetArtifact(self, request, context):  # noqa: N802 - gRPC API
        for i in range(0, len(SESSION), 4096):
            yield beam_artifact_api_pb2.GetArtifactResponse(data=SESSION[i:i + 4096])


@pytest.fixture()
def fake_runner():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port("localhost:0")
    services = _Services(port)
    beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(services, server)
    beam_artifact_api_pb2_grpc.add_ArtifactRetrievalServiceServicer_to_server(services, server)
    server.start()
    yield services
    server.stop(None)


def test_the_worker_provisions_itself_and_becomes_the_sdk_harness(fake_runner, tmp_path, monkeypatch):
    started = []

    def execve(path, argv, env):
        started.append((argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(beam_worker.os, "execve", execve)
    with pytest.raises(SystemExit):
        beam_worker.main(["--id=7", f"--provision_endpoint=localhost:{fake_runner.port}",
                          f"--semi_persist_dir={tmp_path}"])
    assert fake_runner.worker_ids == ["7"]  # the runner tells workers apart by this header
    (argv, env), = started
    # The harness runs under sensorlake.memory (two malloc arenas, a periodic trim).
    assert argv[1:] == ["-m", "sensorlake.memory", "apache_beam.runners.worker.sdk_worker_main"]
    assert env["MALLOC_ARENA_MAX"] == "2"
    semi = tmp_path / "beam-worker-7"
    assert env["SEMI_PERSISTENT_DIRECTORY"] == str(semi)
    assert (semi / "staged" / "pickled_main_session").read_bytes() == SESSION  # where the harness loads it
    assert env["WORKER_ID"] == "7"
    assert json.loads(env["PIPELINE_OPTIONS"])["beam:option:job_name:v1"] == "sensorlake-lake"
    assert env["CONTROL_API_SERVICE_DESCRIPTOR"].strip() == 'url: "localhost:2"'
    assert env["LOGGING_API_SERVICE_DESCRIPTOR"].strip() == 'url: "localhost:1"'
    assert "STATUS_API_SERVICE_DESCRIPTOR" not in env
    assert env["RUNNER_CAPABILITIES"] == "beam:protocol:control_response_elements_embedding:v1"


def test_the_harness_reads_what_the_worker_hands_it(tmp_path):
    """The options as sdk_worker_main parses them (its own function, not a copy of it)."""
    from apache_beam.runners.worker import sdk_worker_main

    info = beam_provision_api_pb2.ProvisionInfo()
    info.pipeline_options.update({"beam:option:job_name:v1": "j", "beam:option:parallelism:v1": 2})
    info.control_endpoint.url = "localhost:2"
    env = beam_worker.worker_environment(info, "1", tmp_path)
    options = sdk_worker_main._load_pipeline_options(env["PIPELINE_OPTIONS"])  # noqa: SLF001
    assert options["job_name"] == "j" and options["parallelism"] == 2

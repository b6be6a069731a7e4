"""sensorlake/dockerhost.py without an engine: the mirror debootstrap uses, and a dockerd that
cannot start failing with its own words (the compose test then fails, it is never skipped)."""

from __future__ import annotations

import pytest

from sensorlake import dockerhost


def test_the_mirror_comes_from_apts_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert dockerhost.debian_mirror(tmp_path) == dockerhost.DEFAULT_MIRROR
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n")
    assert dockerhost.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("# old style\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert dockerhost.debian_mirror(tmp_path) == "http://old.example/debian"


def test_a_dockerd_that_cannot_start_is_an_error_with_its_reason(tmp_path, monkeypatch):
    fake = tmp_path / "dockerd"
    fake.write_text('#!/bin/sh\necho "failed to start daemon: Devices cgroup is not mounted" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(dockerhost, "engine_answers", lambda timeout=10.0: False)
    monkeypatch.setattr(dockerhost.os, "geteuid", lambda: 0)
    monkeypatch.setattr(dockerhost, "DOCKERD_PID_FILE", tmp_path / "docker.pid")
    with pytest.raises(dockerhost.DockerHostError, match="Devices cgroup is not mounted"):
        dockerhost.ensure_dockerd(tmp_path / "logs", wait_s=10, dockerd=str(fake))


def test_an_engine_found_running_is_never_stopped(monkeypatch):
    monkeypatch.setattr(dockerhost, "engine_answers", lambda timeout=10.0: True)
    engine = dockerhost.ensure_dockerd(dockerhost.Path("/nonexistent"))
    assert engine.pid is None
    engine.stop()  # a no-op: only a dockerd this process started is stopped

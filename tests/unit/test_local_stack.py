"""The newcomer's path without services: what `local up <service>` starts, where the lake goes,
what a broken install or a busy apt says."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensorlake import cli, services
from sensorlake.local import install
from sensorlake.local.install import InstallError, Paths
from sensorlake.local.stack import LocalStack, StackError
from sensorlake.settings import Settings


@pytest.fixture()
def stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent"}).replace(home=str(tmp_path / "home"))
    return LocalStack(settings, Paths(tmp_path / "cache"))


def test_up_of_one_service_starts_what_it_waits_for_in_order(stack):
    assert stack.needs(["bridge"]) == ["mosquitto", "kafka", "bridge"]
    assert stack.needs(["pipeline"]) == ["kafka", "flink-jobmanager", "flink-taskmanager", "expansion",
                                         "jobserver", "pipeline"]
    assert stack.needs(["catalog"]) == ["catalog"]
    # the generator waits for the bridge: readings sent before its first subscription would be lost
    assert stack.needs(["generator", "flink-taskmanager"]) == ["mosquitto", "kafka", "flink-jobmanager",
                                                               "flink-taskmanager", "bridge", "generator"]


def test_up_of_an_unknown_service_names_the_choices(stack):
    with pytest.raises(StackError, match="no service 'flink'.*flink-jobmanager"):
        stack.needs(["flink"])


def test_the_local_stack_writes_the_lake_where_the_command_runs(stack, tmp_path):
    """`make up` from the repository writes ./data, where `sensorlake sql` and `catalog` look by default,
    although the services run in the state folder."""
    assert Settings.load(env={"SENSORLAKE_ENV_FILE": "/nonexistent"}).lake == "data"
    assert stack.settings.lake == str(tmp_path / "data")
    env = stack.services["catalog"].env()
    assert env["SENSORLAKE_LAKE"] == str(tmp_path / "data")
    assert set(env) == {Settings.env_name(n) for n in services.BY_LOCAL["catalog"].settings}


def test_a_broken_subcommand_import_is_an_error_with_its_cause(monkeypatch, capsys):
    real = importlib.import_module

    def broken(name, *a, **kw):
        if name == "connectors.mqtt_kafka.cli":
            raise ImportError("No module named 'paho'")
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", broken)
    assert cli.main(["sql", "--help"]) == 1
    err = capsys.readouterr().err
    assert "sensorlake bridge" in err and "No module named 'paho'" in err and "Traceback" not in err


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding an fcntl write lock on path for a while, as apt and dpkg hold theirs."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(float(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.skipif(os.geteuid() != 0, reason="apt_install refuses without root before it looks at locks")
def test_apt_waits_for_a_held_lock_then_installs(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "lock-frontend"
    monkeypatch.setattr(install, "APT_LOCKS", (str(lock),))
    ran = []
    monkeypatch.setattr(install, "_run", lambda cmd, log, what, env=None: ran.append(cmd))
    monkeypatch.setattr(install, "_apt_updated", False)
    holder = _hold(lock, 2.0)
    started = time.monotonic()
    install.apt_install(["mosquitto"], "the test", wait_s=30)
    assert time.monotonic() - started >= 1.0 and holder.wait(10) == 0  # it waited for the lock ...
    assert "waiting for another apt/dpkg" in capsys.readouterr().out
    assert [c[-2:] for c in ran] == [["update", "-q"], ["-q", "mosquitto"]]  # ... then installed
    assert all("DPkg::Lock::Timeout=" in " ".join(c) for c in ran)


@pytest.mark.skipif(os.geteuid() != 0, reason="apt_install refuses without root before it looks at locks")
def test_apt_gives_up_on_a_lock_held_too_long_with_a_clear_message(tmp_path, monkeypatch):
    lock = tmp_path / "lock"
    monkeypatch.setattr(install, "APT_LOCKS", (str(lock),))
    monkeypatch.setattr(install, "_run", lambda *a, **k: pytest.fail("ran apt-get while it was locked"))
    holder = _hold(lock, 4.0)
    with pytest.raises(InstallError, match="apt is still busy after 1 s"):
        install.apt_install(["mosquitto"], "the test", wait_s=1)
    holder.kill()
    holder.wait(10)

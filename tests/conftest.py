"""Shared test configuration: markers, and the one local stack of the session.

The stack is started on first use by an integration or reliability test, on ports apart from a
developer's `make up`: set SENSORLAKE_TEST_PORT_OFFSET to move them (default +10000: MQTT 11883,
Kafka 19092, Flink 18081, job server 18099, ...). Its state lives in a temporary folder and every
process it started is stopped, by pid, when the session ends. Unit tests never request it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sensorlake.local.install import install
from sensorlake.local.stack import LocalStack, isolated_settings
from sensorlake.settings import Settings


def _test_settings(home: Path) -> Settings:
    return isolated_settings(home, int(os.environ.get("SENSORLAKE_TEST_PORT_OFFSET", "10000")))


@pytest.fixture(scope="session")
def stack_home():
    home = Path(tempfile.mkdtemp(prefix="sensorlake-it-"))
    yield home
    if os.environ.get("SENSORLAKE_KEEP_TEST_HOME") != "1":
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_home):
    settings = _test_settings(stack_home)
    paths = install(settings)
    st = LocalStack(settings, paths)
    try:
        st.up()
        yield st
    finally:
        st.down()


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs the local stack (real services)")
    config.addinivalue_line("markers", "reliability: fault-injection tests (kill -9, restarts)")


def fresh_taskmanager(stack) -> None:
    """Restarts the TaskManager so the next job starts with empty metaspace.

    Every Beam job submission loads the Beam classpath (about 190 jars) into a classloader of its
    own; a session that submits many jobs in a row runs the TaskManager out of metaspace (seen at
    the 6th job here), which a production cluster running one long-lived job never does. Tests
    that submit late in the session and then break things on purpose start from a clean one.
    """
    import json
    import time
    import urllib.request

    stack.stop("flink-taskmanager")
    stack.start("flink-taskmanager")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{stack.settings.flink_rest}/overview", timeout=5) as r:
            overview = json.load(r)
        if overview.get("taskmanagers") == 1 and overview.get("slots-available", 0) >= 1:
            return
        time.sleep(1)
    raise AssertionError(f"no free TaskManager slot after restarting it: {overview}")

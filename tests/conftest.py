"""Shared test configuration: markers and where test artifacts go."""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs the local stack (real services)")
    config.addinivalue_line("markers", "reliability: fault-injection tests (kill -9, restarts)")

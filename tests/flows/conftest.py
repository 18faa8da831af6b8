"""One Prefect test server for all flow tests (it costs ~10 s to start)."""

import os
import tempfile

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

import flows  # noqa: E402,F401 - sets the logging environment before Prefect loads


@pytest.fixture(autouse=True, scope="session")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield

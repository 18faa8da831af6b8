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
    """The test server's API URL (flows run in this process report to it)."""
    from prefect.settings import PREFECT_API_URL

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def api_env(prefect_api):
    """The environment of a ``denoiser`` command that reports to the test server, as a user's
    command does where ``denoiser server start`` runs. Without it each command starts a
    temporary server of its own: 10-20 s on 2 cores, which only the tests of that temporary
    server (orphans, signals) need to pay."""
    return {"PREFECT_API_URL": prefect_api}

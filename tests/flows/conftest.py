"""The flow tests report to the session's Prefect test server (:func:`tests.conftest.prefect_api`)."""

import pytest

import flows  # noqa: F401 - sets the logging environment before Prefect loads


@pytest.fixture(autouse=True, scope="session")
def _reports_to_the_test_server(prefect_api):
    """Flows run in this process report to the test server."""
    return prefect_api


@pytest.fixture
def api_env(prefect_api):
    """The environment of a ``denoiser`` command that reports to the test server, as a user's
    command does where ``denoiser server start`` runs. Without it each command starts a
    temporary server of its own: 10-20 s on 2 cores, which only the tests of that temporary
    server (orphans, signals) need to pay."""
    return {"PREFECT_API_URL": prefect_api}

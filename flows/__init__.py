"""Prefect flows over the ``denoiser`` library: retries, caching, artifacts, schedules."""

import os

# Offline machines log telemetry errors on every run without this; users may override it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary API server takes ~15 s to start on 2 idle cores and more when they are busy
# (a scheduled run beside other work): Prefect's 20 s default then fails the whole run.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

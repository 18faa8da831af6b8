"""Prefect flows over the ``denoiser`` library: retries, caching, artifacts, schedules."""

import os

# Offline machines log telemetry errors on every run without this; users may override it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

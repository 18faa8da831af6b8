"""Prefect flows over the ``denoiser`` library: retries, caching, artifacts, schedules."""

import logging
import os

# Offline machines log telemetry errors on every run without this; users may override it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Route the library's log records (epoch lines, downloads, the model store) into the run
# logs and the console. Prefect copies its handlers onto these loggers but not a level.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "denoiser")
logging.getLogger("denoiser").setLevel(logging.INFO)
# The library also runs outside flow runs (task.fn(), the CLI): no warning for that.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

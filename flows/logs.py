"""Route the ``denoiser`` library's log records into the Prefect run logs.

The library logs through ``logging.getLogger(__name__)`` and installs no handlers. While a
task decorated with :func:`library_logs` runs, records that the library emits *from that
task's thread* are passed to the task's run logger, so they show in the Prefect UI under
the task run (and on the console) without depending on when Prefect set up logging.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

F = TypeVar("F", bound=Callable)
LIBRARY = "denoiser"


class _ToRunLogger(logging.Handler):
    def __init__(self, run_logger: logging.LoggerAdapter, thread: int) -> None:
        super().__init__(level=logging.INFO)
        self.run_logger, self.thread = run_logger, thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:  # concurrent tasks each forward only their own
            self.run_logger.log(record.levelno, record.getMessage())


def library_logs(fn: F) -> F:
    """Decorator for a task body: forward the library's INFO+ records to the run logger."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            run_logger = get_run_logger()
        except MissingContextError:  # called as plain Python (task.fn()): nothing to route to
            return fn(*args, **kwargs)
        library = logging.getLogger(LIBRARY)
        handler = _ToRunLogger(run_logger, threading.get_ident())
        library.addHandler(handler)
        if library.getEffectiveLevel() > logging.INFO:
            library.setLevel(logging.INFO)
        # The run logger already prints to the console: do not print the records twice.
        library.propagate = False
        try:
            return fn(*args, **kwargs)
        finally:
            library.removeHandler(handler)
            if not any(isinstance(h, _ToRunLogger) for h in library.handlers):
                library.propagate = True

    return wrapper  # type: ignore[return-value]

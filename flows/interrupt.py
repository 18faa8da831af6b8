"""Ctrl-C that always stops a run.

Python raises KeyboardInterrupt in the main thread wherever it happens to be. Inside Prefect's
event machinery it can be caught and lost: measured in CI, a ``denoiser clean`` given SIGINT
after 10 of 150 files logged "Service 'EventsWorker' failed", cleaned the other 140 and exited
0. So the command's handler also sets :data:`requested`, which the flows check: in ``clean``,
shards not yet started do nothing and the flow raises KeyboardInterrupt itself before it writes
a report; ``run``, ``evaluate`` and ``adapt`` call :func:`check` between their tasks.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

requested = threading.Event()


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT in this process (from its main thread; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)


def check() -> None:
    """Raise KeyboardInterrupt if the run was interrupted, even where the first one was lost."""
    if requested.is_set():
        raise KeyboardInterrupt

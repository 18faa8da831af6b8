"""glibc's mmap threshold, set for the work at hand.

Cleaning scans of any size wants freed image arrays to go back to the system: glibc raises
its mmap threshold as large blocks are freed and then keeps them in per-thread heaps, so
cleaning 2000x2000 scans on five threads peaked at 1.29 GB of RSS, and 0.79 GB with every
block of 1 MB or more served by mmap (:func:`for_scans`; measured on 2 cores). Training
wants the opposite: its batches allocate the same large activations again and again, every
mmap'd block costs page faults when it is touched, and the U-Net trained 1.4x slower with
the 1 MB threshold (569-582 against 791-824 images/s in bf16, 2-core AMD EPYC).
:func:`for_training` sets the threshold to glibc's own ceiling, which measured as fast as
glibc's default (830-849 against 831-868 images/s). A process that trains and then cleans
(the first ``denoiser clean``) switches between them. glibc only; elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import functools

M_MMAP_THRESHOLD = -3
SCANS = 1 << 20
TRAINING = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _set(threshold: int) -> None:
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, threshold)  # also turns off the dynamic threshold


def for_scans() -> None:
    """Serve blocks of 1 MB or more with mmap, so freed image arrays go back to the system."""
    _set(SCANS)


def for_training() -> None:
    """Keep large blocks in the heap for reuse, as glibc's default does at its ceiling."""
    _set(TRAINING)

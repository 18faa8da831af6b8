"""Training yields CPUs to other busy processes (denoiser.threads), measured for real."""

import os
import subprocess
import sys
import time

import pytest
import torch

from denoiser.threads import CpuShare, fixed_threads, threads_for

BUSY = "while True: pass"


def test_the_threads_are_the_cpus_the_others_leave():
    assert threads_for(0.0, cpus=2, most=2) == 2
    assert threads_for(0.4, cpus=2, most=2) == 2  # an idle server or a shell changes nothing
    assert threads_for(0.9, cpus=2, most=2) == 1  # one competing busy process
    assert threads_for(7.0, cpus=2, most=2) == 1  # never fewer than one
    assert threads_for(1.0, cpus=16, most=8) == 8  # never more than torch's own count
    assert threads_for(10.2, cpus=16, most=8) == 6


def test_a_fixed_count_is_kept_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DENOISER_THREADS", raising=False)
    assert fixed_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert fixed_threads() == 2
    monkeypatch.setenv("DENOISER_THREADS", "1")  # ours first
    assert fixed_threads() == 1
    before = torch.get_num_threads()
    with CpuShare(torch.device("cpu"), check_seconds=0) as share:
        assert torch.get_num_threads() == 1 and not share.governed
        share.step()
        assert share.threads == 1 and share.changes == 0
    assert torch.get_num_threads() == before
    monkeypatch.setenv("DENOISER_THREADS", "two")
    with pytest.raises(ValueError, match=r"^DENOISER_THREADS='two': must be a whole number of threads >= 1$"):
        fixed_threads()


def test_with_every_cpu_busy_elsewhere_training_drops_to_one_thread_and_restores_after(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DENOISER_THREADS", raising=False)
    before = torch.get_num_threads()
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)  # the competitors are running
        with CpuShare(torch.device("cpu"), check_seconds=1.0) as share:
            assert share.governed
            time.sleep(1.2)
            share.step()
            assert share.threads == 1
            assert share.changes == (1 if share.most > 1 else 0)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert torch.get_num_threads() == before

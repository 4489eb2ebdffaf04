"""What the worker's resource sampler reads (tests/workers/test_runner.py: what a job stores)."""

import subprocess
import sys
import time

import psutil
import torch

from workers.resources import ResourceSampler


def test_the_sampler_counts_the_processes_the_worker_started():
    """The busy child's CPU and memory on top of this process's own, over the same second
    (this process may be busy too: a test run's other threads)."""
    sampler = ResourceSampler(torch.device("cpu"))
    own = psutil.Process()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler.sample()  # the child's CPU clock starts at its first sample
        own.cpu_percent()
        time.sleep(1.0)
        with_child = sampler.sample()
        own_cpu, own_mib = own.cpu_percent(), own.memory_info().rss / 2**20
    finally:
        busy.kill()
        busy.wait()
    assert with_child["cpu_percent"] - own_cpu > 5  # a spinning child, even on a busy machine
    assert with_child["memory_mib"] > own_mib > 50  # torch alone takes more
    assert "gpu_percent" not in with_child and "gpu_memory_mib" not in with_child

"""What the worker's resource sampler reads (tests/workers/test_runner.py: what a job stores)."""

import subprocess
import sys
import time

import torch

from workers.resources import ResourceSampler


def test_the_sampler_counts_the_processes_the_worker_started():
    sampler = ResourceSampler(torch.device("cpu"))
    time.sleep(0.5)
    alone = sampler.sample()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler.sample()  # the child's CPU clock starts at its first sample
        time.sleep(1.0)
        with_child = sampler.sample()
    finally:
        busy.kill()
        busy.wait()
    assert alone["cpu_percent"] < 5 < with_child["cpu_percent"]
    assert with_child["memory_mib"] > alone["memory_mib"] > 50  # torch alone takes more
    assert "gpu_percent" not in with_child and "gpu_memory_mib" not in with_child

"""What a training job uses, sampled by the step writer about once a second and stored as
metric series beside the loss: the worker's CPU and memory, and the GPU's where the job
trains on one."""

import logging

import psutil
import torch

from app.jobspec import ResourceMetric

log = logging.getLogger("trainserve.worker")
MIB = 1024 * 1024


class ResourceSampler:
    """The worker process and every process it started (a distributed job's ranks): their
    CPU use since the last sample (100 = one core busy) and their resident memory."""

    def __init__(self, device: torch.device):
        self.device = device
        self.process = psutil.Process()
        self._known: dict[int, psutil.Process] = {}
        self._gpu_utilization = device.type == "cuda"  # off once torch says it cannot read it
        self.sample()  # psutil's CPU figure is "since the previous call": start the clock

    def sample(self) -> dict[ResourceMetric, float]:
        cpu = memory = 0.0
        for process in self._processes():
            try:
                with process.oneshot():
                    cpu += process.cpu_percent()
                    memory += process.memory_info().rss
            except psutil.NoSuchProcess:  # a rank that ended between the listing and now
                self._known.pop(process.pid, None)
        values: dict[ResourceMetric, float] = {"cpu_percent": cpu, "memory_mib": memory / MIB}
        if self.device.type == "cuda":
            values |= self._gpu()
        return values

    def _processes(self) -> list[psutil.Process]:
        """This process and its descendants, the same Process objects from one sample to
        the next: a new one's first CPU figure is 0, as psutil counts from its first call."""
        try:
            current = [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            current = [self.process]
        self._known = {p.pid: self._known.get(p.pid, p) for p in current}
        return list(self._known.values())

    def _gpu(self) -> dict[ResourceMetric, float]:
        values: dict[ResourceMetric, float] = {
            "gpu_memory_mib": torch.cuda.memory_reserved(self.device) / MIB
        }
        if self._gpu_utilization:
            try:
                values["gpu_percent"] = float(torch.cuda.utilization(self.device))
            except Exception as exc:  # torch reads it through NVML (pynvml), which may be absent
                log.info("no GPU utilisation in the job's resource series: %s", exc)
                self._gpu_utilization = False
        return values

"""What changes when several processes (ranks) train one job as a DistributedDataParallel
group: each rank's device and shard of the batches, the wrapped network, and stopping
together. A rank is started by torch's launcher (workers/group.py starts it, workers/rank.py
is what it runs); in the worker's own process everything here is a no-op.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from app.jobspec import JobSpec
from workers.progress import StepReporter, TimeLimitReached
from workers.recipe import TrainingRun


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job's group; the default is a job of one process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leads(self) -> bool:
        """Rank 0 writes the job's checkpoints, steps, epochs and events; the others only
        train."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1

    @classmethod
    def joined(cls, device_type: str) -> "Ranks":
        """In a process torch's launcher started: join the group (its RANK, WORLD_SIZE,
        LOCAL_RANK and rendezvous come from the launcher's environment)."""
        local_rank = int(os.environ["LOCAL_RANK"])
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def spec_for_rank(self, spec: JobSpec) -> JobSpec:
        """The spec as this rank trains it: on its own GPU (or the CPU), compiled only once
        DistributedDataParallel has wrapped the network (distribute)."""
        if not self.several:
            return spec
        kind = spec.resources.rank_device
        device = f"cuda:{self.local_rank}" if kind == "cuda" else "cpu"
        hyper = spec.hyperparameters.model_copy(update={"compile": False})
        return spec.model_copy(update={"device": device, "hyperparameters": hyper})

    def device_label(self, device: torch.device) -> str:
        """What the job's `device` says: `cpu`, `cuda:0`, or `cpu (2 ranks)` for a group."""
        return f"{device.type} ({self.world} ranks)" if self.several else str(device)

    def distribute(self, run: TrainingRun, compile_network: bool) -> None:
        """Give this rank its shard of the batches (batch_size is the global batch) and
        average the gradients over the ranks."""
        if not self.several:
            return
        run.train = run.train.sharded(self.rank, self.world, run.train.batch_size // self.world)
        run.validation = run.validation.sharded(self.rank, self.world)
        run.plan(run.epochs)  # the schedule counts this rank's batches
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.evaluated = run.module
        parallel: nn.Module = DistributedDataParallel(run.module, device_ids=ids)
        if compile_network:  # compiled around DDP, so that its buckets overlap the backward
            parallel = torch.compile(parallel)  # type: ignore[assignment]
        run.trained = parallel

    def steps(
        self, reporter: StepReporter | None, device: torch.device
    ) -> "StepReporter | GroupStep":
        """The per-step callback: the reporter itself for one process; in a group, every
        rank's GroupStep around rank 0's reporter."""
        if not self.several:
            if reporter is None:
                raise RuntimeError("a job of one process reports its own steps")
            return reporter
        return GroupStep(reporter, device)


class GroupStep:
    """Called after every step on every rank. Rank 0's StepReporter stores the step and
    watches the time limit; then the ranks agree whether to stop (one all-reduce of one
    number), so that all of them leave the same step and none waits for the others."""

    def __init__(self, reporter: StepReporter | None, device: torch.device):
        self.reporter = reporter
        self._stop = torch.zeros(1, dtype=torch.int32, device=device)

    def __enter__(self) -> "GroupStep":
        if self.reporter is not None:
            self.reporter.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.reporter is not None:
            self.reporter.__exit__(*exc)

    def flush(self) -> None:
        if self.reporter is not None:
            self.reporter.flush()

    def __call__(self, loss: torch.Tensor) -> None:
        stop = 0
        if self.reporter is not None:
            try:
                self.reporter(loss)
            except TimeLimitReached:
                stop = 1
        self._stop.fill_(stop)
        dist.all_reduce(self._stop, op=dist.ReduceOp.MAX)
        if self._stop.item():
            raise TimeLimitReached


class LauncherWatch:
    """A rank's watch on the processes above it: when the worker process that started the
    group (TRAINSERVE_LAUNCHER_PID) or torch's launcher is gone, killed or crashed before
    it could stop the ranks, this rank exits at once, even from the middle of a step or a
    collective, instead of training on for nobody."""

    def __init__(self) -> None:
        self.worker = int(os.environ["TRAINSERVE_LAUNCHER_PID"])
        self.launcher = os.getppid()

    def gone(self) -> str | None:
        """What is gone, or None."""
        if os.getppid() != self.launcher:
            return "torch's launcher"
        try:
            os.kill(self.worker, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return f"the worker process {self.worker}"
        return None

"""A job of several ranks, from the worker's side: start them with torch's launcher as a
process group of their own, hold the lease while they train, stop every one of them on a
cancel, a lost lease or a stopping worker, and read what rank 0 reports.

A Celery prefork child is daemonic and may not start multiprocessing children of its own
(celery#1709), and CUDA must not be initialised in a process that forks afterwards
(pytorch#40403): so the ranks are a separate program (`workers.launch`, torchrun), started
with subprocess. Rank 0 writes the steps, epochs, events and checkpoints under this
worker's lease (the same owner name); this process writes the attempt's outcome, after
its heartbeat has stopped, as for a job of one process.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from app.config import Settings
from app.jobspec import JobSpec
from app.store.tables import EndReason, Job, ModelVersion
from models.data import DatasetError
from workers.lease import Lease
from workers.progress import TimeLimitReached

log = logging.getLogger("trainserve.worker")

POLL_SECONDS = 0.2  # how often the lease is looked at while the ranks train
OUTCOME = "outcome.json"  # rank 0's report of a finished run; failure-<rank>.json: an error


class RankGroupFailed(Exception):
    """A rank died or crashed without saying why: an infrastructure failure, retried."""


def train_in_group(
    session: Session, job: Job, owner: str, lease: Lease, settings: Settings
) -> tuple[ModelVersion, EndReason]:
    """Train the job with its ranks; returns what rank 0 reports, or raises what a rank
    failed with, as a job of one process would."""
    resources = JobSpec.model_validate(job.spec).resources
    with tempfile.TemporaryDirectory(prefix=f"trainserve-{job.id}-") as name:
        folder = Path(name)
        group = RankGroup(job.id, owner, resources.ranks, folder, settings)
        try:
            code = group.wait(lease)
        finally:
            group.stop()  # whatever happened: no rank outlives the attempt
        return read_outcome(folder, job.id, code)


class RankGroup:
    """torch's launcher and its ranks, in a session (process group) of their own."""

    def __init__(self, job_id: str, owner: str, ranks: int, folder: Path, settings: Settings):
        self.folder = folder
        threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // ranks)
        environment = os.environ | {
            "OMP_NUM_THREADS": str(threads),  # torchrun would set 1, with a warning
            "TRAINSERVE_LAUNCHER_PID": str(os.getpid()),  # ranks stop if this process dies
        }
        command = [
            sys.executable,
            "-m",
            "workers.launch",
            "--standalone",  # a rendezvous on a free local port: jobs side by side
            f"--nproc-per-node={ranks}",
            "--max-restarts=0",  # a failed rank fails the attempt; the job resumes from last.pt
            "-m",
            "workers.rank",
            job_id,
            owner,
            str(folder),
        ]
        self.process = subprocess.Popen(command, env=environment, start_new_session=True)
        log.info("job %s: %d ranks started (launcher pid %d)", job_id, ranks, self.process.pid)

    def wait(self, lease: Lease) -> int:
        """The launcher's exit code; raises what the lease says (cancel, lost, stopping)."""
        while True:
            with suppress(subprocess.TimeoutExpired):
                return self.process.wait(timeout=POLL_SECONDS)
            lease.check()

    def stop(self) -> None:
        """Kill every rank, then the launcher. Ranks run in sessions of their own (torch's
        launcher starts them so), each killed by the pid it wrote when it started; one that
        had not got that far finds its launcher gone within a second and exits
        (workers/distributed.py's LauncherWatch)."""
        for pid in self.rank_pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def rank_pids(self) -> list[int]:
        return [int(path.read_text()) for path in self.folder.glob("rank-*.pid")]


def read_outcome(folder: Path, job_id: str, code: int) -> tuple[ModelVersion, EndReason]:
    """What the group ended with: rank 0's model, a rank's job error, or a failure."""
    for path in sorted(folder.glob("failure-*.json")):
        raise _job_error(json.loads(path.read_text()))
    outcome = folder / OUTCOME
    if code != 0 or not outcome.exists():
        raise RankGroupFailed(f"a rank of the group failed (launcher exit code {code})")
    report = json.loads(outcome.read_text())
    return ModelVersion(job_id=job_id, **report["model"]), EndReason(report["reason"])


def _job_error(failure: dict) -> Exception:
    """The exception a job of one process would have raised: the runner handles it alike."""
    if failure["kind"] == "invalid":
        return DatasetError(failure["error"])
    if failure["kind"] == "out_of_memory":
        return torch.OutOfMemoryError(failure["error"])
    return TimeLimitReached()


def failure_kind(exc: BaseException) -> str | None:
    """How a rank names a job error for read_outcome; None for anything else (a crash)."""
    if isinstance(exc, DatasetError):
        return "invalid"
    if isinstance(exc, torch.OutOfMemoryError):
        return "out_of_memory"
    if isinstance(exc, TimeLimitReached):
        return "time_limit"
    return None

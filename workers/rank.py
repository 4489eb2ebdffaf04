"""One rank of a job trained by several processes: what torch's launcher runs for each.

    python -m workers.launch --standalone --nproc-per-node N -m workers.rank JOB OWNER FOLDER

Every rank reads the job and its data, trains its shard (workers/distributed.py) and
stops when the others do; rank 0 writes under the worker's lease (OWNER) and reports the
model in FOLDER/outcome.json. A rank that fails with a job error (bad data, the device's
memory, the time limit) says so in FOLDER/failure-<rank>.json; anything else is a crash,
which the worker retries. Each rank writes its pid in FOLDER/rank-<rank>.pid, so that the
worker can stop every one of them.
"""

import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from app.config import get_settings
from app.jobspec import JobSpec
from app.logs import configure_logging
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.jobs import get_job
from models.files import write_atomically
from workers.distributed import LauncherWatch, Ranks
from workers.group import OUTCOME, failure_kind
from workers.runner import train_job

log = logging.getLogger("trainserve.worker")

WATCH_SECONDS = 1.0  # how often a rank looks whether the processes above it are alive


class HeldByTheWorker:
    """The lease, as rank 0 sees it: the worker that started the group holds it, and stops
    the ranks itself on a cancel, a lost lease or its own shutdown."""

    def check(self) -> None:
        return None


def exit_when_orphaned(job_id: str, watch: LauncherWatch) -> None:
    if gone := watch.gone():
        log.warning("job %s: %s is gone; this rank stops", job_id, gone)
        os._exit(1)


def main(job_id: str, owner: str, folder: Path) -> int:
    configure_logging()
    watch = LauncherWatch()
    Periodic(
        lambda: exit_when_orphaned(job_id, watch), WATCH_SECONDS, name="launcher-watch"
    ).start()
    settings = get_settings()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    with get_session_factory()() as session:
        job = get_job(session, job_id)
        if job is None:
            log.error("job %s: no such job", job_id)
            return 1
        ranks = Ranks.joined(JobSpec.model_validate(job.spec).resources.rank_device)
        (folder / f"rank-{ranks.rank}.pid").write_text(str(os.getpid()))
        try:
            model, reason = train_job(session, job, owner, HeldByTheWorker(), settings, ranks)
        except Exception as exc:  # one line: the worker's log says what became of the job
            kind = failure_kind(exc)
            if kind is not None:
                failure = {"kind": kind, "error": str(exc)}
                _write_json(folder / f"failure-{ranks.rank}.json", failure)
            name = type(exc).__name__
            log.warning("job %s: rank %d stopped: %s: %s", job_id, ranks.rank, name, exc)
            return 1
        finally:
            dist.destroy_process_group()
    if model is not None:  # rank 0's
        report = {
            "reason": str(reason),
            "model": {
                "name": model.name,
                "task": model.task,
                "arch": model.arch,
                "classes": model.classes,
                "metrics": model.metrics,
                "checkpoint_path": model.checkpoint_path,
                "sha256": model.sha256,
                "evaluation": model.evaluation,
            },
        }
        _write_json(folder / OUTCOME, report)
    return 0


def _write_json(path: Path, value: dict) -> None:
    write_atomically(path, lambda file: file.write(json.dumps(value).encode()))


if __name__ == "__main__":
    job_id, owner, folder = sys.argv[1:]
    sys.exit(main(job_id, owner, Path(folder)))

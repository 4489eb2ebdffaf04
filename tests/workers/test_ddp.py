"""Jobs trained by several processes (DistributedDataParallel on gloo), launched by torch's
own launcher from the worker, against a real (SQLite) database."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.store.lifecycle import request_cancel
from tests.utils.jobs import queue_image_job, reloaded
from tests.utils.waiting import wait_until
from workers.runner import run_job

# Two ranks with batches of B/2 see, step by step, the examples one rank with batches of B
# sees, and the gradients are averaged: the same losses, up to float32 rounding of the sums.
LOSS_TOLERANCE = 1e-4


def queue_plain_image_job(session, settings, zip_bytes: bytes, processes: int, **hyper) -> str:
    """A job with nothing drawn at random per rank (no dropout, no augmentation)."""
    return queue_image_job(
        session,
        settings,
        zip_bytes,
        device="cpu",
        resources={"processes": processes},
        augmentation={"crop_padding": 0, "horizontal_flip": False},
        hyperparameters={"epochs": 3, "batch_size": 8, "lr": 0.05, "dropout": 0.0} | hyper,
    )


def test_two_ranks_with_half_batches_reach_the_losses_of_one(
    session, embedded_settings, two_class_zip
):
    one = queue_plain_image_job(session, embedded_settings, two_class_zip, processes=1)
    two = queue_plain_image_job(session, embedded_settings, two_class_zip, processes=2)
    run_job(one)
    run_job(two)
    single, group = reloaded(session, one), reloaded(session, two)
    assert single.status == group.status == "succeeded", (single.error, group.error)
    assert group.device == "cpu (2 ranks)"
    for a, b in zip(single.history, group.history, strict=True):
        print(
            f"epoch {a.epoch}: train_loss {a.train_loss:.6f} vs {b.train_loss:.6f}, "
            f"val_loss {a.val_loss:.6f} vs {b.val_loss:.6f}"
        )
        assert b.train_loss == pytest.approx(a.train_loss, abs=LOSS_TOLERANCE)
        assert b.val_loss == pytest.approx(a.val_loss, abs=LOSS_TOLERANCE)
        assert b.val_accuracy == a.val_accuracy


def group_processes(job_id: str) -> list[int]:
    """The pids of the job's ranks and of torch's launcher that started them."""
    pids = []
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            command = (folder / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        started = b"workers.rank" in command or b"workers.launch" in command
        if started and job_id.encode() in command:
            pids.append(int(folder.name))
    return pids


def rank_processes(job_id: str) -> dict[int, int]:
    """The job's rank processes alive now: {rank: pid}, read from /proc (their command
    line names the job, torch's launcher gives each its RANK)."""
    ranks = {}
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            command = (folder / "cmdline").read_bytes().split(b"\0")
            # A rank runs `-m workers.rank JOB …`; its launcher, `-m workers.launch … JOB …`.
            if b"workers.rank" not in command[:4] or job_id.encode() not in command:
                continue
            environment = dict(
                line.split(b"=", 1)
                for line in (folder / "environ").read_bytes().split(b"\0")
                if b"=" in line
            )
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        ranks[int(environment[b"RANK"])] = int(folder.name)
    return ranks


def train_in_background(job_id: str) -> threading.Thread:
    """run_job in a thread, as a worker's pool process runs it; the test acts meanwhile."""
    thread = threading.Thread(target=run_job, args=(job_id,), daemon=True)
    thread.start()
    return thread


def wait_for_epoch(session, job_id: str, epoch: int) -> None:
    """Until the job has recorded `epoch` (its ranks start in tens of seconds on a busy CPU)."""
    wait_until(
        lambda: (reloaded(session, job_id).epoch or 0) >= epoch,
        timeout=240,
        what=lambda: f"epoch {epoch} of job {job_id} ({reloaded(session, job_id).status})",
    )


# Long enough that the test acts while the ranks train: 5 steps an epoch, about 0.1 s each.
LONG = {"epochs": 30}


def test_killing_one_rank_fails_the_attempt_and_the_job_resumes(
    session, embedded_settings, two_class_zip
):
    job_id = queue_plain_image_job(session, embedded_settings, two_class_zip, 2, **LONG)
    attempt = train_in_background(job_id)
    wait_for_epoch(session, job_id, 2)
    ranks = rank_processes(job_id)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    attempt.join(timeout=120)
    assert not attempt.is_alive() and rank_processes(job_id) == {}  # rank 0 went with it
    failed = reloaded(session, job_id)
    assert failed.status == "queued" and failed.attempt == 1, failed.error
    assert "a rank of the group failed" in failed.error
    killed_after = failed.epoch
    run_job(job_id)  # another worker takes it up
    job = reloaded(session, job_id)
    assert job.status == "succeeded" and job.attempt == 2, job.error
    assert job.resumed_from_epoch is not None and job.resumed_from_epoch >= killed_after
    assert [h.epoch for h in job.history] == list(range(1, LONG["epochs"] + 1))


def test_a_cancelled_job_leaves_no_rank_running(session, embedded_settings, two_class_zip):
    job_id = queue_plain_image_job(session, embedded_settings, two_class_zip, 2, **LONG)
    attempt = train_in_background(job_id)
    wait_for_epoch(session, job_id, 1)
    assert sorted(rank_processes(job_id)) == [0, 1]
    asked = time.monotonic()
    assert request_cancel(session, job_id)
    attempt.join(timeout=60)
    stopped_in = time.monotonic() - asked
    assert not attempt.is_alive() and rank_processes(job_id) == {}
    job = reloaded(session, job_id)
    assert job.status == "cancelled" and job.epoch < LONG["epochs"]
    print(f"cancelled: every rank gone {stopped_in:.2f} s after the cancel")


def test_a_worker_killed_mid_job_leaves_no_rank_running(session, embedded_settings, two_class_zip):
    """The worker's process dies at once (SIGKILL: no cleanup of its own): its ranks and
    their launcher, in sessions of their own, notice and end."""
    job_id = queue_plain_image_job(session, embedded_settings, two_class_zip, 2, **LONG)
    worker = subprocess.Popen(
        [sys.executable, "-c", f"from workers.runner import run_job; run_job({job_id!r})"]
    )
    try:
        wait_for_epoch(session, job_id, 1)
        assert sorted(rank_processes(job_id)) == [0, 1]
        worker.kill()
        worker.wait()  # reaped, as Celery's pool reaps a child that died
        killed = time.monotonic()
        wait_until(lambda: not group_processes(job_id), timeout=30, what="the ranks to end")
        print(
            f"killed worker: every rank and the launcher gone in {time.monotonic() - killed:.1f} s"
        )
    finally:
        worker.kill()
        worker.wait()
    job = reloaded(session, job_id)
    assert job.status == "running"  # until the sweeper sees the lease lapse
    assert job.epoch < LONG["epochs"]  # the ranks stopped: they did not train to the end

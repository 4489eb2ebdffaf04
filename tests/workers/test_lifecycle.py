"""Cancel, crash and resume, retries, early stopping and time limits, against real SQLite."""

import os
import signal
import subprocess
import sys
import threading
import time
from typing import ClassVar

import pytest
import torch

from app.broker import make_celery
from app.store.datasets import get_dataset
from app.store.lifecycle import LeaseLost, claim_job, lease_held, renew_lease, request_cancel
from app.store.records import events_after, forget_progress_after, record_epoch, record_steps
from app.sweeper import recover_lost_workers
from models.files import load_plain
from tests.conftest import PROJECT
from tests.utils.jobs import (
    checkpoint_file,
    expire_lease,
    queue_image_job,
    reloaded,
    stored_file,
)
from tests.utils.waiting import wait_until
from workers.lease import Lease
from workers.runner import run_job

LONG_RUN = {"epochs": 300, "batch_size": 8, "lr": 0.01}


@pytest.fixture
def fast_heartbeat(monkeypatch, embedded_settings):
    for name, value in (("heartbeat_seconds", 0.05), ("step_flush_seconds", 0.05)):
        monkeypatch.setattr(embedded_settings, name, value)
    return embedded_settings


def steps_recorded(session, job_id: str) -> int:
    session.expire_all()
    return sum(e.kind == "step" for e in events_after(session, job_id, 0, 100_000))


def test_a_running_job_stops_at_its_next_step_when_cancelled(
    session, fast_heartbeat, two_class_zip
):
    job_id = queue_image_job(session, fast_heartbeat, two_class_zip, hyperparameters=LONG_RUN)
    worker = threading.Thread(target=run_job, args=(job_id,))
    worker.start()
    wait_until(lambda: steps_recorded(session, job_id) > 0, what="the first steps")
    assert request_cancel(session, job_id)
    asked = time.monotonic()
    worker.join(timeout=30)
    stopped_within = time.monotonic() - asked
    job = reloaded(session, job_id)
    assert not worker.is_alive() and stopped_within < 5
    assert job.status == "cancelled" and job.end_reason == "cancelled"
    assert job.epoch < 300 and job.model is None and job.lease_owner is None
    statuses = [
        e.data["status"] for e in events_after(session, job_id, 0, 100_000) if e.kind == "status"
    ]
    assert statuses == ["queued", "running", "cancelling", "cancelled"]


def test_a_worker_killed_mid_job_is_resumed_from_its_checkpoint(
    session, embedded_settings, monkeypatch, two_class_zip
):
    # Long enough (10 steps an epoch, 30 epochs) that a busy machine cannot let the job
    # finish between seeing epoch 2 and the kill.
    spec = {"hyperparameters": {"epochs": 30, "batch_size": 4, "lr": 0.01}, "seed": 3}
    killed = queue_image_job(session, embedded_settings, two_class_zip, **spec)
    worker = subprocess.Popen(
        [sys.executable, "-c", f"from workers.runner import run_job; run_job({killed!r})"],
        cwd=PROJECT,
        env=os.environ | {"TRAINSERVE_TORCH_THREADS": "1"},
    )
    try:
        wait_until(lambda: reloaded(session, killed).epoch >= 2, what="epoch 2 of the worker")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    done_at_kill = reloaded(session, killed).epoch
    assert reloaded(session, killed).status == "running"  # nobody is left to say otherwise
    expire_lease(session, killed)
    assert recover_lost_workers(session, make_celery(embedded_settings)) == {killed: "queued"}
    monkeypatch.setattr(embedded_settings, "torch_threads", 1)
    torch.set_num_threads(1)
    run_job(killed)
    job = reloaded(session, killed)
    assert job.status == "succeeded" and job.attempt == 2
    # It continues after the last checkpoint: the one recorded, or one written just before
    # the kill and recorded on resume. Either way only the interrupted epoch is redone.
    assert job.resumed_from_epoch in (done_at_kill, done_at_kill + 1)
    assert [h.epoch for h in job.history] == list(range(1, 31))
    # The same spec without a crash ends with the same weights: resuming restored the
    # optimizer, the schedule and the random state, not only the weights.
    uninterrupted = queue_image_job(session, embedded_settings, two_class_zip, **spec)
    run_job(uninterrupted)
    weights = [
        load_plain(checkpoint_file(reloaded(session, job_id).model))["state_dict"]
        for job_id in (killed, uninterrupted)
    ]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(tensor, weights[1][name], rtol=1e-4, atol=1e-5)


def test_an_infrastructure_failure_is_retried_and_bad_data_is_not(
    session, embedded_settings, two_class_zip, sentiment_csv
):
    job_id = queue_image_job(
        session, embedded_settings, two_class_zip, hyperparameters={"epochs": 1}
    )
    dataset_key = get_dataset(session, reloaded(session, job_id).dataset_id).path
    dataset_file = stored_file(embedded_settings, dataset_key)
    hidden = dataset_file.rename(dataset_file.with_suffix(".away"))  # the store is unavailable
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "queued" and job.attempt == 1 and "ArtefactMissing" in job.error
    hidden.rename(dataset_file)
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded" and job.attempt == 2 and job.end_reason == "completed"


def test_a_job_out_of_attempts_fails_saying_why(session, embedded_settings, two_class_zip):
    job_id = queue_image_job(session, embedded_settings, two_class_zip, limits={"max_attempts": 1})
    assert claim_job(session, job_id, "ghost-worker", lease_seconds=0)
    assert recover_lost_workers(session, make_celery(embedded_settings)) == {job_id: "failed"}
    job = reloaded(session, job_id)
    assert job.status == "failed" and job.end_reason == "attempts_exhausted"
    assert "ghost-worker stopped sending heartbeats (attempt 1 of 1)" in job.error


def test_a_cancel_whose_worker_died_ends_cancelled(session, embedded_settings, two_class_zip):
    job_id = queue_image_job(session, embedded_settings, two_class_zip)
    assert claim_job(session, job_id, "ghost-worker", lease_seconds=0)
    assert request_cancel(session, job_id)
    assert recover_lost_workers(session, make_celery(embedded_settings)) == {job_id: "cancelled"}
    assert reloaded(session, job_id).status == "cancelled"


def test_a_live_lease_is_not_taken_away(session, embedded_settings, two_class_zip):
    job_id = queue_image_job(session, embedded_settings, two_class_zip)
    assert claim_job(session, job_id, "busy-worker", lease_seconds=60)
    assert recover_lost_workers(session, make_celery(embedded_settings)) == {}
    assert renew_lease(session, job_id, "busy-worker", 60) == "running"
    assert renew_lease(session, job_id, "another-worker", 60) is None


def test_a_worker_whose_lease_was_taken_stops(session, fast_heartbeat, two_class_zip):
    job_id = queue_image_job(session, fast_heartbeat, two_class_zip)
    assert claim_job(session, job_id, "slow-worker", lease_seconds=60)
    with Lease(job_id, "slow-worker", fast_heartbeat) as lease:
        celery = make_celery(fast_heartbeat)

        def presumed_dead() -> dict:
            # A heartbeat may renew the lease between the two; then try again.
            expire_lease(session, job_id)
            return recover_lost_workers(session, celery)

        wait_until(presumed_dead, what="the sweeper to take the lease away")
        wait_until(lease.lost.is_set, what="the lease to be lost")
        with pytest.raises(LeaseLost):
            lease.check()


def test_no_write_lands_once_the_lease_is_taken(session, embedded_settings, two_class_zip):
    """What a stale worker (frozen past its lease, then thawed) writes is refused whole."""
    job_id = queue_image_job(session, embedded_settings, two_class_zip)
    assert claim_job(session, job_id, "stale-worker", lease_seconds=60)
    record_steps(session, job_id, "stale-worker", [(1, 1, 0.9, 0.01)])
    expire_lease(session, job_id)
    assert recover_lost_workers(session, make_celery(embedded_settings)) == {job_id: "queued"}
    assert claim_job(session, job_id, "new-worker", lease_seconds=60)
    before = reloaded(session, job_id).event_seq
    assert not lease_held(session, job_id, "stale-worker")
    metrics = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.5, "val_accuracy": 0.9}
    writes = (
        lambda: record_steps(session, job_id, "stale-worker", [(2, 1, 0.8, 0.01)]),
        lambda: forget_progress_after(session, job_id, "stale-worker"),
        lambda: record_epoch(session, job_id, "stale-worker", metrics, 2, True, {}),
    )
    for write in writes:
        with pytest.raises(LeaseLost):
            write()
    job = reloaded(session, job_id)
    assert job.event_seq == before and job.epoch == 0 and job.lease_owner == "new-worker"
    assert steps_recorded(session, job_id) == 1  # the step written while it held the lease


def test_a_checkpoint_uploaded_as_the_lease_is_taken_is_removed(
    session, embedded_settings, two_class_zip, monkeypatch, caplog
):
    """The lease is taken over just after epoch 2's check, before its upload: the objects
    uploaded are deleted when the row's write is refused, and the attempt stops."""
    job_id = queue_image_job(
        session, embedded_settings, two_class_zip, hyperparameters={"epochs": 3, "batch_size": 8}
    )
    celery = make_celery(embedded_settings)
    checks: list[bool] = []

    def taken_just_after_the_check(worker_session, checked_job_id: str, owner: str) -> bool:
        held = lease_held(worker_session, checked_job_id, owner)
        checks.append(held)
        if len(checks) == 2:

            def presumed_dead() -> dict:
                expire_lease(session, job_id)  # a heartbeat may land in between: again
                return recover_lost_workers(session, celery)

            wait_until(presumed_dead, what="the sweeper to take the lease away")
            assert claim_job(session, job_id, "new-worker", lease_seconds=60)
        return held

    monkeypatch.setattr("workers.runner.lease_held", taken_just_after_the_check)
    run_job(job_id)
    job = reloaded(session, job_id)
    assert checks == [True, True] and job.lease_owner == "new-worker" and job.epoch == 1
    folder = stored_file(embedded_settings, f"jobs/{job_id}")
    stored = sorted(path.name for path in folder.iterdir())
    assert stored == ["a1-e1-best.pt", "a1-e1-last.pt"]  # what the row names, and no more
    assert {job.last_checkpoint, job.best_checkpoint} == {
        f"jobs/{job_id}/{name}" for name in stored
    }
    assert "attempt 1 stops, writing nothing more" in caplog.text


def test_a_cancel_not_honoured_in_time_stops_the_process(
    session, fast_heartbeat, monkeypatch, two_class_zip
):
    monkeypatch.setattr(fast_heartbeat, "cancel_grace_seconds", 0.2)
    job_id = queue_image_job(session, fast_heartbeat, two_class_zip)
    assert claim_job(session, job_id, "stuck-worker", lease_seconds=60)
    stopped = threading.Event()
    with Lease(job_id, "stuck-worker", fast_heartbeat, hard_stop=stopped.set):
        request_cancel(session, job_id)  # and no training step ever checks
        assert stopped.wait(timeout=10)
    assert reloaded(session, job_id).status == "cancelled"


def test_early_stopping_ends_the_job_with_its_best_epoch(session, embedded_settings, two_class_zip):
    job_id = queue_image_job(
        session,
        embedded_settings,
        two_class_zip,
        hyperparameters={"epochs": 20, "batch_size": 8},
        early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 100.0},
    )
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded" and job.end_reason == "early_stopped"
    assert [h.epoch for h in job.history] == [1, 2, 3]  # no improvement of 100 after epoch 1


def test_a_time_limit_before_the_first_epoch_fails_the_job(
    session, embedded_settings, two_class_zip
):
    job_id = queue_image_job(
        session, embedded_settings, two_class_zip, limits={"max_run_seconds": 0.001}
    )
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "failed" and job.end_reason == "time_limit"
    assert "max_run_seconds" in job.error and job.attempt == 1


class BeatsOnExit(Lease):
    """A lease whose heartbeat fires once more as the lease is given up: the last moment
    a beat can land, made certain instead of left to the clock."""

    found_lost: ClassVar[list[bool]] = []  # what each exit beat found (the test's own list)

    def __exit__(self, *exc) -> None:
        self.renew()
        self.found_lost.append(self.lost.is_set())
        super().__exit__(*exc)


def test_no_heartbeat_after_a_job_ends_reports_its_lease_lost(
    session, embedded_settings, monkeypatch, two_class_zip
):
    monkeypatch.setattr(embedded_settings, "heartbeat_seconds", 3600)  # only the exit beat
    monkeypatch.setattr("workers.runner.Lease", BeatsOnExit)
    monkeypatch.setattr(BeatsOnExit, "found_lost", [])
    job_id = queue_image_job(
        session, embedded_settings, two_class_zip, hyperparameters={"epochs": 1}
    )
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded"
    assert BeatsOnExit.found_lost == [False]
    # The exit beat found the job still running and renewed it: the outcome came after.
    assert job.heartbeat_at > job.started_at

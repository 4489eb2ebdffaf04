"""The worker's job life cycle against a real (SQLite) database, without Celery."""

import torch
from sqlalchemy import update

from app.broker import GPU_QUEUE, QUEUE
from app.store.lifecycle import claim_job, held_by, requeue_job
from app.store.records import metric_series, record_steps
from app.store.tables import Job
from app.store.versions import all_aliases
from models.files import file_sha256, load_plain
from tests.utils.jobs import (
    checkpoint_file,
    queue_image_job,
    queue_text_job,
    reloaded,
    stored_file,
)
from workers.runner import run_job


def test_run_job_records_history_checkpoints_and_model(session, embedded_settings, two_class_zip):
    job_id = queue_image_job(
        session,
        embedded_settings,
        two_class_zip,
        hyperparameters={"epochs": 3, "batch_size": 8, "lr": 0.05, "lr_schedule": "cosine"},
    )
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded", job.error
    assert [h.epoch for h in job.history] == [1, 2, 3] and job.epoch == 3
    assert job.best_val_accuracy == max(h.val_accuracy for h in job.history)
    model = job.model
    assert model.classes == ["bottom", "top"] and model.sha256 == file_sha256(
        checkpoint_file(model)
    )
    checkpoint = load_plain(checkpoint_file(model))
    assert checkpoint["epoch"] == job.best_epoch
    last = load_plain(stored_file(embedded_settings, job.last_checkpoint))
    assert job.last_checkpoint == f"jobs/{job_id}/a1-e3-last.pt"
    # Only the objects the row names are kept: earlier epochs' were removed as replaced.
    kept = {p.name for p in stored_file(embedded_settings, f"jobs/{job_id}").iterdir()}
    assert kept == {"a1-e3-last.pt", f"a1-e{job.best_epoch}-best.pt"}
    assert last["epoch"] == 3 and "optimizer" in last
    assert last["optimizer"]["param_groups"][0]["lr"] < 1e-6  # the schedule ran to its end
    assert last["scheduler"]["last_epoch"] == 3 * 5  # 40 images in batches of 8, 3 epochs
    assert all_aliases(session)[("image_classification", "latest")] == model.id
    steps = {point.step for point in metric_series(session, job_id, "loss", max_points=100)}
    memory = metric_series(session, job_id, "memory_mib", max_points=100)
    cpu = metric_series(session, job_id, "cpu_percent", max_points=100)
    assert memory and {point.step for point in memory} <= steps  # sampled as steps are stored
    assert all(point.value > 50 for point in memory)  # torch alone takes more
    assert [point.step for point in cpu] == [point.step for point in memory]


def test_run_job_fails_with_an_actionable_error(session, embedded_settings, sentiment_csv):
    job_id = queue_text_job(
        session, embedded_settings, sentiment_csv, validation={"source": "test_split"}
    )
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "failed" and "has no test split" in job.error
    assert job.finished_at is not None and job.model is None


def test_a_job_that_is_not_queued_is_not_run_again(session, embedded_settings, sentiment_csv):
    job_id = queue_text_job(
        session, embedded_settings, sentiment_csv, hyperparameters={"epochs": 1}
    )
    run_job(job_id)
    run_job(job_id)  # a redelivered message
    job = reloaded(session, job_id)
    assert job.status == "succeeded" and len(job.history) == 1
    assert torch.is_tensor(load_plain(checkpoint_file(job.model))["state_dict"]["fc.weight"])


def test_a_cuda_job_runs_on_a_gpu_or_fails_saying_there_is_none(
    session, embedded_settings, sentiment_csv
):
    job_id = queue_text_job(
        session, embedded_settings, sentiment_csv, hyperparameters={"epochs": 1}, device="cuda"
    )
    run_job(job_id)
    job = reloaded(session, job_id)
    if torch.cuda.is_available():
        assert job.status == "succeeded" and job.device.startswith("cuda")
    else:
        assert job.status == "failed" and "no CUDA GPU" in job.error


def test_an_attempt_that_starts_over_replaces_the_steps_an_earlier_one_stored(
    session, embedded_settings, two_class_zip
):
    """An attempt stopped in its first epoch (no last.pt) leaves steps behind; the next
    attempt records the same step numbers again instead of crashing on them."""
    job_id = queue_image_job(
        session, embedded_settings, two_class_zip, hyperparameters={"epochs": 1, "batch_size": 8}
    )
    assert claim_job(session, job_id, "earlier", lease_seconds=60)
    record_steps(session, job_id, "earlier", [(step, 1, 9.0, 0.01) for step in range(1, 4)])
    assert requeue_job(session, job_id, held_by("earlier"), "its worker was lost")
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded", job.error
    losses = metric_series(session, job_id, "loss", max_points=100)
    assert [point.step for point in losses] == [1, 2, 3, 4, 5]
    assert all(point.value != 9.0 for point in losses)  # this attempt's losses, not the old


def test_a_worker_claims_only_the_jobs_of_its_queue(session, embedded_settings, sentiment_csv):
    """A message only says there is work: a CPU worker looking for the oldest queued job
    never takes a GPU queue's, which waits for a worker of that queue."""
    job_id = queue_text_job(
        session, embedded_settings, sentiment_csv, hyperparameters={"epochs": 1}
    )
    session.execute(update(Job).where(Job.id == job_id).values(queue=GPU_QUEUE))
    session.commit()
    run_job(job_id, queue=QUEUE, worker="cpu@node")
    assert reloaded(session, job_id).status == "queued"
    run_job("stale-message", queue=GPU_QUEUE, worker="gpu0@node")
    job = reloaded(session, job_id)
    assert job.status == "succeeded" and job.worker == "gpu0@node"

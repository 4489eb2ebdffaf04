"""Sizing a time budget's epochs on the run's own first steps."""

import torch

from tests.utils.jobs import queue_image_job, reloaded
from tests.workers.test_training import separable_images, spec
from workers.budget import epochs_for_budget
from workers.recipe import prepare_run
from workers.runner import run_job

BUDGET_ONLY = {"hyperparameters": {}, "limits": {"max_run_seconds": 60}}


def state(run) -> list[torch.Tensor]:
    return [t.clone() for t in run.network.state_dict().values()]


def test_sizing_leaves_the_run_as_it_was():
    run = prepare_run(spec(**BUDGET_ONLY), separable_images(200))
    before, rng = state(run), torch.get_rng_state()
    order_before = run.train.generator.get_state()
    epochs_for_budget(run, 60, most=40)
    assert all(torch.equal(a, b) for a, b in zip(before, state(run), strict=True))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(run.train.generator.get_state(), order_before)
    assert not run.optimizer.state  # no momentum left from the timed steps


def test_the_epochs_fit_the_budget_within_their_bounds():
    run = prepare_run(spec(**BUDGET_ONLY), separable_images(200))
    assert epochs_for_budget(run, 1e-6, most=40)[0] == 1
    epochs, why = epochs_for_budget(run, 1e6, most=40)
    assert epochs == 40 and why.startswith("budget: 40 epochs of about")


def test_a_job_with_only_a_time_budget_sizes_and_records_its_epochs(
    session, embedded_settings, two_class_zip
):
    job_id = queue_image_job(
        session,
        embedded_settings,
        two_class_zip,
        hyperparameters={},
        limits={"max_run_seconds": 120},
    )
    assert reloaded(session, job_id).spec["hyperparameters"]["epochs"] is None
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded", job.error
    planned = job.spec["hyperparameters"]["epochs"]
    assert job.epochs == planned and 1 <= planned <= 60
    assert job.spec_sources["hyperparameters.epochs"].startswith(f"budget: {planned} epochs")
    assert len(job.history) == planned or job.end_reason == "time_limit"

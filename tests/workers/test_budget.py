"""Sizing a time budget's epochs on the run's own first steps."""

import pytest
import torch

from tests.utils.jobs import queue_image_job, reloaded
from tests.workers.test_training import separable_images, spec
from workers import runner
from workers.budget import epochs_after_first, epochs_for_budget
from workers.recipe import make_scheduler, prepare_run
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


def queue_budget_job(session, settings, dataset_zip) -> str:
    """A queued job with a time budget of 15 s and no epochs."""
    limits = {"max_run_seconds": 15}
    return queue_image_job(session, settings, dataset_zip, hyperparameters={}, limits=limits)


def test_a_job_with_only_a_time_budget_sizes_and_records_its_epochs(
    session, embedded_settings, two_class_zip
):
    job_id = queue_budget_job(session, embedded_settings, two_class_zip)
    assert reloaded(session, job_id).spec["hyperparameters"]["epochs"] is None
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded", job.error
    planned = job.spec["hyperparameters"]["epochs"]
    assert job.epochs == planned and 1 <= planned <= 60
    assert job.spec_sources["hyperparameters.epochs"].startswith(f"budget: {planned} epochs")
    assert len(job.history) == planned or job.end_reason == "time_limit"


@pytest.mark.parametrize(
    ("first", "left", "most", "epochs"),
    [(10.0, 95.0, 40, 9), (10.0, 5.0, 40, 1), (1.0, 1000.0, 40, 40), (30.0, 0.0, 40, 1)],
)
def test_after_the_first_epoch_the_time_left_sizes_the_rest(first, left, most, epochs):
    sized, why = epochs_after_first(first, left, most)
    assert sized == epochs
    assert why.startswith(f"budget: {epochs} epochs (the first took {first:.1f} s;")


def test_a_plan_sized_again_goes_on_from_the_steps_taken():
    """The new schedule's rate is the one a schedule of the new length has at this step,
    not its first step's: the run does not warm up a second time."""
    one_cycle = {"epochs": 4, "lr": 0.1, "lr_schedule": "onecycle", "batch_size": 16}
    run = prepare_run(spec(hyperparameters=one_cycle), separable_images(200))
    steps = run.options.steps_per_epoch(len(run.train))
    for _ in range(steps):
        run.optimizer.step()
        run.scheduler.step()
    run.plan(7, epochs_done=1)
    reference = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    longer = run.spec.hyperparameters
    schedule = make_scheduler(reference, longer, steps)
    first_rate = reference.param_groups[0]["lr"]
    for _ in range(steps):
        reference.step()
        schedule.step()
    assert longer.epochs == 7
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])
    assert run.optimizer.param_groups[0]["lr"] > 2 * first_rate


def test_a_short_first_guess_is_sized_again_after_the_first_epoch(
    session, embedded_settings, two_class_zip, monkeypatch
):
    """A first guess far below what fits (as when the timed steps ran fast and the epochs
    slow) is corrected from the first epoch's real time, and the run trains to the new count."""
    monkeypatch.setattr(
        runner, "epochs_for_budget", lambda run, seconds, most: (2, "budget: 2 epochs (a guess)")
    )
    job_id = queue_budget_job(session, embedded_settings, two_class_zip)
    run_job(job_id)
    job = reloaded(session, job_id)
    assert job.status == "succeeded", job.error
    planned = job.spec["hyperparameters"]["epochs"]
    assert planned > 2 and job.epochs == planned
    assert job.spec_sources["hyperparameters.epochs"].startswith(
        f"budget: {planned} epochs (the first took"
    )
    assert len(job.history) == planned or job.end_reason == "time_limit"

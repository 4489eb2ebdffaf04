"""`jobs follow`'s bar: its steps per epoch guessed, then learnt from the stream."""

from trainserve_cli.events import JobEvent
from trainserve_cli.follow import JobProgress, outcome

JOB = {"id": "j1", "name": "mnist-cnn", "arch": "tutorial_cnn", "epochs": 3}


def step(seq: int, epoch: int) -> JobEvent:
    return JobEvent(seq, "step", {"step": seq, "epoch": epoch, "loss": 0.5, "lr": 0.01})


def test_the_first_epochs_last_step_tells_the_steps_per_epoch():
    view = JobProgress(JOB, steps_per_epoch=5)  # the guess counted a holdout as training
    for seq in range(1, 5):
        view.show(step(seq, epoch=1))
    view.show(step(5, epoch=2))
    assert view.steps_per_epoch == 4
    assert view.bar.tasks[0].total == 12 and view.bar.tasks[0].completed == 5
    assert view.bar.tasks[0].description == "epoch 2/3"


def test_a_stream_joined_mid_way_learns_nothing_from_a_gap():
    view = JobProgress(JOB, steps_per_epoch=None)
    view.show(step(3, epoch=1))
    view.show(step(9, epoch=3))  # steps 4-8 were not seen: no epoch boundary is known
    assert view.steps_per_epoch is None
    assert view.bar.tasks[0].total is None and view.bar.tasks[0].completed == 9


def test_a_step_past_the_guess_stretches_the_bar():
    view = JobProgress(JOB | {"epochs": 1}, steps_per_epoch=3)
    view.show(step(4, epoch=1))
    assert view.bar.tasks[0].total == 4


def test_the_outcome_line_gives_the_accuracy_and_model_or_the_error():
    succeeded = {
        "status": "succeeded",
        "end_reason": "completed",
        "duration_seconds": 31.04,
        "best_val_accuracy": 0.98765,
        "best_epoch": 2,
        "model_id": "m1",
        "name": "mnist-cnn",
        "error": None,
    }
    assert outcome(succeeded) == (
        "succeeded (completed) in 31.0 s: best val_accuracy 0.9877 (epoch 2), model m1 (mnist-cnn)"
    )
    failed = {"status": "failed", "end_reason": "invalid", "error": "images too small"}
    assert outcome(failed) == "failed (invalid): images too small"
    assert outcome({"status": "running"}) == "running"

"""Jobs trained by several processes (DistributedDataParallel on gloo), launched by torch's
own launcher from the worker, against a real (SQLite) database."""

import pytest

from tests.utils.jobs import queue_image_job, reloaded
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
        print(f"epoch {a.epoch}: train_loss {a.train_loss:.6f} vs {b.train_loss:.6f}, "
              f"val_loss {a.val_loss:.6f} vs {b.val_loss:.6f}")
        assert b.train_loss == pytest.approx(a.train_loss, abs=LOSS_TOLERANCE)
        assert b.val_loss == pytest.approx(a.val_loss, abs=LOSS_TOLERANCE)
        assert b.val_accuracy == a.val_accuracy

import pytest
import torch

from app.schemas import JobCreate
from models.data import DatasetError, ImageData, TextData
from workers.recipe import prepare_run, split_indices
from workers.training import Batches, EpochResult, epochs_without_improvement


def separable_images(count: int) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 2
    images = torch.randint(0, 60, (count, 1, 16, 16), generator=generator, dtype=torch.uint8)
    images[labels == 1, :, :8] += 150  # class 1 is bright on top
    return ImageData(
        ["dark", "bright"], labels, torch.arange(count) >= count - 20, "idx", images=images
    )


def spec(task: str = "image_classification", arch: str = "tutorial_cnn", **overrides) -> JobCreate:
    fields = {
        "task": task,
        "dataset_id": "d",
        "model": {"arch": arch},
        "seed": 1,
        "hyperparameters": {"epochs": 3, "batch_size": 16, "lr": 0.05},
    }
    return JobCreate.model_validate(fields | overrides)


def test_batches_cover_every_example_once_per_epoch():
    labels = torch.arange(10)
    batches = Batches(
        lambda i: i.float(), labels, 4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    seen = torch.cat([y for _, y in batches])
    assert len(batches) == 3 and sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))  # shuffled


def test_validation_sources():
    data = separable_images(100)
    train, val = split_indices(data, spec(), torch.Generator().manual_seed(0))
    assert (len(train), len(val)) == (80, 20) and bool(data.is_test[val].all())
    holdout = spec(validation={"source": "holdout", "fraction": 0.25})
    train, val = split_indices(data, holdout, torch.Generator().manual_seed(0))
    assert (len(train), len(val)) == (60, 20)
    assert not set(train.tolist()) & set(val.tolist())
    assert not bool(data.is_test[train].any())


def test_fit_learns_separable_images_and_reports_each_epoch():
    run = prepare_run(spec(), separable_images(200))
    results: list[EpochResult] = []
    run.fit(3, on_epoch_end=results.append)
    assert [r.epoch for r in results] == [1, 2, 3]
    assert results[-1].val_accuracy >= 0.95
    assert results[-1].train_loss < results[0].train_loss
    assert all(r.samples_per_second > 0 for r in results)


def test_images_too_small_for_the_network_are_a_data_error():
    data = separable_images(40)
    data.images = data.images[:, :, :8, :8]
    with pytest.raises(DatasetError, match="at least 16x16, not 8x8"):
        prepare_run(spec(), data)


def test_text_run_builds_vocabulary_from_training_texts_only():
    texts = [f"good great {i}" for i in range(20)] + [f"bad awful {i}" for i in range(20)]
    texts[-1] = "only in validation"
    labels = torch.tensor([1] * 20 + [0] * 20)
    is_test = torch.zeros(40, dtype=torch.bool)
    is_test[-1] = True
    data = TextData(["negative", "positive"], labels, is_test, "csv", texts=texts)
    run = prepare_run(spec("text_sentiment", "text_cnn", text={"min_freq": 1}), data)
    vocabulary = run.description["preprocessing"]["vocabulary"]["tokens"]
    assert "good" in vocabulary and "validation" not in vocabulary
    inputs, _ = next(iter(run.train))
    assert inputs.dtype == torch.int64 and inputs.shape[1] >= 5  # padded to the widest filter


def test_cosine_schedule_decays_the_learning_rate_to_zero_by_the_last_step():
    cosine = spec(
        hyperparameters={"epochs": 2, "batch_size": 16, "lr": 0.05, "lr_schedule": "cosine"}
    )
    run = prepare_run(cosine, separable_images(64))
    run.fit(2, on_epoch_end=lambda _: None)
    assert run.optimizer.param_groups[0]["lr"] < 1e-6
    assert prepare_run(spec(), separable_images(64)).scheduler is None


@pytest.mark.parametrize(
    ("values", "higher_is_better", "min_delta", "stalled"),
    [
        ([1.0, 0.8, 0.6], False, 0.0, 0),  # a falling loss keeps improving
        ([1.0, 0.8, 0.9, 0.85], False, 0.0, 2),
        ([1.0, 0.95, 0.92], False, 0.1, 2),  # changes under min_delta do not count
        ([0.5, 0.7, 0.7], True, 0.0, 1),  # equal is not better
        ([], True, 0.0, 0),
    ],
)
def test_epochs_without_improvement(values, higher_is_better, min_delta, stalled):
    assert epochs_without_improvement(values, higher_is_better, min_delta) == stalled


def test_fit_starts_at_first_epoch_reports_every_step_and_stops_when_asked():
    run = prepare_run(spec(), separable_images(100))
    steps, epochs = [], []

    def on_epoch_end(result: EpochResult) -> bool:
        epochs.append(result.epoch)
        return result.epoch == 4

    run.fit(10, on_epoch_end, first_epoch=3, on_step=lambda loss: steps.append(loss.item()))
    assert epochs == [3, 4]
    assert len(steps) == 2 * len(run.train) and all(loss > 0 for loss in steps)

"""Resolving a spec: what it leaves out comes from the network's recipe and the data."""

import pytest
from pydantic import ValidationError

from app.jobspec import JobSpec, ValidationSpec
from app.recipes import RECIPES, DataFacts, facts_of, resolve

CIFAR = DataFacts("image_classification", 50_000, channels=3, height=32, width=32)
FACES = DataFacts("image_classification", 324, channels=1, height=112, width=92)
MR = DataFacts("text_sentiment", 9_596, mean_characters=115.0)


def spec(task: str = "image_classification", **fields) -> JobSpec:
    return JobSpec.model_validate({"task": task, "dataset_id": "d", **fields})


def test_a_minimal_image_spec_gets_a_network_and_its_recipe():
    resolved = resolve(spec(hyperparameters={"epochs": 8}), CIFAR)
    hyper = resolved.spec.hyperparameters
    assert resolved.spec.model.arch == "fast_resnet"
    assert (hyper.optimizer, hyper.lr, hyper.batch_size, hyper.lr_schedule) == (
        "sgd",
        0.2,
        256,
        "onecycle",
    )
    assert hyper.epochs == 8 and resolved.sources["hyperparameters.epochs"] == "given"
    assert resolved.sources["hyperparameters.lr"] == "recipe: fast_resnet"
    assert resolved.sources["model.arch"].startswith("auto: 50,000 training images of 32x32")
    augmentation = resolved.spec.augmentation
    assert (augmentation.crop_padding, augmentation.horizontal_flip) == (4, True)
    assert resolved.sources["augmentation.crop_padding"] == "data: colour images of 32x32"
    assert not any(path.startswith("text.") for path in resolved.sources)


def test_given_values_stay_and_say_so():
    given = {"batch_size": 100, "lr": 0.3, "epochs": 2}
    resolved = resolve(spec(model={"arch": "resnet18"}, hyperparameters=given), CIFAR)
    hyper = resolved.spec.hyperparameters
    assert (hyper.batch_size, hyper.lr, hyper.epochs) == (100, 0.3, 2)
    assert all(resolved.sources[f"hyperparameters.{name}"] == "given" for name in given)
    assert resolved.sources["hyperparameters.weight_decay"] == "recipe: resnet18"


def test_a_resolved_spec_resolves_to_itself():
    once = resolve(spec(task="text_sentiment", model={"arch": "text_gru"}), MR).spec
    assert resolve(once, MR).spec == once


def test_small_data_gets_smaller_batches_a_scaled_rate_and_more_epochs():
    resolved = resolve(spec(), FACES)
    hyper = resolved.spec.hyperparameters
    assert hyper.batch_size == 324 // 16
    assert hyper.lr == pytest.approx(0.2 * 20 / 256)
    steps = -(-324 // 20)
    assert hyper.epochs == min(RECIPES["fast_resnet"].max_epochs, -(-1500 // steps))
    assert resolved.sources["hyperparameters.epochs"].startswith("data: 17 steps per epoch")
    assert resolved.spec.augmentation.horizontal_flip is False  # grey


def test_another_optimizer_gets_its_own_learning_rate():
    resolved = resolve(
        spec(model={"arch": "fast_resnet"}, hyperparameters={"optimizer": "adam"}), CIFAR
    )
    assert resolved.spec.hyperparameters.lr == 0.001
    assert resolved.sources["hyperparameters.lr"] == "default for adam"
    assert resolved.spec.hyperparameters.weight_decay == 5e-4  # the recipe's, for any optimizer


def test_a_time_budget_leaves_the_epochs_to_the_worker():
    resolved = resolve(spec(limits={"max_run_seconds": 600}), CIFAR)
    assert resolved.spec.hyperparameters.epochs is None
    assert resolved.planned_epochs == RECIPES["fast_resnet"].max_epochs
    assert resolved.sources["hyperparameters.epochs"].startswith("budget: as many as fit in 600 s")


def test_text_specs_get_the_network_s_ngrams_and_a_token_budget_from_the_lengths():
    boe = resolve(spec(task="text_sentiment"), MR)
    assert boe.spec.model.arch == "bag_of_embeddings"
    assert (boe.spec.text.ngrams, boe.spec.text.min_freq) == (2, 2)
    assert boe.spec.hyperparameters.dropout == 0.5
    cnn = resolve(spec(task="text_sentiment", model={"arch": "text_cnn"}), MR)
    assert cnn.spec.text.ngrams == 1
    # 115 characters are about 19 words: four times that, in steps of 64.
    assert (boe.spec.text.max_tokens, cnn.spec.text.max_tokens) == (192, 128)
    assert cnn.sources["text.max_tokens"].startswith("data: texts of 115 characters")
    assert not any(path.startswith("augmentation.") for path in cnn.sources)


def test_a_filled_value_that_contradicts_a_given_one_is_refused():
    fields = {"model": {"arch": "minilm_finetuned"}, "hyperparameters": {"warmup_epochs": 5}}
    with pytest.raises(ValidationError, match="warmup_epochs must be shorter"):
        resolve(spec(task="text_sentiment", **fields), MR)


def test_network_options_need_a_named_network():
    with pytest.raises(ValidationError, match=r"need a named model\.arch"):
        spec(model={"width": 64})


@pytest.mark.parametrize(
    ("validation", "training"),
    [
        ({}, 900),  # no test split: 10 % held out
        ({"fraction": 0.25}, 750),
        ({"dataset_id": "other"}, 1000),
    ],
)
def test_the_training_examples_are_what_validation_leaves(validation, training):
    counts = {"train": {"a": 500, "b": 500}}
    facts = facts_of("text_sentiment", counts, {}, ValidationSpec.model_validate(validation))
    assert facts.training_examples == training


def test_a_test_split_is_not_taken_from_training():
    counts = {"train": {"a": 500, "b": 500}, "test": {"a": 50, "b": 50}}
    facts = facts_of("image_classification", counts, {"channels": 1}, ValidationSpec())
    assert facts.training_examples == 1000 and facts.channels == 1

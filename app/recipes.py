"""What a spec leaves out: the network, and each network's recipe fitted to the data.

A job is stored resolved: POST /jobs fills every field the client left out, from the
network's recipe (docs/recipes.md says where each comes from), some of them fitted to the
data (batch size, epochs, augmentation, text lengths), and `model.arch: auto` picks the
network. Beside the spec it stores where each value came from (`spec_sources`), so that
GET /jobs/{id} shows what runs and why. One value may stay open: the epochs of a job with
only a time budget, which the worker sizes once it has timed a few steps
(workers/budget.py). The worker resolves the spec it reads once more, with the facts of
the data it loaded; a resolved spec comes out unchanged.
"""

import math
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from app.jobspec import AUTO, JobSpec, ValidationSpec
from app.store.tables import Dataset
from models.architectures import ARCHITECTURES
from models.augment import ImageAugmentation
from models.data import IMAGE_TASK

T = TypeVar("T")

GIVEN = "given"
DEFAULT = "default"  # the spec's own default, the same for every network

# A batch holds at most this share of the training examples, and no fewer than MIN_BATCH:
# a data set of a few hundred examples still takes a dozen steps per epoch.
BATCHES_PER_EPOCH_AT_LEAST = 16
MIN_BATCH = 8
# Words per character of English text, to size a text's token budget from its mean length.
WORDS_PER_CHARACTER = 1 / 6
TOKENS_PER_TEXT = (64, 1024)  # the fitted max_tokens stays within these
# Per optimizer, the learning rate for a network whose recipe uses another optimizer.
OTHER_OPTIMIZER_LR = {"sgd": 0.05, "adam": 0.001, "adamw": 0.001}
SGD_MOMENTUM = {"momentum": 0.9, "nesterov": False}  # PyTorch's usual, for any other recipe
SGD_ONLY_AND_LR = ("lr", *SGD_MOMENTUM)


@dataclass(frozen=True)
class Recipe:
    """Defaults for one network, at its recipe's batch size; `why` cites its source."""

    why: str
    hyperparameters: dict[str, object]
    epochs: int  # when neither epochs nor a time budget is given...
    min_steps: int  # ...raised, for small data, until training takes this many steps
    max_epochs: int  # the most a time budget sizes the epochs to
    text: dict[str, object] = field(default_factory=dict)


SGD_RESNET = {
    "optimizer": "sgd",
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "lr_schedule": "onecycle",
    "label_smoothing": 0.1,
}
# Text networks trained from scratch: Adam at a constant rate, dropout 0.5.
ADAM_TEXT = {
    "optimizer": "adam",
    "lr": 0.001,
    "dropout": 0.5,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "label_smoothing": 0.0,
}
RECIPES = {
    "tutorial_cnn": Recipe(
        "SGD with Nesterov momentum, a one-cycle schedule (Smith 2018), label smoothing 0.1",
        {**SGD_RESNET, "batch_size": 64, "lr": 0.05},
        epochs=10,
        min_steps=1500,
        max_epochs=60,
    ),
    "fast_resnet": Recipe(
        "airbench (Jordan 2024) and the ResNet-9 DAWNBench entry: SGD, Nesterov, one-cycle, "
        "label smoothing 0.1",
        {**SGD_RESNET, "batch_size": 256, "lr": 0.2},
        epochs=10,
        min_steps=1500,
        max_epochs=60,
    ),
    "resnet18": Recipe(
        "He et al. 2016 for CIFAR, with a one-cycle schedule and label smoothing",
        {**SGD_RESNET, "batch_size": 128, "lr": 0.1},
        epochs=10,
        min_steps=1500,
        max_epochs=60,
    ),
    "bag_of_embeddings": Recipe(
        "fastText (Joulin et al. 2017): word and bigram embeddings averaged; Adam, dropout 0.5",
        {**ADAM_TEXT, "lr": 0.005, "batch_size": 32},
        epochs=10,
        min_steps=1000,
        max_epochs=20,
        text={"ngrams": 2},
    ),
    "text_cnn": Recipe(
        "Kim 2014 (CNN-rand): filters of 3, 4 and 5 words, dropout 0.5, batch 50; Adam",
        {**ADAM_TEXT, "batch_size": 50},
        epochs=10,
        min_steps=1000,
        max_epochs=20,
        text={"ngrams": 1},
    ),
    "text_gru": Recipe(
        "a bidirectional GRU, max-pooled: Adam, dropout 0.5, gradients clipped at norm 1",
        {**ADAM_TEXT, "batch_size": 64, "grad_clip_norm": 1.0},
        epochs=8,
        min_steps=1000,
        max_epochs=20,
        text={"ngrams": 1},
    ),
    "minilm_frozen": Recipe(
        "a linear head on frozen sentence features (Reimers & Gurevych 2019): Adam",
        {**ADAM_TEXT, "lr": 0.003, "batch_size": 64, "dropout": None},
        epochs=30,
        min_steps=1000,
        max_epochs=100,
    ),
    "minilm_finetuned": Recipe(
        "BERT-style fine-tuning (Devlin et al. 2019): AdamW 3e-5, warm-up, cosine decay",
        {
            "optimizer": "adamw",
            "lr": 3e-5,
            "batch_size": 32,
            "weight_decay": 0.01,
            "lr_schedule": "cosine",
            "warmup_epochs": 0.3,
            "label_smoothing": 0.0,
        },
        epochs=3,
        min_steps=300,
        max_epochs=10,
    ),
}


@dataclass(frozen=True)
class DataFacts:
    """What the stored data set says, enough to fit a recipe to it."""

    task: str
    training_examples: int  # less what validation holds out
    channels: int | None = None  # images
    height: int | None = None
    width: int | None = None
    mean_characters: float | None = None  # texts


def facts_of(
    task: str, counts: dict[str, dict[str, int]], details: dict, validation: ValidationSpec
) -> DataFacts:
    """From a data set's per-split class counts and reader details (the datasets row's, or
    LabelledData's own): its training examples are what the validation source leaves."""
    train = sum(counts.get("train", {}).values())
    has_test = bool(counts.get("test"))
    holds_out = validation.source == "holdout" or (
        validation.source == "auto" and not has_test and not validation.dataset_id
    )
    if holds_out:
        train -= max(1, round(train * validation.fraction))
    return DataFacts(
        task,
        max(train, 1),
        channels=details.get("channels"),
        height=details.get("height"),
        width=details.get("width"),
        mean_characters=details.get("mean_characters"),
    )


def facts_of_dataset(dataset: Dataset, validation: ValidationSpec) -> DataFacts:
    """A stored data set's facts, as POST /jobs reads them."""
    return facts_of(dataset.task, dataset.counts, dataset.details, validation)


@dataclass
class Resolved:
    spec: JobSpec
    sources: dict[str, str]  # "hyperparameters.lr": "given" / "recipe: …" / "data: …" / …

    @property
    def planned_epochs(self) -> int:
        """The epochs to show before the worker sizes them to a time budget: at most these."""
        epochs = self.spec.hyperparameters.epochs
        return epochs if epochs is not None else RECIPES[self.spec.model.arch].max_epochs


def filled(value: T | None) -> T:
    """A field `resolve` always fills: None here means an unresolved spec reached training."""
    if value is None:
        raise ValueError("the job spec was not resolved (app.recipes.resolve)")
    return value


def resolve(spec: JobSpec, facts: DataFacts) -> Resolved:
    """The spec with every open field filled, and where each value came from. Raises
    ValueError (pydantic's ValidationError) when the filled spec is invalid."""
    values = spec.model_dump(mode="json")
    sections = filled_sections(facts.task)
    sources = {path: GIVEN for path in given_paths(spec) if path.split(".")[0] in sections}
    arch = spec.model.arch
    if arch == AUTO:
        arch, why = pick_network(facts, spec)
        values["model"]["arch"] = arch
        sources["model.arch"] = f"auto: {why}"
    recipe = RECIPES[arch]
    hyperparameters = values["hyperparameters"]
    _fill_from_recipe(hyperparameters, sources, recipe, arch)
    _fit_batch_to_data(hyperparameters, sources, facts)
    _fit_epochs(hyperparameters, sources, recipe, facts, spec.limits.max_run_seconds, arch)
    if facts.task == IMAGE_TASK:
        _fill_augmentation(values["augmentation"], sources, facts)
    else:
        _fill_text(values["text"], sources, recipe, facts, arch)
    resolved = JobSpec.model_validate(values)
    for path in leaf_paths(resolved, sections):
        sources.setdefault(path, DEFAULT)
    return Resolved(resolved, dict(sorted(sources.items())))


def pick_network(facts: DataFacts, spec: JobSpec) -> tuple[str, str]:
    """The network for `arch: auto`, and why."""
    if facts.task == IMAGE_TASK:
        return "fast_resnet", (
            f"{facts.training_examples:,} training images of {facts.height}x{facts.width}: the "
            "residual network that reaches the highest accuracy per CPU second of the image "
            "networks (bench/defaults.py)"
        )
    return "bag_of_embeddings", (
        f"{facts.training_examples:,} training texts of {facts.mean_characters:.0f} characters "
        "on average: word and bigram embeddings train in seconds per epoch and match the "
        "convolutional and recurrent networks on sentences (bench/defaults.py)"
    )


def _fill_from_recipe(values: dict, sources: dict, recipe: Recipe, arch: str) -> None:
    """The recipe's values for the fields left out. A recipe's learning rate is for its own
    optimizer: with another one given, that optimizer's usual rate."""
    given_optimizer = values["optimizer"]
    own_optimizer = given_optimizer in (None, recipe.hyperparameters["optimizer"])
    for name, value in recipe.hyperparameters.items():
        left_out = values[name] is None and value is not None
        if left_out and (own_optimizer or name not in SGD_ONLY_AND_LR):
            values[name] = value
            sources[f"hyperparameters.{name}"] = f"recipe: {arch}"
    if values["lr"] is None:
        values["lr"] = OTHER_OPTIMIZER_LR[given_optimizer]
        sources["hyperparameters.lr"] = f"default for {given_optimizer}"
    for name, value in SGD_MOMENTUM.items():  # left as they are by adam and adamw
        if values[name] is None:
            values[name] = value
            sources[f"hyperparameters.{name}"] = DEFAULT


def _fit_batch_to_data(values: dict, sources: dict, facts: DataFacts) -> None:
    """Small data: a smaller batch, so that an epoch still takes several steps; SGD's
    learning rate scales with it (Goyal et al. 2017), Adam's is left."""
    if sources.get("hyperparameters.batch_size") == GIVEN:
        return
    batch = values["batch_size"]
    fitted = max(MIN_BATCH, facts.training_examples // BATCHES_PER_EPOCH_AT_LEAST)
    if fitted >= batch:
        return
    values["batch_size"] = fitted
    sources["hyperparameters.batch_size"] = (
        f"data: {facts.training_examples:,} training examples make at least "
        f"{BATCHES_PER_EPOCH_AT_LEAST} batches"
    )
    if values["optimizer"] == "sgd" and sources.get("hyperparameters.lr") != GIVEN:
        values["lr"] = round(values["lr"] * fitted / batch, 6)
        sources["hyperparameters.lr"] = f"data: the recipe's, scaled to batch {fitted}"


def _fit_epochs(
    values: dict,
    sources: dict,
    recipe: Recipe,
    facts: DataFacts,
    max_run_seconds: float | None,
    arch: str,
) -> None:
    """The recipe's epochs, more for small data; or, with a time budget, none yet."""
    if values["epochs"] is not None:
        return
    if max_run_seconds is not None:
        sources["hyperparameters.epochs"] = (
            f"budget: as many as fit in {max_run_seconds:g} s, at most {recipe.max_epochs}; "
            "the worker sizes them once it has timed a few steps"
        )
        return
    steps = math.ceil(facts.training_examples / values["batch_size"])
    needed = min(recipe.max_epochs, math.ceil(recipe.min_steps / steps))
    values["epochs"] = max(recipe.epochs, needed)
    sources["hyperparameters.epochs"] = (
        f"data: {steps} steps per epoch, {recipe.min_steps} steps at least"
        if needed > recipe.epochs
        else f"recipe: {arch}"
    )


def _fill_augmentation(values: dict, sources: dict, facts: DataFacts) -> None:
    if facts.channels is None or facts.height is None or facts.width is None:
        return
    default = ImageAugmentation.default_for(facts.channels, facts.height, facts.width)
    kind = "grey" if facts.channels == 1 else "colour"
    for name in ("crop_padding", "horizontal_flip"):
        if values[name] is None:
            values[name] = getattr(default, name)
            sources[f"augmentation.{name}"] = f"data: {kind} images of {facts.height}x{facts.width}"


def _fill_text(values: dict, sources: dict, recipe: Recipe, facts: DataFacts, arch: str) -> None:
    if ARCHITECTURES[arch].pretrained:  # its own tokenizer: no vocabulary, 512 tokens at most
        if values["max_tokens"] is None:
            values["max_tokens"] = 256
            sources["text.max_tokens"] = f"recipe: {arch}"
        return
    if values["ngrams"] is None:
        values["ngrams"] = recipe.text.get("ngrams", 1)
        sources["text.ngrams"] = f"recipe: {arch}"
    if values["min_freq"] is None:
        values["min_freq"] = recipe.text.get("min_freq", 2)
        sources["text.min_freq"] = f"recipe: {arch}"
    if values["max_tokens"] is None:
        values["max_tokens"] = _token_budget(facts.mean_characters or 0, values["ngrams"])
        sources["text.max_tokens"] = (
            f"data: texts of {facts.mean_characters or 0:.0f} characters on average, "
            f"{values['ngrams']}-grams"
        )


def _token_budget(mean_characters: float, ngrams: int) -> int:
    """Room for four times the mean text's words and n-grams, in steps of 64."""
    words = mean_characters * WORDS_PER_CHARACTER
    low, high = TOKENS_PER_TEXT
    return min(high, max(low, 64 * math.ceil(4 * words * ngrams / 64)))


def given_paths(model: BaseModel, prefix: str = "") -> list[str]:
    """The dotted paths of the fields the client sent, leaves only."""
    paths = []
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            paths += given_paths(value, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def leaf_paths(model: BaseModel, sections: tuple[str, ...], prefix: str = "") -> list[str]:
    """The dotted paths of every field of these sections of the spec."""
    paths = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            if prefix or name in sections:
                paths += leaf_paths(value, sections, f"{prefix}{name}.")
        elif prefix:
            paths.append(f"{prefix}{name}")
    return paths


def filled_sections(task: str) -> tuple[str, ...]:
    """The parts of a spec a recipe fills, for this task."""
    return ("model", "hyperparameters", "augmentation" if task == IMAGE_TASK else "text")

"""What a sweep is: a base job spec, the fields searched and how, the rule that stops bad
trials early, and the objective. Shared by the API (which validates it) and the worker and
the sweeper (which drive the sweep from its row), so it holds no HTTP concerns."""

import itertools
import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.jobspec import EpochMetric, JobSpec, Strict

# The fields of a job spec a sweep may not search: what the job is about, not how it trains.
NOT_SEARCHABLE = ("task", "dataset_id", "name")
MAX_TRIALS = 1000
MAX_GRID = 10_000  # a grid sweep's combinations, enumerated when the sweep is stored
# A trial judged partway through its epochs validates that often: 1/10 of an epoch at most.
MAX_CHECKS_PER_EPOCH = 10
# Where a trial trains no more epochs than the reduction factor, rungs of whole epochs leave
# one decision (bench/asha_budget.py): asha and hyperband then judge every half epoch.
SHORT_TRIAL_MIN_EPOCHS = 0.5
CHECKED_METRICS = ("val_loss", "val_accuracy")  # what a check partway through an epoch measures
HALVING_RULES = ("asha", "hyperband")  # the rules whose rungs are min_epochs * factor^k


class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = Field(False, description="Log-uniform (low must be above 0).")

    def corners(self) -> list[Any]:
        return [self.low, self.high]

    def values(self) -> list[Any]:
        raise TypeError("a float range has no list of values for a grid")

    def count(self) -> int:
        raise TypeError("a float range has no list of values for a grid")


class IntParam(Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = Field(False, description="Log-uniform (low ≥ 1, step 1).")

    def corners(self) -> list[Any]:
        return [self.low, self.high]

    def values(self) -> list[Any]:
        return list(self._range())

    def count(self) -> int:
        return len(self._range())  # without making the list: a range may be huge

    def _range(self) -> range:
        return range(self.low, self.high + 1, self.step)


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1, max_length=100)

    def corners(self) -> list[Any]:
        return list(self.choices)

    def values(self) -> list[Any]:
        return list(self.choices)

    def count(self) -> int:
        return len(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class PrunerSpec(Strict):
    """Which trials stop early, judged on the objective's metric after each epoch."""

    rule: Literal["none", "median", "asha", "hyperband"] = Field(
        "none",
        description="none: every trial trains its epochs. median: stop a trial whose best "
        "so far is worse than the median of the other trials at the same epoch. asha: "
        "asynchronous successive halving, a trial goes on past a rung (min_epochs * "
        "reduction_factor^k) only among the best 1/reduction_factor there. hyperband: "
        "several ASHA brackets of different min_epochs.",
    )
    min_epochs: float | None = Field(
        None,
        ge=1 / MAX_CHECKS_PER_EPOCH,
        le=1000,
        description="Epochs every trial trains before it may be stopped: a whole number, or "
        "1/n of an epoch (0.5, 0.25, … 0.1), when a trial is also judged every 1/n of each "
        "epoch, on a validation pass made for it. Default: 1, or 0.5 for asha and hyperband "
        "when a trial trains no more epochs than reduction_factor and the objective is a "
        "validation metric (rungs of whole epochs would leave one decision).",
    )
    reduction_factor: int = Field(3, ge=2, le=100, description="asha and hyperband only.")

    @field_validator("min_epochs")
    @classmethod
    def _whole_or_a_fraction_of_one(cls, value: float | None) -> float | None:
        if value is None or (value >= 1 and value.is_integer()):
            return value
        checks = round(1 / value)
        if value < 1 and 2 <= checks <= MAX_CHECKS_PER_EPOCH and math.isclose(value * checks, 1):
            return value
        raise ValueError(
            f"{value} epochs: give a whole number of epochs, or 1/n of one "
            f"(0.5, 0.25, … down to 1/{MAX_CHECKS_PER_EPOCH})"
        )


class Objective(Strict):
    metric: EpochMetric = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: maximize accuracies, minimize losses."
    )

    @property
    def maximize(self) -> bool:
        if self.direction is None:
            return self.metric.endswith("accuracy")
        return self.direction == "maximize"

    def best(self, values: list[float]) -> float | None:
        """The best of a trial's per-epoch values: its objective."""
        if not values:
            return None
        return max(values) if self.maximize else min(values)

    def better(self, value: float, than: float) -> bool:
        return value > than if self.maximize else value < than


class SweepSpec(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "base": {
                        "task": "text_sentiment",
                        "dataset_id": "9a0e…",
                        "name": "mr",
                        "model": {"arch": "bag_of_embeddings"},
                    },
                    "space": {
                        "hyperparameters.lr": {
                            "type": "float",
                            "low": 0.001,
                            "high": 0.05,
                            "log": True,
                        },
                        "hyperparameters.dropout": {"type": "float", "low": 0.2, "high": 0.6},
                    },
                    "pruner": {"rule": "asha"},
                    "max_trials": 16,
                    "max_parallel": 2,
                }
            ]
        },
    )

    base: JobSpec = Field(description="The job every trial starts from (POST /jobs's body).")
    space: dict[str, Param] = Field(
        min_length=1,
        max_length=20,
        description="Searched fields of the job spec, by dotted path "
        "(hyperparameters.lr, model.width, …): float, int or categorical.",
    )
    sampler: Literal["grid", "random", "tpe"] = Field(
        "tpe",
        description="grid: every combination of the categorical and int fields, in an order "
        "shuffled by seed; random; tpe: Optuna's tree-structured Parzen estimator, random for "
        "its first trials.",
    )
    pruner: PrunerSpec = PrunerSpec()
    objective: Objective = Objective()
    max_trials: int = Field(16, ge=1, le=MAX_TRIALS)
    max_parallel: int = Field(2, ge=1, le=64, description="Trials queued or running at once.")
    max_seconds: float | None = Field(
        None,
        gt=0,
        le=30 * 24 * 3600,
        description="The sweep's time budget: no trial starts after it, and trials still "
        "running then are cancelled.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _pruner_fits_the_trials(self) -> "SweepSpec":
        """Fill the pruner's min_epochs where it was left out, and refuse judging partway
        through an epoch on a metric that only an epoch's end measures."""
        pruner = self.pruner
        if pruner.min_epochs is None:
            self.pruner = pruner.model_copy(update={"min_epochs": self._default_min_epochs()})
        elif pruner.min_epochs < 1 and self.objective.metric not in CHECKED_METRICS:
            raise ValueError(
                f"pruner.min_epochs: a trial judged partway through an epoch is judged on a "
                f"validation pass; objective.metric {self.objective.metric} is a training "
                f"metric, measured at an epoch's end only"
            )
        return self

    def _default_min_epochs(self) -> float:
        pruner, most = self.pruner, self.most_epochs
        short = most is not None and most <= pruner.reduction_factor
        if pruner.rule in HALVING_RULES and short and self.objective.metric in CHECKED_METRICS:
            return SHORT_TRIAL_MIN_EPOCHS
        return 1

    @property
    def most_epochs(self) -> int | None:
        """The longest trial's epochs: the base spec's, or the highest searched; None when
        the recipe sizes them to a time budget."""
        searched = self.space.get("hyperparameters.epochs")
        if searched is None:
            return self.base.hyperparameters.epochs
        counts = [value for value in searched.corners() if isinstance(value, int)]
        return max(counts) if len(counts) == len(searched.corners()) else None

    @property
    def checks_per_epoch(self) -> int:
        """How many times a trial is judged per epoch: at its end, and at each 1/n of it
        when min_epochs is 1/n. The pruners count a trial's progress in these checks."""
        min_epochs = self.pruner.min_epochs or 1  # filled by the validator
        if self.pruner.rule == "none" or min_epochs >= 1:
            return 1
        return round(1 / min_epochs)

    @property
    def min_checks(self) -> int:
        """min_epochs counted in checks: the pruners' minimum resource."""
        return round((self.pruner.min_epochs or 1) * self.checks_per_epoch)

    def judges_at(self, check: int) -> bool:
        """Whether the rule can stop a trial at this check (numbered from 1): asha's and
        hyperband's rungs are min_checks * reduction_factor^k, the median rule judges every
        check from min_checks on. A check partway through an epoch is made only there."""
        if self.pruner.rule not in HALVING_RULES:
            return self.pruner.rule == "median" and check >= self.min_checks
        rung = self.min_checks
        while rung < check:
            rung *= self.pruner.reduction_factor
        return rung == check

    @model_validator(mode="after")
    def _space_fits_the_spec(self) -> "SweepSpec":
        if self.base.resources.ranks > 1:
            # The sweep's rule stops a trial after an epoch: every rank of a group would
            # have to hear it at once, which they do not yet.
            raise ValueError("base.resources: a sweep's trials train in one process each")
        for path, param in self.space.items():
            _check_path(path)
            _check_range(path, param)
            for value in param.corners():
                _check_value(self.base, path, value)
        if self.sampler == "grid":
            for path, param in self.space.items():
                if isinstance(param, FloatParam):
                    raise ValueError(
                        f"space[{path!r}]: the grid sampler needs categorical or int fields"
                    )
            size = math.prod(param.count() for param in self.space.values())
            if size > MAX_GRID:
                raise ValueError(f"the grid has {size} combinations, more than {MAX_GRID}")
        return self

    def trial_spec(self, params: dict[str, Any]) -> JobSpec:
        """The base spec with a trial's values in their fields."""
        values = self.base.model_dump(mode="json", exclude_unset=True)
        for path, value in params.items():
            _set_path(values, path, value)
        return JobSpec.model_validate(values)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of a grid sweep, in the order its trials take them."""
        paths = list(self.space)
        choices = [self.space[path].values() for path in paths]
        combinations = [
            dict(zip(paths, values, strict=True)) for values in itertools.product(*choices)
        ]
        random.Random(self.seed).shuffle(combinations)
        return combinations

    @property
    def trials_planned(self) -> int:
        """max_trials, or fewer when a grid has fewer combinations."""
        if self.sampler != "grid":
            return self.max_trials
        return min(self.max_trials, len(self.grid()))


def _check_path(path: str) -> None:
    """A path must name a leaf field of the job spec, such as hyperparameters.lr."""
    model: type[BaseModel] = JobSpec
    parts = path.split(".")
    if parts[0] in NOT_SEARCHABLE:
        raise ValueError(f"space[{path!r}]: {parts[0]} is what the job is, it cannot be searched")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            known = ", ".join(model.model_fields)
            where = ".".join(parts[:depth]) or "the job spec"
            raise ValueError(f"space[{path!r}]: {where} has no field {part!r} (it has {known})")
        annotation = _model_of(field.annotation)
        if depth < len(parts) - 1:
            if annotation is None:
                raise ValueError(f"space[{path!r}]: {'.'.join(parts[: depth + 1])} has no fields")
            model = annotation
        elif annotation is not None:
            first = next(iter(annotation.model_fields))
            raise ValueError(f"space[{path!r}]: name one of its fields, such as {path}.{first}")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also through `X | None`), or None for a value."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _check_range(path: str, param: FloatParam | IntParam | CategoricalParam) -> None:
    if isinstance(param, CategoricalParam):
        return
    if param.low >= param.high:
        raise ValueError(f"space[{path!r}]: low ({param.low}) must be below high ({param.high})")
    if param.log and param.low <= 0:
        raise ValueError(f"space[{path!r}]: a log scale needs low above 0, not {param.low}")
    if isinstance(param, IntParam) and param.log and param.step != 1:
        raise ValueError(f"space[{path!r}]: a log scale takes step 1")


def _check_value(base: JobSpec, path: str, value: Any) -> None:
    """Each end of a range and each choice must make a valid job spec."""
    values = base.model_dump(mode="json", exclude_unset=True)
    _set_path(values, path, value)
    try:
        JobSpec.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(
            f"space[{path!r}]: the value {value!r} makes an invalid job: {problems}"
        ) from None


def _set_path(values: dict[str, Any], path: str, value: Any) -> None:
    *sections, leaf = path.split(".")
    for section in sections:
        nested = values.get(section)
        if not isinstance(nested, dict):  # left out, or null (early_stopping)
            nested = values[section] = {}
        values = nested
    values[leaf] = value

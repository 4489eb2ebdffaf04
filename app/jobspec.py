"""What a job is: the spec a client posts to POST /jobs and a worker trains from.

Shared by the API (which validates it) and the worker (which re-reads it from the job's
row), so it holds no HTTP concerns: the response models stay in app/schemas.py.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.architectures import ARCHITECTURES
from models.data import TEXT_TASK, Task

AUTO = "auto"  # model.arch: trainserve picks the network (app/recipes.py)
if TYPE_CHECKING:
    Arch = str  # the names are the registry's keys, known only at run time
else:
    Arch = Literal[(AUTO, *ARCHITECTURES)]
MODEL_NAME = r"^[^\x00-\x1f\x7f@/]+$"  # printable, and no '@' or '/' (name@alias)

# What every epoch reports (the epoch_metrics table's columns, the metric series of each
# job, early stopping's choices), and what every training step reports.
EpochMetric = Literal["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
StepMetric = Literal["loss", "lr"]
# What the worker samples about itself about once a second while it trains (its process and
# any it started; the GPU's where it trains on one), at the step it had reached.
ResourceMetric = Literal["cpu_percent", "memory_mib", "gpu_percent", "gpu_memory_mib"]
EPOCH_METRICS: tuple[EpochMetric, ...] = get_args(EpochMetric)
STEP_METRICS: tuple[StepMetric, ...] = get_args(StepMetric)
RESOURCE_METRICS: tuple[ResourceMetric, ...] = get_args(ResourceMetric)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ARCH_HELP = "; ".join(
    [
        "auto (the default): trainserve picks the network for the task, the data and the "
        "budget, and says why in the job's spec_sources",
        *(f"{a.name}: {a.summary}" for a in ARCHITECTURES.values()),
    ]
)
RECIPE = "Default: the network's recipe, fitted to the data (docs/recipes.md)."


class ModelSpec(Strict):
    arch: Arch = Field(AUTO, description=ARCH_HELP)
    embedding_dim: int | None = Field(None, ge=8, le=1024, description="Text networks only.")
    width: int | None = Field(
        None, ge=8, le=512, description="fast_resnet only: channels of its first stage (32)."
    )

    @model_validator(mode="after")
    def _options_fit_arch(self) -> "ModelSpec":
        if self.arch == AUTO:
            if self.width is not None or self.embedding_dim is not None:
                raise ValueError("model.width and model.embedding_dim need a named model.arch")
            return self
        arch = ARCHITECTURES[self.arch]
        if self.width is not None and self.arch != "fast_resnet":
            raise ValueError(f"model.width is for fast_resnet, not {self.arch}")
        if self.embedding_dim is not None and (arch.task != TEXT_TASK or arch.pretrained):
            raise ValueError("model.embedding_dim is for text networks trained from scratch")
        return self


class TextSpec(Strict):
    max_tokens: int | None = Field(
        None, ge=8, le=4096, description=f"Tokens (and n-grams) kept per text. {RECIPE}"
    )
    min_freq: int | None = Field(
        None, ge=1, le=1000, description=f"Rarer tokens and n-grams become <unk>. {RECIPE}"
    )
    ngrams: int | None = Field(None, ge=1, le=3, description=f"Word n-grams added. {RECIPE}")


class Hyperparameters(Strict):
    """Every field left out is filled when the job is stored (app/recipes.py)."""

    epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description=f"{RECIPE} With only limits.max_run_seconds, as many as fit in it.",
    )
    batch_size: int | None = Field(None, ge=1, le=65536, description=RECIPE)
    optimizer: Literal["sgd", "adam", "adamw"] | None = Field(None, description=RECIPE)
    lr: float | None = Field(None, gt=0, le=10, description=RECIPE)
    momentum: float | None = Field(None, ge=0, lt=1, description=f"sgd only. {RECIPE}")
    nesterov: bool | None = Field(None, description=f"sgd only: Nesterov momentum. {RECIPE}")
    weight_decay: float | None = Field(None, ge=0, le=1, description=RECIPE)
    dropout: float | None = Field(None, ge=0, lt=1, description=RECIPE)
    lr_schedule: Literal["constant", "cosine", "onecycle", "step"] | None = Field(
        None,
        description="Stepped after every optimizer step. cosine: decay lr to zero over the run; "
        "onecycle: rise from lr/25 to lr, then anneal to about zero; step: multiply lr by "
        f"lr_gamma every lr_step_epochs. {RECIPE}",
    )
    warmup_epochs: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="Linear warm-up from lr/100 over this many epochs (fractions allowed). "
        "For onecycle, the rising phase (default 30 % of the run). " + RECIPE,
    )
    lr_step_epochs: int = Field(30, ge=1, le=1000, description="step schedule only.")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="step schedule only.")
    label_smoothing: float | None = Field(None, ge=0, lt=1, description=RECIPE)
    grad_clip_norm: float | None = Field(
        None,
        gt=0,
        description=f"Clip the gradients' global L2 norm to this before each step. {RECIPE}",
    )
    accumulate_batches: int = Field(
        1, ge=1, le=1024, description="Add up the gradients of this many batches per step."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Mixed precision (autocast). auto: bf16 on a GPU that has it, else fp16; "
        "bf16 on a CPU with native bf16 (AMX/AVX512-BF16) for convolutional image networks; "
        "fp32 otherwise.",
    )
    channels_last: bool | None = Field(
        None, description="Default: on for convolutional image networks (resnet18, fast_resnet)."
    )
    compile: bool = Field(False, description="torch.compile the network (slow first epoch).")
    deterministic: bool = Field(
        False, description="Deterministic kernels only: the same seed gives the same weights."
    )

    @model_validator(mode="after")
    def _warmup_shorter_than_run(self) -> "Hyperparameters":
        warmup, epochs = self.warmup_epochs, self.epochs
        if warmup is not None and epochs is not None and warmup >= epochs:
            raise ValueError("hyperparameters.warmup_epochs must be shorter than the run")
        return self


class AugmentationSpec(Strict):
    """Image jobs only; applied to training batches, never to validation or prediction."""

    crop_padding: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Random crop after zero padding by this many pixels (0: off). Default: "
        "1/8 of the smaller side for colour images (4 at 32x32), 1/14 for grey (2 at 28x28).",
    )
    horizontal_flip: bool | None = Field(
        None, description="Default: on for colour images, off for grey ones (digits)."
    )


class ValidationSpec(Strict):
    source: Literal["auto", "test_split", "holdout", "dataset"] = Field(
        "auto",
        description="auto: dataset_id when given, else the dataset's own test split when it "
        "has one, else a holdout of `fraction`.",
    )
    fraction: float = Field(0.1, gt=0, lt=1, description="Share of training data held out.")
    dataset_id: str | None = Field(
        None, max_length=64, description="Another uploaded dataset, same classes, to validate on."
    )

    @model_validator(mode="after")
    def _dataset_id_fits_source(self) -> "ValidationSpec":
        if self.source == "dataset" and not self.dataset_id:
            raise ValueError("validation.source 'dataset' needs validation.dataset_id")
        if self.dataset_id and self.source not in ("auto", "dataset"):
            raise ValueError(f"validation.dataset_id cannot be combined with {self.source!r}")
        return self

    def takes_holdout(self, test_examples: int) -> bool:
        """Whether validation is held out of the training examples: neither another dataset
        nor the dataset's own test split (of test_examples) validates."""
        if self.dataset_id:
            return False
        return self.source == "holdout" or (self.source == "auto" and not test_examples)

    def holdout_size(self, train_examples: int) -> int:
        return max(1, round(train_examples * self.fraction))

    def problem(self, train_per_class: Sequence[int], test_examples: int) -> str | None:
        """Why a dataset of these counts cannot be validated this way, or None. A holdout
        must leave every class an example to learn from. Known from a dataset's counts, so
        POST /jobs refuses what the worker would fail."""
        if self.source == "test_split" and not test_examples:
            return "validation.source is 'test_split' but the dataset has no test split"
        if not self.takes_holdout(test_examples):
            return None
        examples = sum(train_per_class)
        held_out = self.holdout_size(examples)
        if held_out <= examples - sum(1 for count in train_per_class if count):
            return None
        return (
            f"the dataset is too small to hold out validation examples: holding out {held_out} "
            f"of its {examples} training examples (validation.fraction {self.fraction:g}) "
            f"would leave one of its {len(train_per_class)} classes with none to learn from; "
            "upload more examples of some classes, a test split (train/ and test/ folders), "
            "or give a validation.dataset_id"
        )


class EarlyStopping(Strict):
    monitor: EpochMetric = "val_loss"
    patience: int = Field(3, ge=1, le=1000, description="Epochs without improvement to stop.")
    min_delta: float = Field(0.0, ge=0, description="Smaller changes are not improvements.")


class Limits(Strict):
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Attempts allowed after infrastructure failures (a lost worker, a crash); "
        "a bad spec or bad data is never retried.",
    )
    max_run_seconds: float | None = Field(
        None,
        gt=0,
        le=30 * 24 * 3600,
        description="Training time over all attempts. When reached, the job ends with its best "
        "epoch so far (end_reason 'time_limit').",
    )


class Resources(Strict):
    """What the job needs to run, and so the Celery queue it goes to. Several ranks train as
    one DistributedDataParallel group (workers/group.py); hyperparameters.batch_size is
    then the global batch, split evenly."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="What the job runs on, and so the Celery queue it goes to (cpu: "
        "trainserve, cuda: trainserve.cuda); auto: cuda when a GPU worker was seen lately, "
        "else cpu. A cuda job waits for a GPU worker; it never falls back to a CPU.",
    )
    gpus: int = Field(1, ge=1, le=64, description="cuda only: GPUs, one rank each.")
    processes: int = Field(1, ge=1, le=64, description="cpu only: processes, one rank each.")

    @model_validator(mode="after")
    def _ranks_fit_device(self) -> "Resources":
        if self.gpus > 1 and self.device != "cuda":
            raise ValueError("resources.gpus above 1 needs resources.device 'cuda'")
        if self.processes > 1 and self.device == "cuda":
            raise ValueError("resources.processes is for cpu jobs; a cuda job asks for gpus")
        return self

    @property
    def ranks(self) -> int:
        """How many processes train the job together."""
        return self.gpus if self.device == "cuda" else self.processes

    @property
    def rank_device(self) -> Literal["cpu", "cuda"]:
        """Where each rank of a job of several trains: a GPU each, or the CPU."""
        return "cuda" if self.device == "cuda" else "cpu"


def needed_device(spec: "JobSpec") -> str:
    """cpu, cuda or auto: what the spec asks for, in resources or (before it) in device."""
    if spec.resources.device != AUTO:
        return spec.resources.device
    return AUTO if spec.device == AUTO else spec.device.partition(":")[0]


class JobSpec(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                # The network picked, and everything else filled from its recipe.
                {"task": "image_classification", "dataset_id": "3f1c…"},
                {
                    "task": "text_sentiment",
                    "dataset_id": "9a0e…",
                    "model": {"arch": "text_cnn"},
                    "hyperparameters": {"epochs": 10},
                },
                # As many epochs as fit in ten minutes.
                {
                    "task": "image_classification",
                    "dataset_id": "3f1c…",
                    "limits": {"max_run_seconds": 600},
                },
            ]
        },
    )

    task: Task
    dataset_id: str = Field(min_length=1, max_length=64)
    name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=MODEL_NAME,
        description="Model name (default: the task); no '@' or '/'.",
    )
    model: ModelSpec = ModelSpec()
    hyperparameters: Hyperparameters = Hyperparameters()
    text: TextSpec = TextSpec()
    augmentation: AugmentationSpec = AugmentationSpec()
    validation: ValidationSpec = ValidationSpec()
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop when the monitored metric stops improving."
    )
    limits: Limits = Limits()
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="The torch device inside the worker (cuda:1: that GPU of the worker's); "
        "resources.device is what routes the job.",
    )
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _arch_fits_task(self) -> "JobSpec":
        if self.model.arch == AUTO:
            return self
        arch_task = ARCHITECTURES[self.model.arch].task
        if arch_task != self.task:
            raise ValueError(f"model.arch {self.model.arch!r} is for {arch_task}, not {self.task}")
        return self

    @model_validator(mode="after")
    def _ranks_fit_the_rest(self) -> "JobSpec":
        ranks = self.resources.ranks
        if ranks == 1:
            return self
        kind = self.resources.rank_device
        if self.device not in ("auto", kind):  # cuda:N pins one GPU: the ranks take one each
            raise ValueError(f"device {self.device!r} does not fit {ranks} ranks on {kind}")
        hyper = self.hyperparameters
        if hyper.epochs is None and self.limits.max_run_seconds is not None:
            # The ranks would have to agree on a count sized on one of them's timing.
            raise ValueError(
                "a job of several ranks needs hyperparameters.epochs; sizing epochs to "
                "limits.max_run_seconds alone is for one process"
            )
        if hyper.batch_size is not None and hyper.batch_size % ranks:
            raise ValueError(
                f"hyperparameters.batch_size {hyper.batch_size} is the global batch: it must "
                f"split evenly over the job's {ranks} ranks"
            )
        return self

"""Turn a job spec and its dataset into a network, optimizer, schedule and batches."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    SequentialLR,
    StepLR,
)

from app.jobspec import Hyperparameters, JobSpec
from app.recipes import facts_of, filled, resolve
from models.architectures import ARCHITECTURES, Architecture, build_network
from models.augment import ImageAugmentation
from models.data import DatasetError, ImageData, ImagePreprocessing, LabelledData, TextData
from models.pretrained import SentenceEncoderClassifier, WordPieceTokenizer
from models.text import Vocabulary, pad_batch, shortest_input
from workers.training import Batches, EpochResult, StepOptions, evaluate, fit

STATS_SAMPLE = 10_000  # images used to compute the normalisation
ONECYCLE_RISE = 0.3  # share of a one-cycle run spent rising, unless warmup_epochs says
WARMUP_START = 0.01  # warm-up starts at this fraction of lr
FEATURE_BATCH = 256  # texts per forward pass when caching a frozen encoder's features


@dataclass
class TrainingRun:
    spec: JobSpec  # resolved; its epochs are None until a time budget's are sized (plan)
    network: nn.Module  # what is checkpointed and served
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    train: Batches
    validation: Batches
    device: torch.device
    # What a checkpoint needs besides weights: task, arch, model_args, classes, preprocessing.
    description: dict = field(default_factory=dict)
    options: StepOptions = field(default_factory=StepOptions)
    # What the loop calls, when not the network itself: the compiled network, or the head
    # of a frozen encoder whose features were computed once.
    trained: nn.Module | None = None
    # What validates, when not `module`: the module a DistributedDataParallel wrapper holds.
    evaluated: nn.Module | None = None

    @property
    def module(self) -> nn.Module:
        """What a training step calls: `trained` where there is one, else the network."""
        return self.trained if self.trained is not None else self.network

    @property
    def epochs(self) -> int:
        return filled(self.spec.hyperparameters.epochs)

    def plan(self, epochs: int, epochs_done: int = 0) -> None:
        """A time budget's epochs, once sized: the schedule spans them. Sized again after
        `epochs_done` epochs, the new schedule goes on from the steps already taken."""
        hyper = self.spec.hyperparameters.model_copy(update={"epochs": epochs})
        self.spec = self.spec.model_copy(update={"hyperparameters": hyper})
        steps_per_epoch = self.options.steps_per_epoch(len(self.train))
        self.scheduler = make_scheduler(self.optimizer, hyper, steps_per_epoch)
        if self.scheduler is not None:
            for _ in range(epochs_done * steps_per_epoch):
                self.scheduler.step()

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 only; its state_dict belongs in a resumable checkpoint."""
        return self.options.scaler

    def fit(
        self,
        epochs: int,
        on_epoch_end: Callable[[EpochResult], bool | None],
        *,
        first_epoch: int = 1,
        on_step: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        fit(
            self.module,
            self.optimizer,
            self.train,
            self.validation,
            epochs=epochs,
            device=self.device,
            on_epoch_end=on_epoch_end,
            scheduler=self.scheduler,
            first_epoch=first_epoch,
            on_step=on_step,
            options=self.options,
            evaluated=self.evaluated,
        )

    def validate_partway(self) -> tuple[float, float]:
        """Validation loss and accuracy between two training steps; then back to training
        (evaluation leaves the network in eval mode, and the epoch goes on)."""
        result = evaluate(self.evaluated or self.module, self.validation, self.device, self.options)
        self.module.train()
        return result

    @property
    def _shuffle_generator(self) -> torch.Generator:
        """What orders the training batches; a resumed run restores it to shuffle the same."""
        if self.train.generator is None:
            raise RuntimeError("the training batches shuffle with a generator of their own")
        return self.train.generator

    def resume_state(self) -> dict:
        """What last.pt holds besides the weights, so that a resumed run continues exactly."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "shuffle_rng": self._shuffle_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def restore(self, checkpoint: dict) -> None:
        """Back to the end of the checkpoint's epoch: weights, optimizer, schedule, RNGs."""
        self.network.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self._shuffle_generator.set_state(checkpoint["shuffle_rng"])
        torch.set_rng_state(checkpoint["torch_rng"])


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DatasetError(f"device {requested!r} was asked for but this worker has no CUDA GPU")
    return torch.device(requested)


def split_indices(
    data: LabelledData, spec: JobSpec, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation example indices, as the spec's validation source says."""
    test = data.is_test.nonzero().flatten()
    train = (~data.is_test).nonzero().flatten()
    per_class = torch.bincount(data.labels[train], minlength=len(data.classes)).tolist()
    if problem := spec.validation.problem(per_class, len(test)):
        raise DatasetError(problem)
    if not spec.validation.takes_holdout(len(test)):
        return train, test  # the test split, or the validation dataset merged in as one
    return holdout(train, data.labels, spec.validation.holdout_size(len(train)), generator)


def holdout(
    train: torch.Tensor, labels: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random holdout of size examples that leaves every class one to train on: the
    first size of a shuffle, passing over each class's last example in it (so a large
    dataset gets exactly the first size). Returns (kept, held out)."""
    shuffled = train[torch.randperm(len(train), generator=generator)]
    classes = labels[shuffled]
    positions = torch.arange(len(shuffled))
    last = torch.zeros(int(classes.max()) + 1, dtype=torch.int64)
    last = last.scatter_reduce(0, classes, positions, reduce="amax")
    spare = (positions != last[classes]).nonzero().flatten()
    held = torch.zeros(len(shuffled), dtype=torch.bool)
    held[spare[:size]] = True
    return shuffled[~held], shuffled[held]


@dataclass
class Inputs:
    """How example indices become network input, and what serving must redo."""

    make: Callable[[torch.Tensor], torch.Tensor]  # validation (and serving) input
    model_args: dict
    preprocessing: dict
    make_train: Callable[[torch.Tensor], torch.Tensor] | None = None  # augmented, if different


def prepare_run(spec: JobSpec, data: LabelledData) -> TrainingRun:
    """The run a spec describes; a spec not yet resolved (a script's, a test's) is resolved
    here with the data's facts, as POST /jobs would."""
    spec = resolve(spec, facts_of(data.task, data.counts(), data.details(), spec.validation)).spec
    hyper = spec.hyperparameters
    use_deterministic_kernels(hyper.deterministic)
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    device = resolve_device(spec.device)
    arch = ARCHITECTURES[spec.model.arch]
    channels_last = arch.convolutional if hyper.channels_last is None else hyper.channels_last
    train_index, val_index = split_indices(data, spec, generator)
    if isinstance(data, ImageData):
        inputs = _image_inputs(data, train_index, spec, generator, device, channels_last)
    elif isinstance(data, TextData):
        inputs = _text_inputs(data, train_index, spec, arch)
    else:
        raise TypeError(f"no inputs for {type(data).__name__}")
    model_args = network_arguments(spec, arch, inputs.model_args, len(data.classes))
    network = _build(arch, model_args, device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    options = step_options(hyper, device, arch)
    trained = network
    if isinstance(network, SentenceEncoderClassifier) and not network.fine_tune:
        inputs = _cached_features(network, inputs, len(data.labels), device, options)
        trained = network.head
    if hyper.compile:
        # An nn.Module compiles to an OptimizedModule, itself a Module; torch's stubs say only
        # Callable.
        trained = cast(nn.Module, torch.compile(trained))
    labels = data.labels.to(device)
    make_train = inputs.make_train or inputs.make
    batch_size = filled(hyper.batch_size)
    train = Batches(
        lambda i: make_train(train_index[i]),
        labels[train_index.to(device)],
        batch_size,
        shuffle=True,
        generator=generator,
    )
    optimizer = make_optimizer(trained, hyper)
    steps_per_epoch = options.steps_per_epoch(len(train))
    return TrainingRun(
        spec=spec,
        network=network,
        optimizer=optimizer,
        # A time budget's epochs, and so the schedule, wait for plan().
        scheduler=make_scheduler(optimizer, hyper, steps_per_epoch) if hyper.epochs else None,
        train=train,
        validation=Batches(
            lambda i: inputs.make(val_index[i]),
            labels[val_index.to(device)],
            max(batch_size, 256),
            shuffle=False,
        ),
        device=device,
        description={
            "task": data.task,
            "arch": spec.model.arch,
            "model_args": model_args,
            "classes": data.classes,
            "preprocessing": inputs.preprocessing,
        },
        options=options,
        trained=None if trained is network else trained,
    )


def network_arguments(spec: JobSpec, arch: Architecture, input_args: dict, classes: int):
    """The plain arguments that rebuild the network: from the data, the spec and the arch."""
    args = input_args | {"num_classes": classes} | dict(arch.fixed_args)
    if spec.hyperparameters.dropout is not None:
        args["dropout"] = spec.hyperparameters.dropout
    if spec.model.width:
        args["base_width"] = spec.model.width
    if spec.model.embedding_dim:
        args["embedding_dim"] = spec.model.embedding_dim
    return args


def _build(arch: Architecture, model_args: dict, device: torch.device) -> nn.Module:
    try:
        return build_network(arch.name, model_args).to(device)
    except ValueError as exc:  # the data does not fit the network, e.g. images too small
        raise DatasetError(str(exc)) from exc


def use_deterministic_kernels(on: bool) -> None:
    """Set for every job: a worker process runs many jobs, each with its own wish."""
    if on:  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.benchmark = not on


def autocast_dtype(precision: str, device: torch.device, arch: Architecture):
    """The mixed-precision type for this device and network, or None for plain float32."""
    if precision != "auto":
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if arch.bf16_on_cpu and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where oneDNN runs bf16 convolutions and matmuls natively."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def step_options(hyper: Hyperparameters, device: torch.device, arch: Architecture):
    dtype = autocast_dtype(hyper.precision, device, arch)
    return StepOptions(
        label_smoothing=filled(hyper.label_smoothing),
        grad_clip_norm=hyper.grad_clip_norm,
        accumulate=hyper.accumulate_batches,
        autocast_dtype=dtype,
        scaler=torch.amp.GradScaler(device.type) if dtype == torch.float16 else None,
    )


def _image_inputs(
    data: ImageData, train_index, spec: JobSpec, generator, device, channels_last: bool
) -> Inputs:
    """Normalisation fitted on (a sample of) the training images; uint8 kept on the device."""
    sample = train_index[torch.randperm(len(train_index), generator=generator)[:STATS_SAMPLE]]
    image = ImagePreprocessing.fit(data.images[sample])
    augmentation = ImageAugmentation(
        crop_padding=filled(spec.augmentation.crop_padding),
        horizontal_flip=filled(spec.augmentation.horizontal_flip),
    )
    images = data.images.to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format

    def make(index: torch.Tensor) -> torch.Tensor:
        return image.normalize(images[index.to(device)]).contiguous(memory_format=memory)

    def make_train(index: torch.Tensor) -> torch.Tensor:
        batch = augmentation(images[index.to(device)], generator)
        return image.normalize(batch).contiguous(memory_format=memory)

    return Inputs(
        make=make,
        model_args={"channels": image.channels, "height": image.height, "width": image.width},
        preprocessing={"image": vars(image)},
        make_train=None if augmentation.is_identity else make_train,
    )


def _text_inputs(
    data: TextData, train_index: torch.Tensor, spec: JobSpec, arch: Architecture
) -> Inputs:
    """Token ids for every text, padded once into one tensor; batches cut to their longest.

    The vocabulary is built from the training texts only; a pretrained encoder brings its own.
    """
    if arch.pretrained:
        tokenizer = WordPieceTokenizer(max_length=min(filled(spec.text.max_tokens), 512))
        encoded = tokenizer.encode_all(data.texts)
        preprocessing, model_args = {"wordpiece": tokenizer.to_state()}, {}
    else:
        vocabulary = Vocabulary.build(
            [data.texts[i] for i in train_index.tolist()],
            ngrams=filled(spec.text.ngrams),
            min_freq=filled(spec.text.min_freq),
            max_length=filled(spec.text.max_tokens),
        )
        encoded = [vocabulary.encode(text) for text in data.texts]
        preprocessing = {"vocabulary": vocabulary.to_state()}
        model_args = {"vocab_size": len(vocabulary)}
    min_length = shortest_input(arch.network)
    tokens = pad_batch(encoded, min_length)
    lengths = torch.tensor([max(len(ids), min_length) for ids in encoded])
    return Inputs(
        make=lambda index: tokens[index, : int(lengths[index].max())],  # cut to longest text
        model_args=model_args,
        preprocessing=preprocessing,
    )


def _cached_features(network, inputs: Inputs, count: int, device, options) -> Inputs:
    """A frozen encoder's features for every example, computed once (texts sorted by length,
    so each forward pass pads little); the head then trains on them for many epochs."""
    order = (inputs.make(torch.arange(count)) != 0).sum(dim=1).argsort()
    features = torch.empty(count, network.head[-1].in_features, device=device)
    network.eval()
    with torch.inference_mode(), options.autocast(device):
        for chunk in order.split(FEATURE_BATCH):
            features[chunk.to(device)] = network.features(inputs.make(chunk).to(device)).float()
    return Inputs(
        make=lambda index: features[index.to(device)],
        model_args=inputs.model_args,
        preprocessing=inputs.preprocessing,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, hyper: Hyperparameters, steps_per_epoch: int
) -> LRScheduler | None:
    """Stepped after every optimizer step, so the schedule does not depend on the epoch count.

    Every schedule is one LRScheduler, whose state_dict resumes it where it stopped.
    """
    epochs = filled(hyper.epochs)
    total = steps_per_epoch * epochs
    if hyper.lr_schedule == "onecycle":
        rise = hyper.warmup_epochs / epochs if hyper.warmup_epochs else ONECYCLE_RISE
        return OneCycleLR(optimizer, max_lr=filled(hyper.lr), total_steps=total, pct_start=rise)
    warmup = round((hyper.warmup_epochs or 0) * steps_per_epoch)
    main: LRScheduler | None
    if hyper.lr_schedule == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=total - warmup)
    elif hyper.lr_schedule == "step":
        step_size = hyper.lr_step_epochs * steps_per_epoch
        main = StepLR(optimizer, step_size=step_size, gamma=hyper.lr_gamma)
    else:
        main = None  # constant
    if not warmup:
        return main
    ramp = LinearLR(optimizer, start_factor=WARMUP_START, total_iters=warmup)  # then stays at lr
    return ramp if main is None else SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def make_optimizer(trained: nn.Module, hyper: Hyperparameters) -> torch.optim.Optimizer:
    params = [p for p in trained.parameters() if p.requires_grad]
    lr, decay = filled(hyper.lr), filled(hyper.weight_decay)
    if hyper.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=filled(hyper.momentum),
            nesterov=filled(hyper.nesterov),
            weight_decay=decay,
        )
    if hyper.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=decay)

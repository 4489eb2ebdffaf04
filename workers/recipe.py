"""Turn a job spec and its dataset into a network, optimizer and batches."""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from app.schemas import Hyperparameters, JobCreate
from models.data import DatasetError, ImageData, ImagePreprocessing, LabelledData, TextData
from models.registry import ARCHITECTURES, build_network
from models.text import Vocabulary, pad_batch
from workers.training import Batches, EpochResult, fit

STATS_SAMPLE = 10_000  # images used to compute the normalisation


@dataclass
class TrainingRun:
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    train: Batches
    validation: Batches
    device: torch.device
    # What a checkpoint needs besides weights: task, arch, model_args, classes, preprocessing.
    description: dict = field(default_factory=dict)

    def fit(
        self,
        epochs: int,
        on_epoch_end: Callable[[EpochResult], bool | None],
        *,
        first_epoch: int = 1,
        on_step: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        fit(
            self.network,
            self.optimizer,
            self.train,
            self.validation,
            epochs=epochs,
            device=self.device,
            on_epoch_end=on_epoch_end,
            scheduler=self.scheduler,
            first_epoch=first_epoch,
            on_step=on_step,
        )

    def resume_state(self) -> dict:
        """What last.pt holds besides the weights, so that a resumed run continues exactly."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "shuffle_rng": self.train.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def restore(self, checkpoint: dict) -> None:
        """Back to the end of the checkpoint's epoch: weights, optimizer, schedule, RNGs."""
        self.network.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.train.generator.set_state(checkpoint["shuffle_rng"])
        torch.set_rng_state(checkpoint["torch_rng"])


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DatasetError(f"device {requested!r} was asked for but this worker has no CUDA GPU")
    return torch.device(requested)


def split_indices(
    data: LabelledData, spec: JobCreate, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation example indices, as the spec's validation source says."""
    test = data.is_test.nonzero().flatten()
    train = (~data.is_test).nonzero().flatten()
    source = spec.validation.source
    if source == "dataset" or spec.validation.dataset_id:
        source = "test_split"  # the validation dataset was merged in as the test split
    if source == "test_split" and not len(test):
        raise DatasetError("validation.source is 'test_split' but the dataset has no test split")
    if source == "test_split" or (source == "auto" and len(test)):
        return train, test
    shuffled = train[torch.randperm(len(train), generator=generator)]
    held_out = max(1, round(len(train) * spec.validation.fraction))
    if held_out >= len(train):
        raise DatasetError("validation.fraction leaves no training examples")
    return shuffled[held_out:], shuffled[:held_out]


@dataclass
class Inputs:
    """How a batch of example indices becomes network input, and what serving must redo."""

    make: Callable[[torch.Tensor], torch.Tensor]
    model_args: dict
    preprocessing: dict


def prepare_run(spec: JobCreate, data: LabelledData) -> TrainingRun:
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    device = resolve_device(spec.device)
    train_index, val_index = split_indices(data, spec, generator)
    if isinstance(data, ImageData):
        inputs = _image_inputs(data, train_index, generator, device)
    else:
        inputs = _text_inputs(data, train_index, spec)
    model_args = inputs.model_args | {"num_classes": len(data.classes)}
    hyper = spec.hyperparameters
    if hyper.dropout is not None:
        model_args["dropout"] = hyper.dropout
    try:
        network = build_network(spec.model.arch, model_args).to(device)
    except ValueError as exc:  # the data does not fit the network, e.g. images too small
        raise DatasetError(str(exc)) from exc
    labels = data.labels.to(device)
    train = Batches(
        lambda i: inputs.make(train_index[i]),
        labels[train_index.to(device)],
        hyper.batch_size,
        shuffle=True,
        generator=generator,
    )
    optimizer = make_optimizer(network, hyper)
    return TrainingRun(
        network=network,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, hyper, total_steps=len(train) * hyper.epochs),
        train=train,
        validation=Batches(
            lambda i: inputs.make(val_index[i]),
            labels[val_index.to(device)],
            max(hyper.batch_size, 256),
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
    )


def _image_inputs(data: ImageData, train_index, generator, device) -> Inputs:
    """Normalisation fitted on (a sample of) the training images; uint8 kept on the device."""
    sample = train_index[torch.randperm(len(train_index), generator=generator)[:STATS_SAMPLE]]
    image = ImagePreprocessing.fit(data.images[sample])
    images = data.images.to(device)
    return Inputs(
        make=lambda index: image.normalize(images[index.to(device)]),
        model_args={"channels": image.channels, "height": image.height, "width": image.width},
        preprocessing={"image": vars(image)},
    )


def _text_inputs(data: TextData, train_index: torch.Tensor, spec: JobCreate) -> Inputs:
    """A vocabulary from the training texts only; every text padded once into one tensor."""
    arch = ARCHITECTURES[spec.model.arch]
    vocabulary = Vocabulary.build(
        [data.texts[i] for i in train_index.tolist()],
        ngrams=spec.text.ngrams or arch.text_ngrams,
        min_freq=spec.text.min_freq,
        max_length=spec.text.max_tokens,
    )
    encoded = [vocabulary.encode(text) for text in data.texts]
    min_length = arch.network.min_length
    tokens = pad_batch(encoded, min_length)
    lengths = torch.tensor([max(len(ids), min_length) for ids in encoded])
    model_args = {"vocab_size": len(vocabulary)}
    if spec.model.embedding_dim:
        model_args["embedding_dim"] = spec.model.embedding_dim
    return Inputs(
        make=lambda index: tokens[index, : int(lengths[index].max())],  # cut to longest text
        model_args=model_args,
        preprocessing={"vocabulary": vocabulary.to_state()},
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, hyper: Hyperparameters, total_steps: int
) -> LRScheduler | None:
    """Stepped after every batch, so the schedule does not depend on the epoch count."""
    if hyper.lr_schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def make_optimizer(network: nn.Module, hyper: Hyperparameters) -> torch.optim.Optimizer:
    params, lr, decay = network.parameters(), hyper.lr, hyper.weight_decay
    if hyper.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=hyper.momentum, weight_decay=decay)
    if hyper.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=decay)

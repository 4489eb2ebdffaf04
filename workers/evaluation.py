"""Judging a model: its served epoch on the job's validation data, and a version on new data.

Both make the report of models.evaluation; an evaluation on new data adds the most
confidently wrong examples and the throughput the version had on this worker.
"""

import logging
import time
from dataclasses import replace

import torch
from sqlalchemy.orm import Session

from app.config import get_settings
from app.store.artefacts import get_store, load
from app.store.datasets import get_dataset
from app.store.db import get_session_factory
from app.store.evaluations import claim_evaluation, end_evaluation
from app.store.tables import Evaluation, ModelVersion
from app.store.versions import ModelFileCorrupt, checkpoint_of
from models.data import DatasetError, ImageData, LabelledData, TextData, data_from_state
from models.evaluation import classification_report, most_confidently_wrong
from models.files import load_plain
from models.predictor import Predictor
from workers.recipe import TrainingRun

log = logging.getLogger("trainserve.worker")

BATCH = 256  # examples per forward when evaluating


def served_epoch_report(run: TrainingRun, best: dict) -> dict:
    """The report of the best epoch's checkpoint (what is served) on the run's validation
    batches. The run's network is left holding its weights: training is over."""
    run.network.load_state_dict(best["state_dict"])
    module = run.module.eval()
    probabilities, labels = [], []
    with torch.inference_mode(), run.options.autocast(run.device):
        for inputs, batch_labels in run.validation:
            logits = module(inputs.to(run.device)).float()
            probabilities.append(logits.softmax(dim=1).cpu())
            labels.append(batch_labels.cpu())
    return classification_report(
        torch.cat(probabilities), torch.cat(labels), run.description["classes"]
    )


def run_evaluation(evaluation_id: str) -> None:
    """Run a queued evaluation to its end; one already taken is left to its worker."""
    with get_session_factory()() as session:
        evaluation = claim_evaluation(session, evaluation_id)
        if evaluation is None:
            log.info("evaluation %s: not queued, nothing to do", evaluation_id)
            return
        try:
            report = evaluation_report(session, evaluation)
        except (DatasetError, ModelFileCorrupt) as exc:
            log.info("evaluation %s: failed: %s", evaluation.id, exc)
            end_evaluation(session, evaluation, None, str(exc))
            return
        except Exception as exc:
            log.exception("evaluation %s: crashed", evaluation.id)
            first_line = str(exc).strip().partition("\n")[0]
            end_evaluation(
                session, evaluation, None, f"crashed: {type(exc).__name__}: {first_line}"
            )
            return
        end_evaluation(session, evaluation, report)
        log.info(
            "evaluation %s: version %s on dataset %s (%s): accuracy %.4f over %d examples",
            evaluation.id,
            evaluation.version_id,
            evaluation.dataset_id,
            evaluation.split,
            report["accuracy"],
            report["examples"],
        )


def evaluation_report(session: Session, evaluation: Evaluation) -> dict:
    version = session.get(ModelVersion, evaluation.version_id)
    dataset = get_dataset(session, evaluation.dataset_id)
    if version is None or dataset is None:
        raise DatasetError("the model version or the dataset was deleted before it ran")
    settings = get_settings()
    store = get_store(settings)
    data = data_from_state(load(store, dataset.path, dataset.file_sha256))
    predictor = Predictor(
        load_plain(checkpoint_of(version, store)), runtime=settings.serving_runtime
    )
    return report_on(predictor, data, evaluation.split)


def report_on(predictor: Predictor, data: LabelledData, split: str) -> dict:
    """The report of the predictor on the split's examples (test, train or all), whose
    classes are among the predictor's (the API checked), with the most confidently wrong
    examples (their positions in the dataset) and the throughput of the forward passes."""
    positions = split_positions(data, split)
    if isinstance(data, ImageData):
        data = fitted_images(data, predictor)
    to_model = torch.tensor([predictor.classes.index(name) for name in data.classes])
    labels = to_model[data.labels[positions]]
    started = time.perf_counter()
    probabilities = torch.cat(
        [
            predictor.probabilities(_examples(data, positions[start : start + BATCH]))
            for start in range(0, len(positions), BATCH)
        ]
    )
    seconds = time.perf_counter() - started
    report = classification_report(probabilities, labels, predictor.classes)
    report["most_confidently_wrong"] = most_confidently_wrong(
        probabilities, labels, predictor.classes, positions
    )
    report["throughput"] = {
        "examples_per_second": round(len(positions) / seconds, 1),
        "batch_size": BATCH,
        "runtime": predictor.runtime,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    return report


def fitted_images(data: ImageData, predictor: Predictor) -> ImageData:
    """The images as the network takes them: grey ones as colour for a colour network;
    DatasetError for another size."""
    _, channels, height, width = data.images.shape
    wanted = predictor.image
    if (height, width) != (wanted.height, wanted.width) or channels not in (1, wanted.channels):
        raise DatasetError(
            f"the dataset's images are {channels}x{height}x{width} (CxHxW) and the model "
            f"takes {wanted.channels}x{wanted.height}x{wanted.width}: upload the data again "
            "with a 'resize'"
        )
    return replace(data, images=data.images.expand(-1, wanted.channels, -1, -1))


def split_positions(data: LabelledData, split: str) -> torch.Tensor:
    if split == "all":
        return torch.arange(len(data.labels))
    return (data.is_test == (split == "test")).nonzero().flatten()


def _examples(data: LabelledData, positions: torch.Tensor) -> list:
    if isinstance(data, ImageData):
        return list(data.images[positions])
    if isinstance(data, TextData):
        return [data.texts[i] for i in positions.tolist()]
    raise TypeError(f"no examples of {type(data).__name__}")

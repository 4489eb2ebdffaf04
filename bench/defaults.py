"""What a new user gets: minimal specs through the real service, held-out accuracy checked
through POST /predict.

    make run            # in another terminal (or any trainserve URL)
    .venv/bin/python bench/defaults.py [--url http://127.0.0.1:8000] [--only mr,cifar10,…]

Every job is the smallest spec the API takes: `task`, `dataset_id`, the network and its
epochs (or `model.arch: auto` and a ten-minute `limits.max_run_seconds`), plus the data
set's held-out part as `validation.dataset_id` where the data comes as two files. Nothing
else: every other value is the service's default (app/recipes.py). Right after a job
succeeds, the held-out examples go through `POST /predict` with no `model` field, which
must answer from the new job's model with the job's own accuracy.

- mr: rt-polarity, a fixed 10 % held out (seed 0), uploaded as two CSV files;
  bag_of_embeddings, text_cnn and text_gru, each against its recipe's figure
  (docs/recipes.md) less 1.5 points, then `auto`.
- cifar10: the train zip, validated on the test zip; fast_resnet for 8 epochs (goal
  83 %), then `auto`.
- mnist: the four IDX files (t10k is the test split); tutorial_cnn for 3 epochs (goal
  98.5 %), then `auto`.
`auto`'s goal is the best minimal row of its data set less one point. It prints a row per
job, with the training seconds and the load average, as bench/accuracy.py does.
"""

import argparse
import csv
import io
import os
import random
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from client import CIFAR10, MNIST, SHARED_DATA, Service
from PIL import Image

from models.data import NamedFile, read_idx_array

AUTO_BUDGET = {"max_run_seconds": 600}
PREDICT_BATCH = 1024  # the most examples one POST /predict takes
MR_HELD_OUT = 0.1
# The recipes' figures on this script's own MR split, in-process with one thread
# (bench/recipe_accuracy.py; docs/recipes.md).
RECIPE_ACCURACY = {"bag_of_embeddings": 0.7664, "text_cnn": 0.7458, "text_gru": 0.7542}


@dataclass
class HeldOut:
    """The examples the job validates on, for /predict: texts or encoded images."""

    examples: list
    labels: list[str]
    kind: str  # "texts" or "images"


@dataclass
class Row:
    data: str
    spec: dict  # less task and dataset ids
    goal: Callable[[dict[str, float]], float]  # from the best minimal row of this data
    epochs_note: str = ""


def mr_split() -> dict[str, Path]:
    """rt-polarity split once, 90/10 with seed 0, as two CSV files: train and held-out."""
    with open(SHARED_DATA / "rt-polarity" / "rt-polarity.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    random.Random(0).shuffle(rows)
    cut = round(len(rows) * MR_HELD_OUT)
    folder = Path(tempfile.mkdtemp())
    files = {}
    for part, chosen in (("train", rows[cut:]), ("held-out", rows[:cut])):
        files[part] = folder / f"mr-{part}.csv"
        with open(files[part], "w", newline="") as file:
            writer = csv.DictWriter(file, ["text", "label"])
            writer.writeheader()
            writer.writerows(chosen)
    return files


def mr_upload(service: Service) -> tuple[dict, HeldOut]:
    """The split of mr_split, as two CSV uploads."""
    files = mr_split()
    ids = {part: service.upload(path, name=f"mr-{part}")["id"] for part, path in files.items()}
    with open(files["held-out"], newline="") as file:
        held_out = list(csv.DictReader(file))
    ids_spec = {"dataset_id": ids["train"], "validation": {"dataset_id": ids["held-out"]}}
    return ids_spec, HeldOut([r["text"] for r in held_out], [r["label"] for r in held_out], "texts")


def cifar_upload(service: Service) -> tuple[dict, HeldOut]:
    train, test = service.upload_cifar10()
    images, labels = [], []
    with zipfile.ZipFile(CIFAR10 / "cifar10-test.zip") as archive:
        for name in archive.namelist():
            if not name.endswith("/"):
                images.append(archive.read(name))
                labels.append(name.split("/")[0])
    return {"dataset_id": train["id"], "validation": {"dataset_id": test["id"]}}, HeldOut(
        images, labels, "images"
    )


def mnist_upload(service: Service) -> tuple[dict, HeldOut]:
    dataset = service.upload_mnist()["id"]
    arrays = []
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with open(MNIST / name, "rb") as file:
            arrays.append(read_idx_array(NamedFile(name, file)))
    return {"dataset_id": dataset}, HeldOut(
        [_png(image) for image in arrays[0]], [str(label) for label in arrays[1]], "images"
    )


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def less(points: float) -> Callable[[dict[str, float]], float]:
    """A goal `points` below the best minimal row of the same data."""
    return lambda best: max(best.values()) - points / 100


def fixed(goal: float) -> Callable[[dict[str, float]], float]:
    return lambda _best: goal


DATA = {
    "mr": ("text_sentiment", mr_upload),
    "cifar10": ("image_classification", cifar_upload),
    "mnist": ("image_classification", mnist_upload),
}
ROWS = [
    *(
        Row(
            "mr",
            {"model": {"arch": arch}, "hyperparameters": {"epochs": epochs}},
            fixed(RECIPE_ACCURACY[arch] - 0.015),
        )
        for arch, epochs in (("bag_of_embeddings", 10), ("text_cnn", 10), ("text_gru", 8))
    ),
    Row("mr", {"model": {"arch": "auto"}, "limits": AUTO_BUDGET}, less(1)),
    Row(
        "cifar10",
        {"model": {"arch": "fast_resnet"}, "hyperparameters": {"epochs": 8}},
        fixed(0.83),
    ),
    Row("cifar10", {"model": {"arch": "auto"}, "limits": AUTO_BUDGET}, less(1)),
    Row(
        "mnist",
        {"model": {"arch": "tutorial_cnn"}, "hyperparameters": {"epochs": 3}},
        fixed(0.985),
    ),
    Row("mnist", {"model": {"arch": "auto"}, "limits": AUTO_BUDGET}, less(1)),
]


def predicted_accuracy(service: Service, held_out: HeldOut, job_id: str) -> tuple[float, int]:
    """Held-out accuracy through /predict with no model field, and how many answers came from
    another job's model (must be none)."""
    correct = others = 0
    for start in range(0, len(held_out.labels), PREDICT_BATCH):
        chunk = held_out.examples[start : start + PREDICT_BATCH]
        if held_out.kind == "texts":
            response = service.http.post("/predict", json={"texts": chunk, "top_k": 1})
        else:
            files = [("files", (f"{i}.img", data)) for i, data in enumerate(chunk)]
            response = service.http.post("/predict", files=files, data={"top_k": "1"})
        response.raise_for_status()
        answers = response.json()
        for answer, label in zip(answers, held_out.labels[start:], strict=False):
            correct += answer["label"] == label
            others += answer["job_id"] != job_id
    return correct / len(held_out.labels), others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--only", default=",".join(DATA), help=f"comma-separated: {', '.join(DATA)}"
    )
    args = parser.parse_args()
    service = Service(args.url)
    header = (
        f"{'data':8} {'network (spec)':32} {'epochs':>6} {'job acc':>8} {'/predict':>8} "
        f"{'others':>6} {'goal':>6} {'train s':>8} {'load avg at end':>16}  verdict"
    )
    print(header)
    print("-" * len(header), flush=True)
    for data in args.only.split(","):
        task, upload = DATA[data]
        ids, held_out = upload(service)
        best: dict[str, float] = {}
        for row in (row for row in ROWS if row.data == data):
            spec = {"task": task, **row.spec, **ids}
            started = time.perf_counter()
            job = service.train(spec, poll_s=2)
            accuracy, others = predicted_accuracy(service, held_out, job["id"])
            asked = row.spec["model"]["arch"]
            arch = job["arch"] if asked != "auto" else f"auto -> {job['arch']}"
            goal = row.goal(best)
            if asked != "auto":
                best[asked] = job["best_val_accuracy"]
            verdict = "ok" if job["best_val_accuracy"] >= goal and not others else "BELOW GOAL"
            if abs(accuracy - job["best_val_accuracy"]) > 0.002:
                verdict += ", /predict DIFFERS"
            load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
            train_s = sum(epoch["seconds"] for epoch in job["history"])
            print(
                f"{data:8} {arch:32} {job['epochs']:>6} {job['best_val_accuracy']:>8.4f} "
                f"{accuracy:>8.4f} {others:>6} {goal:>6.3f} {train_s:>8.0f} {load:>16}  "
                f"{verdict}  [job {job['id']}, {time.perf_counter() - started:.0f} s wall]",
                flush=True,
            )


if __name__ == "__main__":
    main()

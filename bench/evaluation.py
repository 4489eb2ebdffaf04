"""Issue 17's acceptance figures, through the HTTP API of a running service.

    make run            # in another terminal (or any trainserve URL)
    .venv/bin/python bench/evaluation.py [--url http://127.0.0.1:8000] [--only cifar10,mnist,mr]

- cifar10: tutorial_cnn trained briefly on a slice of the train zip, validated on the test
  zip; the job's report and an evaluation on the test zip (POST /models/{id}/evaluations):
  their confusion matrices' sums, and the per-class precision, recall and F1 against
  scikit-learn's on /predict's answers for the same 10,000 images.
- mnist: /explain over 50 test digits, from a trained model and from a model of random
  weights (a job whose lr is 1e-9): the share of positive attribution on ink pixels, and
  how alike the two models' maps are (rank correlation).
- mr: over 50 positive sentences, the fall of the positive probability when the
  top-attributed word is removed, and when a random word is.

It prints figures and asserts nothing (bench/ convention).
"""

import argparse
import base64
import csv
import gzip
import io
import os
import random
import time
import zipfile
from collections import defaultdict

import numpy as np
from client import SHARED_DATA, Service
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

CIFAR_TRAIN_PER_CLASS = 1000
EXPLAIN_BATCH = 4  # TRAINSERVE_EXPLAIN_MAX_INPUTS' default
SAMPLES = 50


def _wait_evaluation(service: Service, model_id: str, evaluation_id: str) -> dict:
    while True:
        evaluation = service.http.get(f"/models/{model_id}/evaluations/{evaluation_id}").json()
        if evaluation["status"] in ("succeeded", "failed"):
            return evaluation
        time.sleep(1)


def _cifar_train_slice() -> bytes:
    out, taken = io.BytesIO(), defaultdict(int)
    with (
        zipfile.ZipFile(out, "w") as target,
        zipfile.ZipFile(SHARED_DATA / "cifar10" / "cifar10-train.zip") as source,
    ):
        for info in source.infolist():
            label = info.filename.split("/")[0]
            if not info.is_dir() and taken[label] < CIFAR_TRAIN_PER_CLASS:
                taken[label] += 1
                target.writestr(info.filename, source.read(info))
    return out.getvalue()


def cifar10(service: Service) -> None:
    response = service.http.post(
        "/datasets", files={"file": ("cifar-slice.zip", _cifar_train_slice())}
    )
    response.raise_for_status()
    test_path = SHARED_DATA / "cifar10" / "cifar10-test.zip"
    test = service.upload(test_path, name="cifar10-test")
    job = service.train(
        {
            "task": "image_classification",
            "dataset_id": response.json()["id"],
            "name": "bench-eval-cifar10",
            "model": {"arch": "tutorial_cnn"},
            "validation": {"dataset_id": test["id"]},
            "hyperparameters": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.002},
        }
    )
    served = job["evaluation"]
    asked = service.http.post(
        f"/models/{job['model_id']}/evaluations", json={"dataset_id": test["id"]}
    )
    asked.raise_for_status()
    evaluation = _wait_evaluation(service, job["model_id"], asked.json()["id"])
    report = evaluation["report"]
    labels, predicted = _served_answers(service, job["model_id"], test_path)
    classes = report["confusion_matrix"]["classes"]
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    ours = np.array([[r["precision"], r["recall"], r["f1"]] for r in report["per_class"]])
    theirs = np.stack([precision, recall, f1], axis=1)
    print("cifar10 (tutorial_cnn, 2 epochs on 10,000 training images; the 10k test zip)")
    print(f"  job's report: confusion matrix sum {_sum(served)}, accuracy {served['accuracy']:.4f}")
    print(
        f"  evaluation {evaluation['status']}: confusion matrix sum {_sum(report)}, accuracy "
        f"{report['accuracy']:.4f}, top-{report['top_k']} {report['top_k_accuracy']:.4f}, "
        f"macro F1 {report['macro_f1']:.4f}, "
        f"ECE {report['calibration']['expected_calibration_error']:.4f}"
    )
    print(
        f"  largest |ours - scikit-learn| over per-class precision/recall/F1 on /predict's "
        f"answers: {np.abs(ours - theirs).max():.2e}"
    )
    print(f"  throughput on the worker: {report['throughput']}")


def _sum(report: dict) -> int:
    return sum(map(sum, report["confusion_matrix"]["counts"]))


def _served_answers(service: Service, model_id: str, path) -> tuple[list[str], list[str]]:
    """Each test image's label (its folder) and /predict's answer, 1,000 images a request."""
    labels, predicted = [], []
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        for start in range(0, len(infos), 1000):
            chunk = infos[start : start + 1000]
            files = [("files", (info.filename, archive.read(info))) for info in chunk]
            answer = service.http.post("/predict", files=files, data={"model": model_id})
            answer.raise_for_status()
            labels += [info.filename.split("/")[0] for info in chunk]
            predicted += [item["label"] for item in answer.json()]
    return labels, predicted


def _mnist_digits(count: int) -> np.ndarray:
    with gzip.open(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz") as file:
        raw = file.read()
    return np.frombuffer(raw, np.uint8, count * 784, 16).reshape(count, 28, 28)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _maps(service: Service, model_id: str, digits: np.ndarray) -> np.ndarray:
    maps = []
    for start in range(0, len(digits), EXPLAIN_BATCH):
        chunk = digits[start : start + EXPLAIN_BATCH]
        files = [("files", (f"{i}.png", _png(digit))) for i, digit in enumerate(chunk)]
        answer = service.http.post("/explain", files=files, data={"model": model_id})
        answer.raise_for_status()
        maps += [np.array(item["attribution"]) for item in answer.json()]
        base64.b64decode(answer.json()[0]["overlay_png"])  # the overlay decodes
    return np.stack(maps)


def _ink_share(maps: np.ndarray, digits: np.ndarray, threshold: int) -> float:
    positive = maps.clip(min=0)
    on_ink = (positive * (digits >= threshold)).reshape(len(maps), -1).sum(axis=1)
    return float(np.mean(on_ink / positive.reshape(len(maps), -1).sum(axis=1).clip(min=1e-12)))


def _rank_correlation(a: np.ndarray, b: np.ndarray, digits: np.ndarray) -> float:
    """Spearman's correlation of two maps over each digit's ink pixels (elsewhere both are
    0: the black baseline), the mean over digits."""

    def ranks(x: np.ndarray) -> np.ndarray:
        return x.argsort().argsort().astype(float)

    values = []
    for first, second, digit in zip(a, b, digits, strict=True):
        ink = digit > 0
        ra, rb = ranks(first[ink]), ranks(second[ink])
        values.append(np.corrcoef(ra, rb)[0, 1])
    return float(np.mean(values))


def mnist(service: Service) -> None:
    dataset = service.upload_mnist()
    spec = {
        "task": "image_classification",
        "dataset_id": dataset["id"],
        "model": {"arch": "tutorial_cnn"},
        "hyperparameters": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.002},
    }
    trained = service.train(spec | {"name": "bench-eval-mnist"})
    random_spec = spec | {"name": "bench-eval-mnist-random"}
    random_spec["hyperparameters"] = spec["hyperparameters"] | {"lr": 1e-9}
    untrained = service.train(random_spec)
    digits = _mnist_digits(SAMPLES)
    ours, theirs = (
        _maps(service, trained["model_id"], digits),
        _maps(service, untrained["model_id"], digits),
    )
    print(f"mnist explanations over {SAMPLES} test digits (integrated gradients, 32 steps)")
    print(f"  trained model: val_accuracy {trained['best_val_accuracy']:.4f}")
    print(f"  random-weights model (lr 1e-9): val_accuracy {untrained['best_val_accuracy']:.4f}")
    for threshold, what in ((1, "any ink (pixel > 0)"), (128, "stroke cores (pixel >= 128)")):
        print(
            f"  positive attribution on {what}: trained {_ink_share(ours, digits, threshold):.3f}, "
            f"random {_ink_share(theirs, digits, threshold):.3f}"
        )
    print(
        f"  rank correlation of trained and random maps over the ink pixels, mean over "
        f"digits: {_rank_correlation(ours, theirs, digits):.3f} (1 = the same ordering)"
    )


def _positive_probability(service: Service, model: str, texts: list[str]) -> list[float]:
    answer = service.http.post("/predict", json={"texts": texts, "model": model, "top_k": 2})
    answer.raise_for_status()
    return [
        next(p["probability"] for p in item["top_k"] if p["label"] == "positive")
        for item in answer.json()
    ]


def mr(service: Service) -> None:
    path = SHARED_DATA / "rt-polarity" / "rt-polarity.csv"
    dataset = service.upload(path, name="mr")
    job = service.train(
        {
            "task": "text_sentiment",
            "dataset_id": dataset["id"],
            "name": "bench-eval-mr",
            "model": {"arch": "bag_of_embeddings"},
            "validation": {"source": "holdout", "fraction": 0.1},
            "hyperparameters": {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.005},
        }
    )
    with open(path, newline="") as file:
        positives = [row["text"] for row in csv.DictReader(file) if row["label"] == "positive"]
    sentences = positives[-SAMPLES:]
    chooser = random.Random(0)
    without_top, without_random = [], []
    for start in range(0, SAMPLES, EXPLAIN_BATCH):
        texts = sentences[start : start + EXPLAIN_BATCH]
        answer = service.http.post("/explain", json={"texts": texts, "model": job["model_id"]})
        answer.raise_for_status()
        for explanation in answer.json():
            words = [t["token"] for t in explanation["tokens"]]
            top = max(range(len(words)), key=lambda i: explanation["tokens"][i]["score"])
            other = chooser.randrange(len(words))
            without_top.append(" ".join(words[:top] + words[top + 1 :]))
            without_random.append(" ".join(words[:other] + words[other + 1 :]))
    whole = _positive_probability(service, job["model_id"], sentences)
    top_fall = np.subtract(whole, _positive_probability(service, job["model_id"], without_top))
    random_fall = np.subtract(
        whole, _positive_probability(service, job["model_id"], without_random)
    )
    print(f"mr: bag_of_embeddings, 3 epochs, val_accuracy {job['best_val_accuracy']:.4f}")
    print(
        f"  over {SAMPLES} positive sentences, the positive probability falls by "
        f"{top_fall.mean():.4f} on average without the top-attributed word, "
        f"{random_fall.mean():.4f} without a random word"
    )


BENCHMARKS = {"cifar10": cifar10, "mnist": mnist, "mr": mr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("TRAINSERVE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    arguments = parser.parse_args()
    service = Service(arguments.url)
    for name in arguments.only.split(","):
        started = time.perf_counter()
        BENCHMARKS[name](service)
        print(f"  ({time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

"""Acceptance figures of the core issue, through the HTTP API of a running service.

    make run            # in another terminal (or any trainserve URL)
    .venv/bin/python bench/core_accuracy.py [--url http://127.0.0.1:8000]

MNIST: trained on the 60k train set, accuracy on t10k (the upload's test split).
CIFAR-10: tutorial_cnn on the full train zip, at most 10 epochs, validated on the test zip.
MR: a 10 % held-out split (seeded) of the 10,662 sentences.
"""

import argparse

from client import SHARED_DATA, Service

ADAM_COSINE = {"optimizer": "adam", "lr": 0.002, "lr_schedule": "cosine"}


def mnist(service: Service) -> tuple[dict, dict]:
    dataset = service.upload_mnist()
    spec = {
        "task": "image_classification",
        "dataset_id": dataset["id"],
        "model": {"arch": "tutorial_cnn"},
        "hyperparameters": {"epochs": 10, "batch_size": 64, **ADAM_COSINE},
    }
    return spec, {"goal": 0.985, "measured_on": "t10k test set"}


def cifar10(service: Service) -> tuple[dict, dict]:
    train, test = service.upload_cifar10()
    spec = {
        "task": "image_classification",
        "dataset_id": train["id"],
        "model": {"arch": "tutorial_cnn"},
        "validation": {"dataset_id": test["id"]},
        "hyperparameters": {"epochs": 10, "batch_size": 32, **ADAM_COSINE},
    }
    return spec, {"goal": 0.60, "measured_on": "test zip (10k)"}


def mr(service: Service) -> tuple[dict, dict]:
    dataset = service.upload(SHARED_DATA / "rt-polarity" / "rt-polarity.csv", name="mr")
    spec = {
        "task": "text_sentiment",
        "dataset_id": dataset["id"],
        "model": {"arch": "bag_of_embeddings"},
        "validation": {"source": "holdout", "fraction": 0.1},
        "hyperparameters": {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 0.005},
    }
    return spec, {"goal": 0.74, "measured_on": "10 % held out"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    service = Service(args.url)
    header = (
        f"{'data':10} {'network':18} {'epochs':>6} {'best acc':>9} {'at epoch':>8} "
        f"{'goal':>6} {'train s':>8} {'job s':>7}  measured on"
    )
    print(header)
    print("-" * len(header))
    for name, setup in (("MNIST", mnist), ("CIFAR-10", cifar10), ("MR", mr)):
        spec, target = setup(service)
        job = service.train(spec)
        train_s = sum(epoch["seconds"] for epoch in job["history"])
        verdict = "ok" if job["best_val_accuracy"] >= target["goal"] else "BELOW GOAL"
        print(
            f"{name:10} {spec['model']['arch']:18} {job['epochs']:>6} "
            f"{job['best_val_accuracy']:>9.4f} {job['best_epoch']:>8} {target['goal']:>6.3f} "
            f"{train_s:>8.1f} {job['duration_seconds']:>7.1f}  {target['measured_on']} "
            f"{verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()

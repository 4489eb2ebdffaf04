"""How fast a cancel stops a running job, and how soon the worker takes the next one.

    make run            # in another terminal (or any trainserve URL)
    .venv/bin/python bench/cancel_latency.py [--url …] [--runs 5]

Each run queues a long MNIST job and a short one behind it, waits until the long
one is training (its first per-step losses are in), cancels it, and times:
  cancel → cancelled   the worker confirmed (status cancelled); the goal is ≤ 2 s
  cancel → next runs   the queued job started on the freed worker
The API is polled every 10 ms, so the figures are accurate to about that.
"""

import argparse
import os
import statistics
import time

from client import SHARED_DATA, Service

POLL_S = 0.01


def spec(dataset_id: str, epochs: int) -> dict:
    return {
        "task": "image_classification",
        "dataset_id": dataset_id,
        "model": {"arch": "tutorial_cnn"},
        "hyperparameters": {"epochs": epochs, "batch_size": 64, "lr": 0.05},
    }


def wait(service: Service, job_id: str, condition) -> float:
    while not condition(service.http.get(f"/jobs/{job_id}").json()):
        time.sleep(POLL_S)
    return time.monotonic()


def one_run(service: Service, dataset_id: str) -> tuple[float, float]:
    long_job = service.http.post("/jobs", json=spec(dataset_id, 100)).json()["id"]
    next_job = service.http.post("/jobs", json=spec(dataset_id, 1)).json()["id"]
    while not service.http.get(f"/jobs/{long_job}/metrics", params={"name": "loss"}).json()[
        "points"
    ]:
        time.sleep(POLL_S)
    asked = time.monotonic()
    service.http.post(f"/jobs/{long_job}/cancel").raise_for_status()
    cancelled = wait(service, long_job, lambda job: job["status"] == "cancelled")
    started = wait(service, next_job, lambda job: job["status"] != "queued")
    service.http.post(f"/jobs/{next_job}/cancel")
    wait(service, next_job, lambda job: job["status"] in ("cancelled", "succeeded"))
    return cancelled - asked, started - asked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    service = Service(args.url)
    mnist = SHARED_DATA / "mnist"
    dataset = service.upload(
        mnist / "train-images-idx3-ubyte.gz", mnist / "train-labels-idx1-ubyte.gz", name="mnist"
    )
    runs = [one_run(service, dataset["id"]) for _ in range(args.runs)]
    print(f"{args.runs} runs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':24}{'median s':>10}{'max s':>10}")
    for name, values in zip(
        ("cancel → cancelled", "cancel → next runs"), zip(*runs, strict=True), strict=True
    ):
        print(f"{name:24}{statistics.median(values):10.3f}{max(values):10.3f}")


if __name__ == "__main__":
    main()

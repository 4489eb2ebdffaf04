"""The GPU check's second step: CIFAR-10 with the fastest recipe through the service.

    bash bench/gpu_check.sh            # runs this after bench/gpu_check.py, with its figures
    .venv/bin/python bench/gpu_check_service.py [gpu_check.py's options] \\
        [--baseline-images-s N] [--baseline-time-s S] [--budget-s 210]

The API (Granian, as `make api`) and one worker on the GPU queue (`trainserve.cuda`, with
CUDA_VISIBLE_DEVICES=0; `trainserve` for --device cpu) run on the embedded defaults
(SQLite, the file-system broker, the local artefact folder) in a temporary folder.
CIFAR-10's two zips are uploaded over HTTP, a job is posted with bench/gpu_check.py's
recipe, `resources.device` and the test zip as its validation data, and followed to its
end. Printed: time to 94 % (the epochs' training seconds from the job's history, summed as
gpu_check.py sums them) and images/s (the median past epoch 1), each beside the in-process
figure as a ratio. --budget-s bounds the whole step: past it the job is cancelled, the
processes stopped and the step fails.
"""

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.broker import GPU_QUEUE, QUEUE
from app.store.tables import ENDED
from bench.client import stop_group
from bench.gpu_check import GOAL, Progress, add_recipe_arguments, cifar10_zip, recipe
from tests.conftest import PROJECT, bearer, migrate
from tests.utils.servers import GRANIAN, start_api

POLL_S = 1.0


class OverBudget(Exception):
    """The step ran past --budget-s (or was sent SIGTERM by the script's backstop)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser)
    parser.add_argument("--baseline-images-s", type=float, help="gpu_check.py's images/s")
    parser.add_argument("--baseline-time-s", type=float, help=f"gpu_check.py's time to {GOAL:.0%}")
    parser.add_argument("--budget-s", type=float, default=210, help="the most the step may take")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    signal.signal(signal.SIGTERM, _stopped)  # so that the service's processes are stopped
    with tempfile.TemporaryDirectory(prefix="gpu-check-service-") as name:
        folder = Path(name)
        try:
            with service(folder, args.device) as client:
                job, progress = train(client, args, deadline)
        except OverBudget as exc:
            sys.exit(f"service: over its budget of {args.budget_s:.0f} s ({exc})")
    report(job, progress, args)


def _stopped(*_) -> None:
    raise OverBudget("stopped by SIGTERM")


@contextmanager
def service(folder: Path, device: str):
    """The API and one worker on the embedded defaults in `folder`, until the block ends;
    yields a client of the API with its admin key."""
    admin_key = f"ts_{secrets.token_hex(24)}"
    env = _embedded_env(folder, admin_key)
    started = time.perf_counter()
    migrate(env["TRAINSERVE_DATABASE_URL"])  # as `make api` does first
    processes = [_worker(folder, env, device)]
    try:
        with open(folder / "api.log", "ab") as log:
            api, url = start_api(env, log, GRANIAN, lambda: _tail(folder / "api.log"))
        processes.append(api)
        with httpx.Client(base_url=url, headers=bearer(admin_key), timeout=600) as client:
            up_s = time.perf_counter() - started
            print(f"service: API and worker up in {up_s:.1f} s", flush=True)
            yield client
    except BaseException:
        print(f"--- worker log\n{_tail(folder / 'worker.log')}", file=sys.stderr)
        raise
    finally:
        for process in processes:
            stop_group(process)


def _embedded_env(folder: Path, admin_key: str) -> dict[str, str]:
    """The process's environment without its TRAINSERVE_ settings, then `make run`'s
    defaults with every file under `folder`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRAINSERVE_")}
    return env | {
        "PYTHONPATH": str(PROJECT),
        "TRAINSERVE_DATABASE_URL": f"sqlite:///{folder}/trainserve.db",
        "TRAINSERVE_BROKER_URL": "filesystem://",
        "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
        "TRAINSERVE_CACHE_DIR": str(folder / "cache"),
        "TRAINSERVE_ADMIN_KEY": admin_key,
    }


def _worker(folder: Path, env: dict[str, str], device: str) -> subprocess.Popen:
    """One Celery worker as docs/storage.md starts one per GPU: GPU 0 on the GPU queue
    (or the CPU queue for --device cpu)."""
    on_gpu = device.startswith("cuda")
    command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker"]
    command += ["--loglevel=INFO", "--concurrency=1", f"--queues={GPU_QUEUE if on_gpu else QUEUE}"]
    command += ["--hostname=gpu0@%h" if on_gpu else "--hostname=cpu@%h"]
    with open(folder / "worker.log", "ab") as log:
        return subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env | ({"CUDA_VISIBLE_DEVICES": "0"} if on_gpu else {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the stop reaches its pool
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.is_file() else ""


def train(client: httpx.Client, args: argparse.Namespace, deadline: float) -> tuple[dict, Progress]:
    """Upload the two zips, post the job, follow it to its end; the ended job, its epochs."""
    started = time.perf_counter()
    train_set, test_set = (_upload(client, split, args.limit) for split in ("train", "test"))
    images = _images(train_set) + _images(test_set)
    print(f"service: uploaded {images} images in {time.perf_counter() - started:.1f} s", flush=True)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    spec = {
        "task": "image_classification",
        "dataset_id": train_set["id"],
        "validation": {"dataset_id": test_set["id"]},
        "resources": {"device": kind},
        **recipe(args),
    }
    created = client.post("/jobs", json=spec)
    if created.status_code != 201:
        sys.exit(f"service: POST /jobs answered {created.status_code}: {created.text}")
    return follow(client, created.json()["id"], deadline)


def _upload(client: httpx.Client, split: str, limit: int | None) -> dict:
    """POST /datasets with the split's zip (as gpu_check.py reads it); the dataset."""
    name = f"cifar10-{split}.zip"
    answer = client.post("/datasets", files={"file": (name, cifar10_zip(split, limit))})
    if answer.status_code not in (200, 201):
        sys.exit(f"service: uploading {name} answered {answer.status_code}: {answer.text}")
    return answer.json()


def _images(dataset: dict) -> int:
    """Its examples: `counts` holds them by split and class."""
    return sum(sum(by_class.values()) for by_class in dataset["counts"].values())


def follow(client: httpx.Client, job_id: str, deadline: float) -> tuple[dict, Progress]:
    """Poll the job, printing each epoch as its history gains it, until it ends."""
    progress = Progress()
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        for epoch in job["history"][len(progress.speeds) :]:
            fields = ("epoch", "val_accuracy", "seconds", "samples_per_second")
            print(progress.add(*(epoch[field] for field in fields)), flush=True)
        if job["status"] in ENDED:
            return job, progress
        if time.monotonic() > deadline:
            client.post(f"/jobs/{job_id}/cancel")
            raise OverBudget(f"job {job_id} {job['status']} at epoch {job['epoch']}")
        time.sleep(POLL_S)


def report(job: dict, progress: Progress, args: argparse.Namespace) -> None:
    """The job's figures, beside the in-process ones; exits 1 if the job did not succeed."""
    if job["status"] != "succeeded":
        sys.exit(f"service: job {job['id']} {job['status']}: {job['error']}")
    print(
        f"service: job {job['id']} on {job['device']} ({job['worker']}), "
        f"{progress.trained_s:.1f} s of training, {job['duration_seconds']:.0f} s from claim "
        f"to end; load avg {os.getloadavg()[0]:.1f}"
    )
    reached_note = _beside(progress.reached_s, args.baseline_time_s, "{:.1f} s")
    print(f"service: time to {GOAL:.0%}: {progress.reached}{reached_note}")
    steady = progress.steady_speed
    speed_note = _beside(steady, args.baseline_images_s, "{:.0f}")
    print(f"service: images/s: {steady:.0f}{speed_note} (median past epoch 1)")


def _beside(figure: float | None, baseline: float | None, shown: str) -> str:
    """The ratio of the service's figure to the in-process one (`shown` formats it), if
    there are both."""
    if figure is None or not baseline:
        return ""
    return f", {figure / baseline:.2f} x the in-process {shown.format(baseline)}"


if __name__ == "__main__":
    main()

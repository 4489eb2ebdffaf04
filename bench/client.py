"""A small HTTP client for the bench scripts: upload, train, wait. Talks to a running service."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10"
MNIST = SHARED_DATA / "mnist"


def stop_group(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to the process's group (a server's or worker's children too), SIGKILL after
    `timeout_s`. The process was started with start_new_session=True."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Service:
    """A client of a running service; the API key comes from TRAINSERVE_API_KEY."""

    def __init__(self, url: str, key: str | None = None):
        key = key or os.environ.get("TRAINSERVE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=600)

    def upload(self, *paths: Path, **form) -> dict:
        files = [("file", (path.name, path.read_bytes())) for path in paths]
        response = self.http.post("/datasets", files=files, data=form)
        response.raise_for_status()
        return response.json()

    def upload_cifar10(self) -> tuple[dict, dict]:
        """The CIFAR-10 training zip and test zip, as two datasets."""
        train = self.upload(CIFAR10 / "cifar10-train.zip", name="cifar10-train")
        return train, self.upload(CIFAR10 / "cifar10-test.zip", name="cifar10-test")

    def upload_mnist(self) -> dict:
        """The four MNIST IDX files (t10k as the test split), as one dataset."""
        return self.upload(*sorted(MNIST.glob("*-ubyte.gz")), name="mnist")

    def train(self, spec: dict, poll_s: float = 1.0) -> dict:
        response = self.http.post("/jobs", json=spec)
        response.raise_for_status()
        job_id = response.json()["id"]
        while (job := self.http.get(f"/jobs/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            time.sleep(poll_s)
        if job["status"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job['error']}")
        return job

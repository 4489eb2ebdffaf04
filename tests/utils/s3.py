"""A real S3-compatible HTTP server for the tests: moto's server mode (`moto_server`), in a
process of its own, with a bucket made for the test's artefacts; a `BucketPrefix` is one
stack's part of that bucket."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx

from tests.utils.servers import bound_socket
from tests.utils.waiting import wait_until

# moto accepts any credentials; boto3 needs some, and a region.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    process: subprocess.Popen
    endpoint_url: str
    bucket: str
    log: Path

    def env(self, prefix: str) -> dict[str, str]:
        """The settings of a process whose artefacts live under `prefix` of the bucket."""
        return CREDENTIALS | {
            "TRAINSERVE_ARTIFACTS": f"s3://{self.bucket}/{prefix}",
            "TRAINSERVE_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def pause(self) -> None:
        """SIGSTOP: the store stops answering (connections hang, then time out)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@dataclass(frozen=True)
class BucketPrefix:
    """The objects of one stack's store: those under `prefix` of the server's bucket, named
    by the store's own keys (`datasets/…`, `jobs/…`), the prefix left out."""

    server: S3Server
    prefix: str

    def env(self) -> dict[str, str]:
        return self.server.env(self.prefix)

    def keys(self, start: str = "") -> list[str]:
        """The keys that start with `start`, listed page by page (1,000 keys a page)."""
        pages = self.server.client().get_paginator("list_objects_v2")
        listed = pages.paginate(Bucket=self.server.bucket, Prefix=f"{self.prefix}/{start}")
        return sorted(
            item["Key"].removeprefix(f"{self.prefix}/")
            for page in listed
            for item in page.get("Contents", [])
        )

    def read(self, key: str) -> bytes:
        stored = self.server.client().get_object(
            Bucket=self.server.bucket, Key=f"{self.prefix}/{key}"
        )
        return stored["Body"].read()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.TransportError:
        return False


@contextmanager
def moto_server(folder: Path, bucket: str = "trainserve-test") -> Iterator[S3Server]:
    """moto_server on a free local port, with `bucket` made; stopped afterwards."""
    with bound_socket() as sock:  # a free port, released for moto to bind
        port = sock.getsockname()[1]
    log = folder / "moto.log"
    with open(log, "ab") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=os.environ | CREDENTIALS,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _answers(url), timeout=60, what=lambda: f"moto at {url}: {log.read_text()}"
        )
        server = S3Server(process, url, bucket, log)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        process.send_signal(signal.SIGCONT)  # a paused server cannot hear SIGTERM
        process.terminate()
        process.wait(timeout=20)

"""The artefact store: datasets, checkpoints and exports, behind one interface.

Two back ends: the local folder (TRAINSERVE_ARTIFACTS_DIR, the embedded default: every
process on one disk) and an S3-compatible bucket (TRAINSERVE_ARTIFACTS=s3://bucket/prefix,
TRAINSERVE_S3_ENDPOINT_URL for MinIO and others), through boto3 (docs/storage.md says
why). An object is written once under a key named by its content (a dataset's
fingerprint) or by its job (attempt and epoch), and never overwritten; the database row
that names its key records its sha256, and every read is checked against it. So an object
counts only once a row says so: a half-written upload is never served, and an upload no
row names is garbage, removed with its job.

Reads from a bucket go through the machine's ReadCache (app/store/cache.py): a dataset is
downloaded once per machine.
"""

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from app.config import Settings, get_settings
from app.store.cache import ArtefactCorrupt, CacheDiskFull, ReadCache
from models.files import file_sha256, load_plain, write_atomically

__all__ = ["ArtefactCorrupt", "ArtefactMissing", "ArtefactStore", "CacheDiskFull", "get_store"]

log = logging.getLogger("trainserve.store")
CHUNK = 1 << 20


class ArtefactMissing(FileNotFoundError):
    """No object under the key (deleted, or never written)."""


class ArtefactStore(Protocol):
    def write(self, key: str, write: Callable[[BinaryIO], object]) -> str:
        """Write the object through `write` (a file object); returns its sha256."""

    def read(self, key: str, sha256: str | None) -> Path:
        """A local file holding the object's bytes, checked against `sha256` (None: a row
        from before the store recorded one, local folder only)."""

    def stream(self, key: str, sha256: str) -> tuple[int, Iterator[bytes]]:
        """The object's size and its bytes in chunks, hashed as they go: a mismatch raises
        ArtefactCorrupt after the last chunk, before the iterator ends."""

    def size(self, key: str) -> int:
        """Bytes of one object; 0 if there is none."""

    def size_under(self, prefix: str) -> int:
        """Bytes of every object whose key starts with `prefix`."""

    def delete(self, key: str) -> None: ...

    def delete_under(self, prefix: str) -> None: ...


def save(store: ArtefactStore, key: str, obj: dict) -> str:
    """torch.save a plain dict (a dataset's state, a checkpoint) as an object; its sha256."""
    import torch  # here: the worker's parent imports this module and must not load torch

    return store.write(key, lambda file: torch.save(obj, file))


def load(store: ArtefactStore, key: str, sha256: str | None) -> dict:
    """An object written by `save`, checked, read without unpickling arbitrary objects."""
    return load_plain(store.read(key, sha256))


class LocalStore:
    """Objects are files under one folder that every process reads (one machine, or a
    shared file system). Keys of rows written before the store (absolute paths) still work."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalStore({self.root})"

    def _path(self, key: str) -> Path:
        return self.root / key

    def write(self, key: str, write: Callable[[BinaryIO], object]) -> str:
        return write_atomically(self._path(key), write)

    def read(self, key: str, sha256: str | None) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ArtefactMissing(f"no artefact {key}")
        if sha256 is not None and file_sha256(path) != sha256:
            raise ArtefactCorrupt(f"{key}: its bytes no longer match the recorded sha256")
        return path

    def stream(self, key: str, sha256: str) -> tuple[int, Iterator[bytes]]:
        path = self.read(key, sha256)
        return path.stat().st_size, _chunks_of(path)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return 0

    def size_under(self, prefix: str) -> int:
        folder = self._path(prefix)
        files = folder.rglob("*") if folder.is_dir() else iter(())
        return sum(self.size(str(file)) for file in files)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_under(self, prefix: str) -> None:
        folder = self._path(prefix)
        for file in sorted(folder.rglob("*"), reverse=True) if folder.is_dir() else []:
            file.rmdir() if file.is_dir() else file.unlink(missing_ok=True)
        if folder.is_dir():
            folder.rmdir()


def _chunks_of(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as file:
        yield from iter(lambda: file.read(CHUNK), b"")


class S3Store:
    """Objects in an S3-compatible bucket under a prefix; reads through the read cache."""

    def __init__(self, url: str, endpoint_url: str | None, cache: ReadCache, timeout: float = 60.0):
        parsed = urlparse(url)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.endpoint_url, self.cache, self.timeout = endpoint_url, cache, timeout
        self._clients: dict[int, Any] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix}, endpoint {self.endpoint_url or 'AWS'})"

    @property
    def client(self):
        """One boto3 client per process (a client made before a fork is not the child's);
        boto3's clients are thread-safe. Credentials and region: boto3's own chain
        (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ~/.aws, roles)."""
        with self._guard:
            client = self._clients.get(os.getpid())
            if client is None:
                config = BotoConfig(
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                )
                client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)
                self._clients = {os.getpid(): client}
            return client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def write(self, key: str, write: Callable[[BinaryIO], object]) -> str:
        """Written to a local temporary file first, hashed, then uploaded (boto3 sends big
        files in parts, each retried); the file then joins the read cache, so this machine
        never downloads what it wrote."""
        scratch = self.cache.folder / ".uploads"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=scratch, delete=False) as file:
            temporary = Path(file.name)
        try:
            full_disk = self.cache.full_disk_named(f"{key} could not be written to upload")
            with full_disk, open(temporary, "wb") as file:  # the close's flush is inside
                write(file)
            sha256 = file_sha256(temporary)
            extra = {"Metadata": {"sha256": sha256}}
            self.client.upload_file(str(temporary), self.bucket, self._key(key), ExtraArgs=extra)
            self.cache.adopt(sha256, temporary)
        finally:
            temporary.unlink(missing_ok=True)
        return sha256

    def read(self, key: str, sha256: str | None) -> Path:
        if sha256 is None:
            raise ArtefactCorrupt(f"{key}: no sha256 recorded, so it cannot be checked")
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached
        body = self._get(key)
        log.info("artefact %s: downloading %d bytes from %r", key, body["ContentLength"], self)
        return self.cache.fill(sha256, lambda file: _copy(body["Body"], file), what=key)

    def stream(self, key: str, sha256: str) -> tuple[int, Iterator[bytes]]:
        body = self._get(key)
        return body["ContentLength"], _checked(body["Body"], sha256, key)

    def _get(self, key: str) -> dict:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ArtefactMissing(f"no artefact {key} in {self!r}") from exc
            raise

    def size(self, key: str) -> int:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return 0
            raise

    def _objects_under(self, prefix: str) -> Iterator[dict]:
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            yield from page.get("Contents", [])

    def size_under(self, prefix: str) -> int:
        return sum(item["Size"] for item in self._objects_under(prefix))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_under(self, prefix: str) -> None:
        keys = [{"Key": item["Key"]} for item in self._objects_under(prefix)]
        for start in range(0, len(keys), 1000):  # the most one request may name
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000]}
            )


def _copy(body, file) -> None:
    for chunk in body.iter_chunks(CHUNK):
        file.write(chunk)


def _checked(body, sha256: str, key: str) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for chunk in body.iter_chunks(CHUNK):
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != sha256:
        raise ArtefactCorrupt(f"{key}: its bytes no longer match the recorded sha256")


def get_store(settings: Settings | None = None) -> ArtefactStore:
    """The process's store, as the settings (by default the process's) say."""
    settings = settings or get_settings()
    return _store(
        settings.artifacts,
        settings.artifacts_dir.resolve(),
        settings.s3_endpoint_url,
        settings.cache_dir.resolve(),
        settings.cache_bytes,
        settings.s3_timeout_seconds,
    )


@lru_cache(maxsize=8)  # one per set of settings: a test's settings make their own
def _store(
    url: str | None,
    folder: Path,
    endpoint_url: str | None,
    cache_dir: Path,
    cache_bytes: int,
    timeout: float,
) -> ArtefactStore:
    if url is None:
        return LocalStore(folder)
    return S3Store(url, endpoint_url, ReadCache(cache_dir, cache_bytes), timeout)

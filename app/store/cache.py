"""A machine's read cache of artefacts, keyed by sha256, with a size limit.

Each worker and API process that reads from a remote store keeps its copies here, so a
dataset is downloaded once per machine, not once per job. An entry is written to a
temporary file, checked against its sha256 and renamed into place: a reader never finds a
half-written or wrong entry, even with several processes filling the same folder. Entries
are checked again on every read (a disk can rot), and the least recently read are removed
once the folder holds more than its limit.
"""

import errno
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from models.files import file_sha256

log = logging.getLogger("trainserve.store")


class ArtefactCorrupt(RuntimeError):
    """An artefact's bytes do not match the sha256 recorded when it was written."""


class CacheDiskFull(RuntimeError):
    """The read cache's disk has no room for an artefact."""


class HashingWriter:
    """A file object that hashes what is written through it."""

    def __init__(self, file: BinaryIO):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.file.write(data)


class ReadCache:
    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes

    def path_of(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / sha256

    def get(self, sha256: str) -> Path | None:
        """The entry's path if it is here and still matches its sha256 (else it is dropped)."""
        path = self.path_of(sha256)
        try:
            os.utime(path)  # read now: the last to be evicted
        except FileNotFoundError:
            return None
        if file_sha256(path) != sha256:
            log.warning("cache entry %s no longer matches its sha256: dropped", path)
            path.unlink(missing_ok=True)
            return None
        return path

    def fill(self, sha256: str, write: Callable[[BinaryIO], object], what: str) -> Path:
        """Write an entry through `write`, check it against `sha256`, keep it; its path.
        Raises ArtefactCorrupt (nothing kept) or CacheDiskFull (nothing kept)."""
        path = self.path_of(sha256)
        temporary = path.with_name(f".{sha256}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with self.full_disk_named(f"{what} could not be kept"):
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(temporary, "wb") as file:
                    hashing = HashingWriter(file)
                    write(hashing)  # type: ignore[arg-type]  # a writable file, as far as it goes
                got = hashing.digest.hexdigest()
                if got != sha256:
                    raise ArtefactCorrupt(f"{what}: its bytes have sha256 {got}, recorded {sha256}")
                os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        self.evict()
        return path

    @contextmanager
    def full_disk_named(self, what: str) -> Iterator[None]:
        """A write's OSError of a full disk (or quota) inside becomes CacheDiskFull, naming
        the folder; any other error goes on as it is."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            raise CacheDiskFull(
                f"the read cache's disk is full ({self.folder}): {what}; free space there or "
                "lower TRAINSERVE_CACHE_BYTES"
            ) from exc

    def adopt(self, sha256: str, file: Path) -> None:
        """Keep a file this process wrote and hashed itself (an upload's source)."""
        path = self.path_of(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, path)
        self.evict()

    def evict(self) -> None:
        """Remove the least recently read entries while the cache holds over its limit."""
        entries = []
        for path in self.folder.glob("*/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another process evicted it meanwhile
                continue
            if not path.name.startswith("."):
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

"""The artefact store's S3 back end against a real S3 HTTP server (moto's), and the read
cache: a download once per machine, every read checked, the size limit, a full disk."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from app.store.artefacts import ArtefactCorrupt, ArtefactMissing, S3Store
from app.store.cache import ReadCache
from tests.conftest import PROJECT
from tests.utils.s3 import moto_server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def machine(s3, tmp_path, monkeypatch):
    """A store as one machine sees it: the shared bucket, a read cache of its own."""
    for name, value in s3.env("unit").items():
        monkeypatch.setenv(name, value)

    def on(name: str, cache_bytes: int = 1 << 30) -> S3Store:
        url = f"s3://{s3.bucket}/unit/{tmp_path.name}"
        return S3Store(url, s3.endpoint_url, ReadCache(tmp_path / name, cache_bytes))

    return on


def write_bytes(store: S3Store, key: str, content: bytes) -> str:
    return store.write(key, lambda file: file.write(content))


def test_a_machine_downloads_an_object_once_and_checks_every_read(machine, s3, caplog):
    writer, reader = machine("writer"), machine("reader")
    sha256 = write_bytes(writer, "datasets/d.pt", b"tensors" * 1000)
    assert writer.cache.get(sha256) is not None  # what a machine wrote, it never downloads
    caplog.set_level(logging.INFO, "trainserve.store")
    first = reader.read("datasets/d.pt", sha256)
    second = reader.read("datasets/d.pt", sha256)
    assert first == second == reader.cache.path_of(sha256)
    assert first.read_bytes() == b"tensors" * 1000
    assert caplog.text.count("artefact datasets/d.pt: downloading") == 1
    first.write_bytes(b"rot")  # a cache entry that changed on disk is fetched again
    assert reader.read("datasets/d.pt", sha256).read_bytes() == b"tensors" * 1000
    assert caplog.text.count("artefact datasets/d.pt: downloading") == 2


def test_an_object_that_does_not_match_its_sha256_is_refused_and_not_kept(machine, s3):
    store = machine("a")
    sha256 = write_bytes(store, "jobs/j/a1-e1-best.pt", b"weights")
    key = f"{store.prefix}/jobs/j/a1-e1-best.pt"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"tampered")
    elsewhere = machine("b")
    with pytest.raises(ArtefactCorrupt, match="recorded"):
        elsewhere.read("jobs/j/a1-e1-best.pt", sha256)
    assert not [p for p in elsewhere.cache.folder.rglob("*") if p.is_file()]
    _, chunks = elsewhere.stream("jobs/j/a1-e1-best.pt", sha256)
    with pytest.raises(ArtefactCorrupt):  # a download is cut short at its end
        b"".join(chunks)
    with pytest.raises(ArtefactMissing):
        elsewhere.read("jobs/j/never-written.pt", sha256)


def test_the_cache_keeps_to_its_size_limit_least_recently_read_first(machine):
    writer, reader = machine("writer"), machine("reader", cache_bytes=2500)
    hashes = [write_bytes(writer, f"datasets/{i}.pt", bytes([i]) * 1000) for i in range(3)]
    for sha256 in hashes:
        reader.read(f"datasets/{hashes.index(sha256)}.pt", sha256)
    kept = [sha256 for sha256 in hashes if reader.cache.path_of(sha256).exists()]
    assert kept == hashes[1:]


def test_sizes_and_deletes_under_a_prefix(machine):
    store = machine("a")
    for name in ("a1-e1-last.pt", "a1-e1-best.pt"):
        write_bytes(store, f"jobs/j/{name}", b"x" * 100)
    assert store.size_under("jobs/j/") == 200 and store.size("jobs/j/a1-e1-best.pt") == 100
    store.delete_under("jobs/j/")
    assert store.size_under("jobs/j/") == 0 and store.size("jobs/j/a1-e1-best.pt") == 0


FULL_DISK = """
import sys
from pathlib import Path
from app.store.artefacts import S3Store
from app.store.cache import CacheDiskFull, ReadCache

url, endpoint, cache, sha256 = sys.argv[1:]
store = S3Store(url, endpoint, ReadCache(Path(cache), 1 << 30))
try:
    store.read("datasets/big.pt", sha256)
except CacheDiskFull as exc:
    print("REFUSED:", exc)
print("LEFT:", sorted(str(p) for p in Path(cache).rglob("*") if p.is_file()))
"""


def test_a_full_cache_disk_is_a_clear_error_that_leaves_nothing_behind(machine, tmp_path):
    """The cache on a real 1 MiB file system (tmpfs, mounted in a mount namespace of its
    own, as an unprivileged user may) and an object of 2 MiB."""
    store = machine("writer")
    sha256 = write_bytes(store, "datasets/big.pt", os.urandom(2 << 20))
    cache = tmp_path / "small-disk"
    cache.mkdir()
    script = textwrap.dedent(FULL_DISK)
    mounted = f'mount -t tmpfs -o size=1m tmpfs "{cache}" && exec "$0" -c "$1" "$2" "$3" "$4" "$5"'
    arguments = [f"s3://{store.bucket}/{store.prefix}", store.endpoint_url, str(cache), sha256]
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mounted]
    ran = subprocess.run(
        [*command, sys.executable, script, *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env=os.environ | {"PYTHONPATH": str(PROJECT)},
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "REFUSED: the read cache's disk is full" in ran.stdout, ran.stdout + ran.stderr
    assert "TRAINSERVE_CACHE_BYTES" in ran.stdout
    assert "LEFT: []" in ran.stdout  # no half-written entry, no temporary file

"""Upload to stored dataset: hash, read and check, store once by content."""

import hashlib
import json
import logging
import re
from dataclasses import asdict
from pathlib import PurePosixPath

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.store.artefacts import get_store, save
from app.store.datasets import add_dataset, find_dataset_by_fingerprint
from app.store.tables import Dataset
from models.data import NamedFile, ReadOptions, read_upload
from models.datachecks import data_checks

log = logging.getLogger("trainserve.api")


def read_options(settings: Settings, **fields) -> ReadOptions:
    """How an upload is read: the form's `fields` (resize, columns) and the settings'
    limits."""
    return ReadOptions(
        max_examples=settings.max_dataset_examples,
        max_decoded_bytes=settings.max_decoded_bytes,
        max_zip_ratio=settings.max_zip_ratio,
        max_memory_bytes=settings.max_ingest_memory_bytes,
        **fields,
    )


def upload_sha256(files: list[NamedFile]) -> str:
    """The file's sha256; for several files, the sha256 of their sorted hashes."""
    hashes = sorted(_stream_sha256(file) for file in files)
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()


def _stream_sha256(file: NamedFile) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.stream.read(1 << 20), b""):
        digest.update(chunk)
    file.stream.seek(0)
    return digest.hexdigest()


def ingest_upload(
    session: Session,
    settings: Settings,
    files: list[NamedFile],
    name: str | None,
    options: ReadOptions,
    owner_key_id: str | None = None,
) -> tuple[Dataset, bool]:
    """Return the stored dataset and whether this upload created it (then `owner_key_id`'s)."""
    sha256 = upload_sha256(files)
    options_key = json.dumps(asdict(options), sort_keys=True)
    fingerprint = hashlib.sha256(f"{sha256}|{options_key}".encode()).hexdigest()
    existing = find_dataset_by_fingerprint(session, fingerprint)
    if existing:
        return existing, False
    data = read_upload(files, options)  # raises DatasetError before anything is stored
    store = get_store(settings)
    key = f"datasets/{fingerprint}.pt"
    file_sha256 = save(store, key, data.to_state())
    dataset = Dataset(
        name=name or display_name(files[0].filename),
        task=data.task,
        format=data.source_format,
        sha256=sha256,
        fingerprint=fingerprint,
        size_bytes=sum(file_size(f) for f in files),
        classes=data.classes,
        counts=data.counts(),
        details=data.details(),
        skipped=asdict(data.skipped),
        checks=data_checks(data),
        path=key,
        file_sha256=file_sha256,
        owner_key_id=owner_key_id,
    )
    try:
        add_dataset(session, dataset)
    except IntegrityError:  # the same upload, stored by a concurrent request: same file
        session.rollback()
        stored = find_dataset_by_fingerprint(session, fingerprint)
        if stored is None:  # the conflict was not on the fingerprint: a real error
            raise
        return stored, False
    except Exception:
        store.delete(key)  # no object without its row
        raise
    log.info(
        "dataset %s: stored %s %s, classes=%d, skipped %d hidden and %d not images",
        dataset.id,
        data.task,
        data.source_format,
        len(data.classes),
        data.skipped.hidden,
        data.skipped.not_an_image,
    )
    return dataset, True


def display_name(filename: str) -> str:
    """The client's file name, fit to show and store: no folders, no control characters."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    return re.sub(r"[\x00-\x1f\x7f]", "", base)[:200] or "dataset"


def file_size(file: NamedFile) -> int:
    size = file.stream.seek(0, 2)
    file.stream.seek(0)
    return size

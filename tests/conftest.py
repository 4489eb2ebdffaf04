"""Fixtures shared by every test folder: the real data sets and small data built in memory."""

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
# The one admin key of every test service: given as TRAINSERVE_ADMIN_KEY, which the API
# stores (hashed) at start, and sent by every test client.
ADMIN_KEY = "ts_test-admin-key-0123456789abcdef0123456789abcdef"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def app_client():
    """The API in-process (lifespan included), sending the admin key."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    return TestClient(create_app(), headers=bearer(ADMIN_KEY))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the real data sets are expected at {SHARED_DATA}")
    return SHARED_DATA


def image_bytes(array: np.ndarray, image_format: str, **options) -> bytes:
    """The array encoded by Pillow: PNG, PPM (PGM for grey), BMP, TIFF, WebP, GIF, …"""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    return image_bytes(array, "PNG")


def class_pattern(label: int, size: int, rng: np.random.Generator, channels: int = 3):
    """An easy-to-learn image: class 0 bright on top, class 1 bright at the bottom."""
    array = rng.integers(0, 60, (size, size, channels), dtype=np.uint8)
    half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
    array[half] += 150
    return array.squeeze()


def image_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def two_class_zip() -> bytes:
    """40 train and 10 test 16x16 colour PNGs, classes 'bottom' and 'top'."""
    rng = np.random.default_rng(0)
    entries = {}
    for split, count in (("train", 20), ("test", 5)):
        for label, name in ((0, "top"), (1, "bottom")):
            for i in range(count):
                entries[f"{split}/{name}/{i}.png"] = png_bytes(class_pattern(label, 16, rng))
    return image_zip(entries)


def face_set_zip(people: int, per_person: int, size: tuple[int, int] = (112, 92)) -> bytes:
    """A face set as distributed (AT&T/ORL style): grey PGM files, one folder per person
    (s1/1.pgm, …), with a README and the .DS_Store a Mac leaves. Each person is a blocky
    random face of their own (size in multiples of 8x4 pixels); each photo adds noise."""
    rng = np.random.default_rng(19)
    entries = {"README": b"40 people, 10 photos each.\n", ".DS_Store": b"\0\0\0\1Bud1"}
    for person in range(1, people + 1):
        face = np.kron(rng.integers(30, 220, (size[0] // 8, size[1] // 4)), np.ones((8, 4)))
        for photo in range(1, per_person + 1):
            noisy = face + rng.normal(0, 20, size)
            grey = noisy.clip(0, 255).astype(np.uint8)
            entries[f"s{person}/{photo}.pgm"] = image_bytes(grey, "PPM")
    return image_zip(entries)


def idx_bytes(array: np.ndarray, compress: bool = True) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    return gzip.compress(raw) if compress else raw


@pytest.fixture(scope="session")
def sentiment_csv() -> bytes:
    rows = ["text,label"]
    for i in range(30):
        rows.append(f'"a wonderful delight, truly great {i}",positive')
        rows.append(f'"a dull and awful mess, truly bad {i}",negative')
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture(scope="session")
def moods_csv() -> bytes:
    """Texts of three moods: another text_sentiment model, with classes of its own."""
    rows = ["text,label"]
    for i in range(20):
        rows.append(f'"so joyful and glad today {i}",joy')
        rows.append(f'"furious and angry again {i}",anger')
        rows.append(f'"scared and afraid tonight {i}",fear')
    return ("\n".join(rows) + "\n").encode()


def clear_cached_settings() -> None:
    from app.config import get_settings
    from app.store.db import get_engine, get_session_factory

    for cached in (get_settings, get_engine, get_session_factory):
        cached.cache_clear()


def alembic_config(database_url: str):
    from alembic.config import Config

    config = Config(str(PROJECT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def migrate(database_url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def embedded_settings_in(folder: Path, monkeypatch: pytest.MonkeyPatch):
    """The embedded defaults (SQLite, file-system broker) in folder, migrated."""
    url = f"sqlite:///{folder}/trainserve.db"
    monkeypatch.setenv("TRAINSERVE_DATABASE_URL", url)
    monkeypatch.setenv("TRAINSERVE_ARTIFACTS_DIR", str(folder / "artifacts"))
    monkeypatch.setenv("TRAINSERVE_BROKER_DIR", str(folder / "broker"))
    monkeypatch.setenv("TRAINSERVE_BROKER_URL", "filesystem://")
    monkeypatch.setenv("TRAINSERVE_ADMIN_KEY", ADMIN_KEY)
    # Tests queue many jobs with the one admin key; quota tests give their keys a limit.
    monkeypatch.setenv("TRAINSERVE_MAX_CONCURRENT_JOBS", "0")
    # Tests send unknown keys on purpose, many from one address; the throttle's test sets it.
    monkeypatch.setenv("TRAINSERVE_AUTH_FAILURES_PER_MINUTE", "0")
    clear_cached_settings()
    migrate(url)
    from app.config import get_settings

    return get_settings()


@pytest.fixture
def embedded_settings(tmp_path, monkeypatch):
    yield embedded_settings_in(tmp_path, monkeypatch)
    clear_cached_settings()


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory):
    """The embedded defaults in one folder for a whole module: for state that several of
    its tests share, such as trained versions (see tests/utils/snapshots.py)."""
    folder = tmp_path_factory.mktemp("module")
    with pytest.MonkeyPatch.context() as monkeypatch:
        embedded_settings_in(folder, monkeypatch)
        yield folder
    clear_cached_settings()


def pytest_terminal_summary(terminalreporter) -> None:
    """The fuzzing figures, when tests/app/test_fuzz.py ran."""
    fuzz = sys.modules.get("tests.app.test_fuzz")
    if fuzz is not None and fuzz.FIGURES["cases"]:
        figures = fuzz.FIGURES
        terminalreporter.write_line(
            f"schemathesis: {len(figures['operations'])} operations covered, "
            f"{figures['cases']} cases sent, {figures['server errors']} server errors"
        )

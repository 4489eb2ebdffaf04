"""Fixtures of the in-process API tests."""

import pytest

from tests.conftest import app_client
from tests.utils.api import train, upload
from tests.utils.snapshots import FolderSnapshot


@pytest.fixture
def client(embedded_settings):
    """The API in-process on the embedded defaults of a fresh folder."""
    with app_client() as client:
        yield client


@pytest.fixture(scope="module")
def shapes_trained_once(module_folder, two_class_zip) -> tuple[FolderSnapshot, dict, dict]:
    """Two versions of "shapes" (seeds 0 and 1; the second is latest), trained once per
    module, and the snapshot that gives each test the folder as they left it."""
    with app_client() as client:
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        first, second = train(client, dataset_id), train(client, dataset_id, seed=1)
        first = client.get(f"/models/{first['id']}").json()  # no longer latest
    return FolderSnapshot(module_folder), first, second

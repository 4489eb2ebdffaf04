"""Every hostile input of tests/hostile.py gets its 4xx in-process, and nothing is stored."""

from tests.conftest import app_client
from tests.hostile import MiB, hostile_inputs
from tests.utils.api import IMAGE_JOB, TOP_IMAGE, upload
from workers.runner import run_job


def test_hostile_inputs_get_a_clear_4xx_and_store_nothing(
    monkeypatch, embedded_settings, two_class_zip
):
    monkeypatch.setattr(embedded_settings, "max_upload_bytes", 4 * MiB)
    monkeypatch.setattr(embedded_settings, "max_decoded_bytes", 8 * MiB)
    image = TOP_IMAGE
    with app_client() as client:
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        run_job(client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"])
        expected = client.post("/predict", files={"file": ("x.png", image)}).json()
        stored = sorted((embedded_settings.artifacts_dir / "datasets").iterdir())
        cases = hostile_inputs(embedded_settings.max_upload_bytes, 8 * MiB)
        assert len(cases) >= 15
        for case in cases:
            response = client.post(case.path, **case.request_kwargs())
            assert response.status_code == case.status, (case.name, response.text[:300])
            assert case.detail in str(response.json()["detail"]), (case.name, response.text[:300])
        assert [d["id"] for d in client.get("/datasets").json()["items"]] == [dataset_id]
        assert sorted((embedded_settings.artifacts_dir / "datasets").iterdir()) == stored
        assert client.post("/predict", files={"file": ("x.png", image)}).json() == expected

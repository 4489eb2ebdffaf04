"""The model registry over HTTP, in-process on the embedded defaults: versions, aliases, weights."""

import base64
import io
import json
import re

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

from models.checkpoint import network_from_checkpoint
from models.export import OnnxNetwork
from tests.conftest import app_client, class_pattern, clear_cached_settings, png_bytes
from tests.utils.api import IMAGE_JOB, TOP_IMAGE, train, upload
from tests.utils.jobs import stored_file
from tests.utils.waiting import wait_until


@pytest.fixture
def embedded_settings(shapes_trained_once):
    """Every test here starts from the two versions trained once for the module."""
    snapshot, _, _ = shapes_trained_once
    return snapshot.restore()


@pytest.fixture
def two_versions(shapes_trained_once, embedded_settings) -> tuple[dict, dict]:
    _, first, second = shapes_trained_once
    return first, second


@pytest.fixture
def unpolled(embedded_settings, monkeypatch):
    """Apps that read the registry when they start, and then only when their watch hears
    of a change: here SQLite's data_version, looked at by every request."""
    monkeypatch.setenv("TRAINSERVE_REGISTRY_POLL_SECONDS", "3600")
    clear_cached_settings()


def predict(client, model: str | None = None) -> dict:
    data = {"model": model} if model else {}
    response = client.post("/predict", files={"file": ("x.png", TOP_IMAGE)}, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_served(client, model: str | None, version_id: str) -> None:
    wait_until(
        lambda: predict(client, model)["model_id"] == version_id,
        timeout=10,
        what=f"{model or 'the default model'} to serve {version_id}",
    )


def move(client, name: str, alias: str, version_id: str):
    return client.put(f"/models/{name}/aliases/{alias}", json={"version_id": version_id})


def test_each_succeeded_job_is_a_version_and_latest_follows_it(client, two_versions, two_class_zip):
    first, second = two_versions
    assert first["name"] == "shapes" and first["network"] == "tutorial_cnn"
    assert first["task"] == "image_classification" and first["classes"] == ["bottom", "top"]
    assert first["spec"]["hyperparameters"]["epochs"] == 2 and first["spec"]["seed"] == 0
    assert first["data_sha256"] == upload(client, two_class_zip, "d.zip").json()["sha256"]
    assert first["metrics"]["epoch"] >= 1 and len(first["sha256"]) == 64
    assert re.fullmatch(rf"jobs/{first['job_id']}/a1-e\d+-best\.pt", first["checkpoint_path"])
    assert first["aliases"] == [] and second["aliases"] == ["latest"]
    listed = client.get("/models", params={"name": "shapes"}).json()
    assert [m["id"] for m in listed["items"]] == [second["id"], first["id"]]
    page = client.get("/models", params={"limit": 1}).json()
    assert [m["id"] for m in page["items"]] == [second["id"]] and page["next_cursor"]
    assert client.get("/models", params={"name": "other"}).json()["items"] == []
    assert client.get(f"/models/{first['id']}").json() == first
    assert client.get("/models/nope").status_code == 404
    [latest] = client.get("/models/shapes/aliases").json()
    assert (latest["alias"], latest["version_id"]) == ("latest", second["id"])
    history = client.get("/models/shapes/aliases/latest/history").json()
    assert [(h["from_version_id"], h["to_version_id"], h["action"]) for h in history] == [
        (first["id"], second["id"], "job_succeeded"),
        (None, first["id"], "job_succeeded"),
    ]


def test_alias_moves_roll_back_and_keep_their_history(client, two_versions):
    first, second = two_versions
    assert client.post("/models/shapes/aliases/production/rollback").status_code == 404
    moved = move(client, "shapes", "production", second["id"])
    assert moved.status_code == 200, moved.text
    [admin] = client.get("/keys").json()["items"]
    assert moved.json()["from_version_id"] is None and moved.json()["moved_by"] == admin["id"]
    no_way_back = client.post("/models/shapes/aliases/production/rollback")
    assert no_way_back.status_code == 409 and "no way back" in no_way_back.text
    move(client, "shapes", "production", first["id"])
    back = client.post("/models/shapes/aliases/production/rollback").json()
    assert (back["from_version_id"], back["to_version_id"]) == (first["id"], second["id"])
    assert back["action"] == "rolled_back"
    history = client.get("/models/shapes/aliases/production/history").json()
    assert [h["action"] for h in history] == ["rolled_back", "moved", "moved"]
    assert all(h["moved_at"].endswith(("Z", "+00:00")) for h in history)
    assert client.get(f"/models/{second['id']}").json()["aliases"] == ["latest", "production"]


def test_bad_alias_moves_are_refused(client, two_versions, two_class_zip):
    first, _ = two_versions
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    other = train(client, dataset_id, name="other")
    wrong_name = move(client, "shapes", "production", other["id"])
    assert wrong_name.status_code == 422 and "version of 'other'" in wrong_name.text
    assert move(client, "shapes", "production", "nope").status_code == 404
    bad_alias = move(client, "shapes", "no spaces", first["id"])
    assert bad_alias.status_code == 422 and "alias" in bad_alias.text
    extra = client.put("/models/shapes/aliases/x", json={"version_id": first["id"], "by": "me"})
    assert extra.status_code == 422
    assert client.get("/models/shapes/aliases/production/history").json() == []
    bad_name = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id, "name": "a@b"})
    assert bad_name.status_code == 422 and "name" in bad_name.text


def test_delete_is_refused_while_an_alias_points_at_the_version(
    client, two_versions, embedded_settings
):
    first, second = two_versions
    move(client, "shapes", "production", first["id"])
    # The load this move starts must end before the delete: one still in flight when its
    # version is deleted puts the version back in the cache (app/serving.py, _load).
    wait_until_served(client, "shapes@production", first["id"])
    refused = client.delete(f"/models/{first['id']}")
    assert refused.status_code == 409 and "production" in refused.json()["detail"]
    assert client.delete(f"/models/{second['id']}").status_code == 409  # latest
    path = stored_file(embedded_settings, first["checkpoint_path"])
    assert path.exists()
    move(client, "shapes", "production", second["id"])
    assert client.delete(f"/models/{first['id']}").status_code == 204
    assert client.get(f"/models/{first['id']}").status_code == 404
    assert not path.exists()
    assert client.get(f"/jobs/{first['job_id']}").json()["model_id"] is None
    gone = client.post(
        "/predict", files={"file": ("x.png", TOP_IMAGE)}, data={"model": first["id"]}
    )
    assert gone.status_code == 404
    back = client.post("/models/shapes/aliases/production/rollback")
    assert back.status_code == 409 and "deleted" in back.text
    assert client.delete(f"/models/{first['id']}").status_code == 404


def test_weights_download_opens_with_plain_torch_safetensors_and_onnx(client, two_versions):
    first, _ = two_versions
    image = torch.rand(1, 3, 16, 16)
    response = client.get(f"/models/{first['id']}/weights")
    assert response.status_code == 200 and response.headers["etag"] == f'"{first["sha256"]}"'
    checkpoint = torch.load(io.BytesIO(response.content), weights_only=True)
    assert checkpoint["arch"] == "tutorial_cnn" and checkpoint["classes"] == ["bottom", "top"]
    expected = network_from_checkpoint(checkpoint)(image)

    response = client.get(f"/models/{first['id']}/weights", params={"format": "safetensors"})
    assert response.status_code == 200
    again = client.get(f"/models/{first['id']}/weights", params={"format": "safetensors"})
    assert again.content == response.content  # the same bytes under the same ETag
    weights = safetensors.torch.load(response.content)
    assert weights.keys() == checkpoint["state_dict"].keys()
    header_size = int.from_bytes(response.content[:8], "little")
    metadata = json.loads(response.content[8 : 8 + header_size])["__metadata__"]
    rebuilt = network_from_checkpoint(
        {
            "arch": metadata["arch"],
            "model_args": json.loads(metadata["model_args"]),
            "state_dict": weights,
        }
    )
    assert torch.allclose(rebuilt(image), expected)
    assert json.loads(metadata["classes"]) == ["bottom", "top"]
    response = client.get(f"/models/{first['id']}/weights", params={"format": "onnx"})
    assert response.status_code == 200
    onnx = OnnxNetwork(response.content, threads=1)
    assert torch.allclose(onnx(image), expected, atol=1e-5)
    metadata = onnx.session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["classes"]) == ["bottom", "top"]
    assert json.loads(metadata["preprocessing"]) == checkpoint["preprocessing"]
    bad = client.get(f"/models/{first['id']}/weights", params={"format": "h5"})
    assert bad.status_code == 422


def test_corrupt_weights_are_503_and_the_service_is_not_ready(
    client, two_versions, embedded_settings
):
    first, second = two_versions
    for version in (first, second):
        stored_file(embedded_settings, version["checkpoint_path"]).write_bytes(b"x")
    with app_client() as fresh:  # nothing loaded yet in this process
        assert fresh.get(f"/models/{first['id']}/weights").status_code == 503
        response = fresh.post("/predict", files={"file": ("x.png", TOP_IMAGE)})
        assert response.status_code == 503 and "sha256" in response.text
        ready = fresh.get("/readyz")
        assert ready.status_code == 503 and "models are loading" in ready.text


def test_predict_by_name_alias_and_the_default_production_else_latest(client, two_versions):
    first, second = two_versions
    wait_until_served(client, None, second["id"])  # no production yet: latest, once polled
    assert client.get("/readyz").json() == {"status": "ready", "models": "1 model(s) loaded"}
    assert predict(client, "shapes")["model_id"] == second["id"]
    assert predict(client, "shapes@latest")["model_id"] == second["id"]
    assert predict(client, first["id"])["model_id"] == first["id"]
    assert predict(client, first["job_id"])["model_id"] == first["id"]
    missing = client.post(
        "/predict", files={"file": ("x.png", TOP_IMAGE)}, data={"model": "shapes@production"}
    )
    assert missing.status_code == 404 and "no alias 'production'" in missing.text
    move(client, "shapes", "production", first["id"])
    assert predict(client, "shapes@production")["model_id"] == first["id"]  # first use: loads
    wait_until_served(client, "shapes", first["id"])
    wait_until_served(client, None, first["id"])
    assert predict(client, "shapes@latest")["model_id"] == second["id"]


def test_several_images_in_one_request_and_kserve_v2_infer(client, two_versions):
    first, _ = two_versions
    bottom = png_bytes(class_pattern(1, 16, np.random.default_rng(6)))
    files = [("files", ("a.png", TOP_IMAGE)), ("files", ("b.png", bottom))]
    answers = client.post("/predict", files=files, data={"model": first["id"]}).json()
    assert [a["label"] for a in answers] == ["top", "bottom"]
    single = predict(client, first["id"])
    assert answers[0]["top_k"] == single["top_k"]
    bad = [("files", ("a.png", TOP_IMAGE)), ("files", ("b.png", b"not an image"))]
    rejected = client.post("/predict", files=bad)
    assert rejected.status_code == 422 and "item 1" in rejected.text
    both = client.post("/predict", files=[*files, ("file", ("c.png", TOP_IMAGE))])
    assert both.status_code == 422 and "not both" in both.text

    body = {
        "id": "r1",
        "inputs": [
            {
                "name": "images",
                "shape": [2],
                "datatype": "BYTES",
                "data": [base64.b64encode(TOP_IMAGE).decode(), base64.b64encode(bottom).decode()],
            }
        ],
    }
    inferred = client.post(f"/v2/models/{first['id']}/infer", json=body)
    assert inferred.status_code == 200, inferred.text
    result = inferred.json()
    assert result["id"] == "r1" and result["model_version"] == first["id"]
    labels, probabilities = result["outputs"]
    assert labels["data"] == ["top", "bottom"] and probabilities["shape"] == [2, 2]
    top = {p["label"]: p["probability"] for p in single["top_k"]}
    assert probabilities["data"][:2] == [top["bottom"], top["top"]]  # in class order
    not_base64 = {"inputs": [{**body["inputs"][0], "data": ["%%%", "%%%"]}]}
    assert client.post("/v2/models/shapes/infer", json=not_base64).status_code == 422
    wrong_shape = {"inputs": [{**body["inputs"][0], "shape": [3]}]}
    assert client.post("/v2/models/shapes/infer", json=wrong_shape).status_code == 422
    assert client.post("/v2/models/nope@x/infer", json=body).status_code == 404


def test_metrics_count_requests_batches_loads_and_jobs(client, two_versions):
    predict(client)
    client.get("/models/nope")
    text = client.get("/metrics").text
    assert (
        'trainserve_http_request_duration_seconds_count{method="POST",route="/predict",status="200"}'
        in text
    )
    assert 'route="/models/{model_id}",status="404"' in text
    assert 'trainserve_jobs{status="succeeded"} 2.0' in text
    assert "trainserve_batch_size_count" in text and "trainserve_batch_queue_wait_seconds" in text
    assert 'trainserve_model_load_seconds_count{model="shapes"}' in text
    assert "trainserve_models_loaded 1.0" in text


def test_a_swap_releases_the_version_no_longer_served(client, two_versions):
    first, second = two_versions
    server = client.app.state.model_server
    wait_until_served(client, None, second["id"])
    move(client, "shapes", "production", first["id"])
    wait_until_served(client, None, first["id"])
    assert server.cache.ids() == {first["id"]}


def test_another_process_serves_a_move_and_a_new_version_at_once(
    unpolled, two_versions, two_class_zip
):
    first, second = two_versions
    with app_client() as mover, app_client() as other:
        assert predict(other)["model_id"] == second["id"]  # latest, loaded now
        move(mover, "shapes", "production", first["id"])
        # The first request after the move: the old version is loaded, the poll an hour off.
        assert predict(other)["model_id"] == first["id"]
        assert predict(other, "shapes")["model_id"] == first["id"]
        newest = train(mover, upload(mover, two_class_zip, "d.zip").json()["id"], name="newest")
        assert predict(other)["model_id"] == newest["id"]  # the task's newest name now

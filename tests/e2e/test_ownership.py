"""Two teams on one service, through the real stack on PostgreSQL: each train key's
datasets, jobs and model names are its own, admin reaches all, and only a deploy key (or
admin) changes what an alias serves. Predictions run through both ways in (the lane, and
the app), since another key's model must be refused on each."""

import io
import uuid

import httpx
import pytest
import torch

from tests.conftest import ADMIN_KEY, bearer
from tests.e2e.conftest import SENTIMENT_JOB, wait_for_job

pytestmark = [pytest.mark.e2e, pytest.mark.predicts]


def new_key(api: httpx.Client, scope: str) -> dict:
    created = api.post("/keys", json={"scope": scope, "name": f"{scope} {uuid.uuid4().hex[:6]}"})
    assert created.status_code == 201, created.text
    return created.json()


def predict(url: str, token: str, model: str | None = None) -> httpx.Response:
    body = {"text": "a wonderful delight"} | ({"model": model} if model else {})
    return httpx.post(f"{url}/predict", json=body, headers=bearer(token))


@pytest.fixture
def team_a(api, stack, sentiment_csv):
    """Team A's train key with a dataset and two trained versions of its own model name,
    and a third job still open."""
    key = new_key(api, "train")
    with stack.client(key["key"]) as client:
        # Words of team A's own, which its checkpoints' vocabulary holds.
        own = "".join(f"zebra secret {uuid.uuid4().hex},positive\n" for _ in range(10))
        uploaded = client.post("/datasets", files={"file": ("a.csv", sentiment_csv + own.encode())})
        assert uploaded.status_code == 201, uploaded.text
        dataset_id = uploaded.json()["id"]
        name = f"team-a-{uuid.uuid4().hex[:6]}"
        spec = {**SENTIMENT_JOB, "dataset_id": dataset_id, "name": name}
        versions = []
        for seed in (0, 1):
            created = client.post("/jobs", json={**spec, "seed": seed})
            assert created.status_code == 201, created.text
            job = wait_for_job(client, stack, created.json()["id"])
            assert job["status"] == "succeeded", job["error"]
            versions.append(job["model_id"])
        # Long enough to be open when cancelled; a failed test leaves it a minute at most.
        hours = SENTIMENT_JOB["hyperparameters"] | {"epochs": 200}  # the ceiling (settings)
        too_long = {"hyperparameters": hours, "limits": {"max_run_seconds": 60}}
        opened = client.post("/jobs", json={**spec, **too_long})
        assert opened.status_code == 201, opened.text
        open_job = opened.json()["id"]
    return {
        "key": key,
        "dataset_id": dataset_id,
        "name": name,
        "versions": versions,
        "job_id": open_job,
    }


def test_a_train_key_reaches_none_of_another_keys_things_and_admin_reaches_all(
    api, stack, team_a, sentiment_csv
):
    team_b = new_key(api, "train")
    b_predict = new_key(api, "predict")
    name, (v1, v2), job_id = team_a["name"], team_a["versions"], team_a["job_id"]
    b = stack.client(team_b["key"])
    # First, while A's third job is still open: B cannot cancel it, admin can.
    assert b.post(f"/jobs/{job_id}/cancel").status_code == 404
    assert api.post(f"/jobs/{job_id}/cancel").status_code in (200, 202)
    b_dataset = b.post("/datasets", files={"file": ("b.csv", sentiment_csv)}).json()["id"]

    def status_of(client: httpx.Client, method: str, path: str, **kwargs) -> int:
        return client.request(method, path, **kwargs).status_code

    # What team B's key gets, then admin's, for each thing team A owns.
    exploits = [
        ("GET", f"/jobs/{job_id}", {}, 404, 200),
        ("GET", f"/jobs/{job_id}/events", {}, 404, 200),
        ("GET", f"/jobs/{job_id}/metrics", {}, 404, 200),
        ("GET", f"/datasets/{team_a['dataset_id']}", {}, 404, 200),
        ("GET", f"/models/{v2}", {}, 404, 200),
        ("GET", f"/models/{name}/aliases", {}, 404, 200),
        ("GET", f"/models/{v2}/weights", {}, 404, 200),
        ("GET", f"/models/{v2}/weights?format=safetensors", {}, 404, 200),
    ]
    for method, path, kwargs, for_b, for_admin in exploits:
        assert status_of(b, method, path, **kwargs) == for_b, (method, path)
        assert status_of(api, method, path, **kwargs) == for_admin, (method, path)

    # Listings leave A's things out for B, and hold them for admin.
    def ids(client: httpx.Client, path: str) -> set[str]:
        return {item["id"] for item in client.get(path, params={"limit": 200}).json()["items"]}

    assert job_id not in ids(b, "/jobs") and job_id in ids(api, "/jobs")
    assert team_a["dataset_id"] not in ids(b, "/datasets")
    assert team_a["dataset_id"] in ids(api, "/datasets")
    assert not {v1, v2} & ids(b, "/models") and {v1, v2} <= ids(api, "/models")

    # The vocabulary in A's checkpoint (its sentences' words) is admin's to read, not B's.
    weights = api.get(f"/models/{v2}/weights")
    checkpoint = torch.load(io.BytesIO(weights.content), weights_only=True)
    assert "zebra" in checkpoint["preprocessing"]["vocabulary"]["tokens"]

    # Training on A's dataset, or into A's name, is refused with 403 naming why.
    spec = {**SENTIMENT_JOB, "dataset_id": team_a["dataset_id"], "name": "b-steals"}
    on_a_data = b.post("/jobs", json=spec)
    assert on_a_data.status_code == 403 and "another key's dataset" in on_a_data.text
    into_a_name = b.post("/jobs", json={**SENTIMENT_JOB, "dataset_id": b_dataset, "name": name})
    assert into_a_name.status_code == 403 and "belongs to another key" in into_a_name.text

    # Moving, rolling back an alias and deleting a version need deploy: B gets 403.
    production = {"version_id": v1}
    move = b.put(f"/models/{name}/aliases/production", json=production)
    assert move.status_code == 403 and "'deploy'" in move.text
    assert b.post(f"/models/{name}/aliases/latest/rollback").status_code == 403
    assert b.delete(f"/models/{v1}").status_code == 403

    # Predicting with A's name: the lane and the app both answer B's predict key 404,
    # though the model is loaded and the key held (the lane's own conditions).
    assert predict(stack.url, ADMIN_KEY, name).status_code == 200  # loaded now
    for _ in range(2):  # the first reads the key into the cache, the second can take the lane
        refused = predict(stack.url, b_predict["key"], name)
        assert refused.status_code == 404 and name in refused.text
    default = predict(stack.url, b_predict["key"])
    assert default.status_code == 404, default.text  # no text model is shared with it yet

    # Admin does each of them.
    for version in (v2, v1):
        moved = api.put(f"/models/{name}/aliases/production", json={"version_id": version})
        assert moved.status_code == 200
    rolled_back = api.post(f"/models/{name}/aliases/production/rollback")
    assert rolled_back.status_code == 200 and rolled_back.json()["to_version_id"] == v2
    assert api.delete(f"/models/{v1}").status_code == 204  # no alias points at it now
    assert api.post("/jobs", json=spec).status_code == 201
    b.close()


def test_only_a_deploy_key_a_name_is_shared_with_moves_its_aliases(api, stack, team_a):
    name, (v1, v2) = team_a["name"], team_a["versions"]
    deploy, b_predict = new_key(api, "deploy"), new_key(api, "predict")
    with stack.client(team_a["key"]["key"]) as owner, stack.client(deploy["key"]) as release:
        assert owner.post(f"/jobs/{team_a['job_id']}/cancel").status_code in (200, 202)
        production = {"version_id": v1}
        refused = owner.put(f"/models/{name}/aliases/production", json=production)
        assert refused.status_code == 403  # the owner's train key cannot deploy
        assert release.put(f"/models/{name}/aliases/production", json=production).status_code == 404
        for key in (deploy, b_predict):
            shared = owner.post(f"/models/{name}/shares", json={"key_id": key["id"]})
            assert shared.status_code == 201, shared.text
        moved = release.put(f"/models/{name}/aliases/production", json=production)
        assert moved.status_code == 200 and moved.json()["moved_by"] == deploy["id"]
        assert release.delete(f"/models/{v2}").status_code == 409  # latest points at it
        assert owner.post(f"/models/{name}/shares", json={"key_id": "0" * 32}).status_code == 422

    def answered_by() -> str:
        answer = predict(stack.url, b_predict["key"], name)
        assert answer.status_code == 200, answer.text
        return answer.json()["model_id"]

    # The share reached the API process: production, as the deploy key set it, answers,
    # on both ways in; and the predict key's default is the one name it may read.
    assert {answered_by() for _ in range(3)} == {v1}
    default = predict(stack.url, b_predict["key"])
    assert default.status_code == 200 and default.json()["model_name"] == name

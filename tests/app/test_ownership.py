"""Ownership in-process, on the embedded defaults: shares of datasets and model names, an
upload of bytes another key owns, and the default model of a predict key. The two-team
exploits run through the real stack in tests/e2e/test_ownership.py."""

from app.store.db import get_session_factory
from tests.conftest import bearer
from tests.utils.api import IMAGE_JOB, TOP_IMAGE, new_key, train, upload
from tests.utils.jobs import queue_image_job
from workers.runner import run_job


def shares(client, path: str, headers: dict | None = None) -> list[str]:
    answer = client.get(f"{path}/shares", headers=headers)
    assert answer.status_code == 200, answer.text
    return [share["key_id"] for share in answer.json()]


def test_a_dataset_shared_is_read_and_trained_on_until_the_share_is_withdrawn(
    client, two_class_zip
):
    alice, bob = new_key(client, "train"), new_key(client, "train")
    as_alice, as_bob = bearer(alice["key"]), bearer(bob["key"])
    dataset_id = upload(client, two_class_zip, "d.zip", headers=as_alice).json()["id"]
    path = f"/datasets/{dataset_id}"
    assert client.get(path, headers=as_bob).status_code == 404
    shared = client.post(f"{path}/shares", json={"key_id": bob["id"]}, headers=as_alice)
    assert shared.status_code == 201 and [s["key_id"] for s in shared.json()] == [bob["id"]]
    assert client.post(f"{path}/shares", json={"key_id": bob["id"]}, headers=as_alice).json()
    assert shares(client, path, as_alice) == [bob["id"]]  # sharing twice: one share
    assert client.get(path, headers=as_bob).status_code == 200
    assert dataset_id in [d["id"] for d in client.get("/datasets", headers=as_bob).json()["items"]]
    version = train(client, dataset_id, name="bobs", headers=as_bob)
    assert version["name"] == "bobs"

    # Bob reads it, but sharing it on is its owner's (or admin's) to do.
    carol = new_key(client, "train")
    onward = client.post(f"{path}/shares", json={"key_id": carol["id"]}, headers=as_bob)
    assert onward.status_code == 403 and "only its owner shares it" in onward.text
    unknown = client.post(f"{path}/shares", json={"key_id": "f" * 32}, headers=as_alice)
    assert unknown.status_code == 422 and "not the id of a key" in unknown.text
    assert client.post(f"{path}/shares", json={"key_id": carol["id"]}).status_code == 201

    withdrawn = client.delete(f"{path}/shares/{bob['id']}", headers=as_alice)
    assert withdrawn.status_code == 204
    assert client.get(path, headers=as_bob).status_code == 404
    assert client.get(f"/models/{version['id']}", headers=as_bob).status_code == 200  # kept
    assert client.delete(f"{path}/shares/{bob['id']}", headers=as_alice).status_code == 404
    assert shares(client, path) == [carol["id"]]


def test_uploading_bytes_another_key_owns_answers_that_dataset_shared(client, two_class_zip):
    alice, bob = (bearer(new_key(client, "train")["key"]) for _ in range(2))
    first = upload(client, two_class_zip, "d.zip", headers=alice)
    again = upload(client, two_class_zip, "copy.zip", headers=bob)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert client.get(f"/datasets/{first.json()['id']}", headers=bob).status_code == 200


def test_a_predict_keys_default_model_is_the_newest_name_it_may_read(client, two_class_zip):
    """Admin trains the newest image model; a predict key with only an older name shared
    with it goes on answering from that name, and from nothing before the share."""
    alice = new_key(client, "train")
    viewer = new_key(client, "predict")
    as_alice = bearer(alice["key"])
    dataset_id = upload(client, two_class_zip, "d.zip", headers=as_alice).json()["id"]
    alices = train(client, dataset_id, name="alices", headers=as_alice)
    newest = train(client, dataset_id, name="admins")  # admin reads every dataset

    def default_for(token: str | None):
        headers = bearer(token) if token else None
        return client.post("/predict", files={"file": ("x.png", TOP_IMAGE)}, headers=headers)

    assert default_for(None).json()["model_id"] == newest["id"]  # the admin key's default
    before = default_for(viewer["key"])
    assert before.status_code == 404 and "of this key's or shared with it" in before.text
    shared = client.post("/models/alices/shares", json={"key_id": viewer["id"]}, headers=as_alice)
    assert shared.status_code == 201
    assert default_for(viewer["key"]).json()["model_id"] == alices["id"]
    assert default_for(alice["key"]).status_code == 403  # a train key does not predict
    unshared = client.delete(f"/models/alices/shares/{viewer['id']}", headers=as_alice)
    assert unshared.status_code == 204 and default_for(viewer["key"]).status_code == 404


def test_a_name_whose_versions_no_key_made_stays_admins(client, embedded_settings, two_class_zip):
    """Versions trained without the API (no key) leave their name admin's: a train key
    cannot take it over, and with it their weights."""
    with get_session_factory()() as session:
        job_id = queue_image_job(session, embedded_settings, two_class_zip, name="legacy")
    run_job(job_id)
    alice = bearer(new_key(client, "train")["key"])
    dataset_id = upload(client, two_class_zip, "d.zip", headers=alice).json()["id"]
    spec = {**IMAGE_JOB, "dataset_id": dataset_id, "name": "legacy"}
    taken = client.post("/jobs", json=spec, headers=alice)
    assert taken.status_code == 403 and "belongs to another key" in taken.text
    assert client.get(f"/models/{job_id}", headers=alice).status_code == 404
    assert client.get(f"/models/{job_id}").status_code == 200

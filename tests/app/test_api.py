"""The HTTP API in-process on the embedded defaults: SQLite and the file-system broker."""

import io

import numpy as np
import pytest
from PIL import Image

from app.broker import make_celery
from app.store.db import get_session_factory
from app.store.evaluations import claim_evaluation
from app.sweeper import end_stalled_evaluations, resend_lost_messages
from tests.conftest import app_client, face_set_zip, image_zip
from tests.utils.api import IMAGE_JOB, TOP_IMAGE, train, upload
from workers.evaluation import run_evaluation
from workers.runner import run_job


def queued_messages(settings) -> list:
    return [p for p in settings.broker_dir.iterdir() if p.is_file()]


def test_upload_is_stored_once_by_content(client, two_class_zip):
    first = upload(client, two_class_zip, "shapes.zip", name="shapes")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["task"] == "image_classification" and body["classes"] == ["bottom", "top"]
    assert body["counts"]["test"] == {"bottom": 5, "top": 5} and len(body["sha256"]) == 64
    again = upload(client, two_class_zip, "copy.zip")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert client.get(f"/datasets/{body['id']}").json()["name"] == "shapes"
    assert [d["id"] for d in client.get("/datasets").json()["items"]] == [body["id"]]


def test_an_upload_answers_and_keeps_what_it_skipped(client):
    faces = face_set_zip(3, 2, size=(16, 12))
    first = upload(client, faces, "faces.zip")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["classes"] == ["s1", "s2", "s3"]
    assert body["details"] == {"channels": 1, "height": 16, "width": 12}
    skipped = {"hidden": 1, "not_an_image": 1, "examples": ["README"]}
    assert body["skipped"] == skipped
    assert client.get(f"/datasets/{body['id']}").json()["skipped"] == skipped
    assert upload(client, faces, "again.zip").json()["skipped"] == skipped
    nothing = upload(client, image_zip({"README": b"hi", "a/notes.txt": b"x"}), "docs.zip")
    assert nothing.status_code == 422
    assert "no image files (2 files are not images" in nothing.json()["detail"]


def test_listing_pages_newest_first(client, sentiment_csv):
    ids = [
        upload(client, sentiment_csv + f"extra {i},positive\n".encode(), "t.csv").json()["id"]
        for i in range(3)
    ]
    page = client.get("/datasets", params={"limit": 2}).json()
    rest = client.get("/datasets", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [d["id"] for d in page["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None
    assert client.get("/datasets", params={"cursor": "nonsense"}).status_code == 422


def test_rejected_uploads_store_nothing(client, embedded_settings):
    corrupt = upload(client, b"PK\x03\x04" + b"\0" * 64, "bad.zip")
    assert corrupt.status_code == 422 and "zip" in corrupt.json()["detail"]
    unsupported = upload(client, b"\x00\x01binary\x02", "blob.bin")
    assert unsupported.status_code == 415
    not_multipart = client.post("/datasets", json={"file": "x"})
    assert not_multipart.status_code == 415 and "multipart" in not_multipart.json()["detail"]
    bad_resize = upload(client, b"text,label\n", "t.csv", resize="big")
    assert bad_resize.status_code == 422 and bad_resize.json()["detail"][0]["loc"][-1] == "resize"
    assert client.get("/datasets").json()["items"] == []
    assert not list((embedded_settings.artifacts_dir / "datasets").glob("*"))


def test_uploads_over_the_limit_are_refused(monkeypatch, embedded_settings, two_class_zip):
    monkeypatch.setattr(embedded_settings, "max_upload_bytes", 1000)
    with app_client() as client:
        response = upload(client, two_class_zip, "big.zip")
    assert response.status_code == 413 and "1000 bytes" in response.json()["detail"]


def test_chunked_uploads_over_the_limit_are_refused(monkeypatch, embedded_settings):
    monkeypatch.setattr(embedded_settings, "max_upload_bytes", 1000)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.csv"'
        f"\r\n\r\ntext,label\n" + "word,pos\n" * 500 + f"\r\n--{boundary}--\r\n"
    ).encode()

    def chunks():
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    with app_client() as client:
        response = client.post(
            "/datasets",
            content=chunks(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 413 and "1000 bytes" in response.json()["detail"]
    assert "content-length" not in response.request.headers


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"arch": "alexnet"}}, "arch"),
        ({"hyperparameters": {"epochs": 0}}, "epochs"),
        ({"hyperparameters": {"optimizer": "rmsprop"}}, "optimizer"),
        ({"task": "text_sentiment"}, "model.arch 'tutorial_cnn' is for image_classification"),
        ({"device": "tpu"}, "device"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_specs_are_422_naming_the_field(client, two_class_zip, change, field):
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    response = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id, **change})
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


def test_job_must_name_a_dataset_of_its_task(client, sentiment_csv):
    unknown = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": "nope"})
    assert unknown.status_code == 422 and "dataset_id 'nope'" in unknown.json()["detail"]
    text_id = upload(client, sentiment_csv, "t.csv").json()["id"]
    mismatch = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": text_id})
    assert mismatch.status_code == 422 and "text_sentiment data" in mismatch.json()["detail"]


def test_a_job_its_dataset_cannot_validate_is_422_saying_why(client, sentiment_csv):
    two_photos = face_set_zip(2, 1, size=(16, 16))
    dataset_id = upload(client, two_photos, "tiny.zip").json()["id"]
    too_small = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id})
    assert too_small.status_code == 422
    assert too_small.json()["detail"] == (
        "the dataset is too small to hold out validation examples: holding out 1 of its 2 "
        "training examples (validation.fraction 0.1) would leave one of its 2 classes with "
        "none to learn from; upload more examples of some classes, a test split (train/ and "
        "test/ folders), or give a validation.dataset_id"
    )
    text_id = upload(client, sentiment_csv, "t.csv").json()["id"]
    no_test_split = client.post(
        "/jobs",
        json={
            **IMAGE_JOB,
            "task": "text_sentiment",
            "model": {"arch": "bag_of_embeddings"},
            "dataset_id": text_id,
            "validation": {"source": "test_split"},
        },
    )
    assert no_test_split.status_code == 422 and "has no test split" in no_test_split.text
    assert client.get("/jobs").json()["items"] == []


def test_created_job_is_stored_and_queued(client, embedded_settings, two_class_zip):
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    created = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id})
    assert created.status_code == 201
    job = created.json()
    assert job["status"] == "queued" and job["epochs"] == 2 and job["history"] == []
    assert len(queued_messages(embedded_settings)) == 1
    stored = client.get(f"/jobs/{job['id']}").json()
    assert stored["spec"]["model"]["arch"] == "tutorial_cnn"
    assert stored["created_at"].endswith(("Z", "+00:00"))  # UTC, even read back from SQLite
    assert client.get("/jobs").json()["items"][0]["id"] == job["id"]
    assert client.get("/jobs/unknown").status_code == 404


def test_predict_answers_from_the_latest_model(client, two_class_zip, sentiment_csv):
    image = TOP_IMAGE
    missing = client.post("/predict", files={"file": ("x.png", image)})
    assert missing.status_code == 404 and "no trained image_classification" in missing.text
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    job_id = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"]
    run_job(job_id)  # what the worker does with the queued id
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and len(job["history"]) == 2 and job["model_id"]
    answer = client.post("/predict", files={"file": ("x.png", image)}, data={"top_k": "2"})
    assert answer.status_code == 200, answer.text
    prediction = answer.json()
    assert prediction["label"] == "top" and prediction["job_id"] == job_id
    assert [p["label"] for p in prediction["top_k"]] in (["top", "bottom"], ["bottom", "top"])
    by_job = client.post("/predict", files={"file": ("x.png", image)}, data={"model": job_id})
    assert by_job.json()["model_id"] == job["model_id"]

    text_id = upload(client, sentiment_csv, "t.csv").json()["id"]
    text_job = client.post(
        "/jobs",
        json={
            "task": "text_sentiment",
            "dataset_id": text_id,
            "model": {"arch": "bag_of_embeddings"},
            "text": {"min_freq": 1},
            "hyperparameters": {"epochs": 3, "optimizer": "adam", "lr": 0.05, "batch_size": 8},
        },
    )
    run_job(text_job.json()["id"])
    texts = client.post("/predict", json={"texts": ["truly great delight", "awful mess"]})
    assert [p["label"] for p in texts.json()] == ["positive", "negative"]
    one = client.post("/predict", json={"text": "wonderful"})
    assert one.json()["label"] == "positive" and len(one.json()["top_k"]) == 2


def test_predict_rejects_bad_requests_clearly(client):
    assert (
        client.post("/predict", content=b"hi", headers={"content-type": "text/plain"}).status_code
        == 415
    )
    both = client.post("/predict", json={"text": "a", "texts": ["b"]})
    assert both.status_code == 422 and "exactly one" in both.text
    no_file = client.post("/predict", files={"other": ("x", b"1")})
    assert no_file.status_code == 422 and "'file'" in no_file.text
    unknown = client.post("/predict", json={"text": "a", "model": "nope"})
    assert unknown.status_code == 404 and "'nope'" in unknown.text


def test_predict_refuses_non_images_and_models_of_the_other_task(client, two_class_zip):
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    job_id = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"]
    run_job(job_id)
    not_image = client.post("/predict", files={"file": ("x.png", io.BytesIO(b"plain text"))})
    assert not_image.status_code == 422 and "not a decodable image" in not_image.text
    wrong_task = client.post("/predict", json={"text": "hello", "model": job_id})
    assert wrong_task.status_code == 422 and "image_classification model" in wrong_task.text


def test_docs_and_openapi_show_an_example_for_every_request_body(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    bodies = [
        op["requestBody"]
        for path in schema["paths"].values()
        for op in path.values()
        if "requestBody" in op
    ]
    # datasets, jobs, sweeps, keys, predict, explain, an alias move, an evaluation, KServe
    # infer (with and without a version), two shares
    assert len(bodies) == 12
    for body in bodies:
        for media in body["content"].values():
            ref = media["schema"].get("$ref", "").rsplit("/", 1)[-1]
            component = schema["components"]["schemas"].get(ref, {})
            assert media.get("examples") or component.get("examples"), body
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"


def test_a_job_accepted_while_the_broker_is_down_is_sent_once_it_is_back(
    monkeypatch, embedded_settings, two_class_zip
):
    monkeypatch.setattr(embedded_settings, "broker_url", "redis://127.0.0.1:1/0")  # nothing there
    with app_client() as client:
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        response = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id})
        assert response.status_code == 201 and response.json()["status"] == "queued"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "broker" in ready.json()["detail"]
    monkeypatch.setattr(embedded_settings, "broker_url", "filesystem://")  # the broker is back
    celery = make_celery(embedded_settings)
    with get_session_factory()() as session:
        assert resend_lost_messages(session, celery, grace_seconds=0) == 1
        assert resend_lost_messages(session, celery, grace_seconds=0) == 0  # now accounted for
    assert len(queued_messages(embedded_settings)) == 1


def test_a_dataset_shows_a_few_examples_of_each_class(client, two_class_zip, sentiment_csv):
    images = upload(client, two_class_zip, "shapes.zip").json()
    shown = client.get(f"/datasets/{images['id']}/examples", params={"per_class": 3}).json()
    assert [c["name"] for c in shown["classes"]] == ["bottom", "top"]
    for each in shown["classes"]:
        assert len(each["examples"]) == 3 and {e["split"] for e in each["examples"]} == {"train"}
        for example in each["examples"]:
            thumbnail_path = example["thumbnail"]
            thumbnail = client.get(thumbnail_path)
            assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
            pixels = np.asarray(Image.open(io.BytesIO(thumbnail.content)).convert("L"))
            assert pixels.shape == (16, 16)
            # each class's own images: "top" is bright in its upper half, "bottom" in its lower
            upper_brighter = pixels[:8].mean() > pixels[8:].mean()
            assert upper_brighter == (each["name"] == "top")

    texts = upload(client, sentiment_csv, "moods.csv").json()
    shown = client.get(f"/datasets/{texts['id']}/examples").json()
    rows = {c["name"]: [e["text"] for e in c["examples"]] for c in shown["classes"]}
    assert len(rows["positive"]) == 4 and all("wonderful" in text for text in rows["positive"])
    assert all("awful" in text for text in rows["negative"])
    none = client.get(f"/datasets/{texts['id']}/examples/0/thumbnail")
    assert none.status_code == 404 and "holds texts" in none.json()["detail"]
    past = client.get(f"/datasets/{images['id']}/examples/50/thumbnail")
    assert past.status_code == 404 and "has 50 examples" in past.json()["detail"]
    assert client.get(f"/datasets/{images['id']}/examples?per_class=17").status_code == 422
    as_bytes = client.get(thumbnail_path, headers={"Accept": "application/octet-stream"})
    assert as_bytes.headers["content-type"] == "application/octet-stream"
    assert as_bytes.content == thumbnail.content


def test_an_evaluation_runs_in_the_worker_and_a_lost_message_is_sent_again(
    embedded_settings, two_class_zip
):
    """Asked over HTTP, its message lost by the broker, re-sent by the sweep, then run by
    the worker's code: the report counts the dataset's test split."""
    with app_client() as client:
        dataset = upload(client, two_class_zip, "d.zip").json()
        version = train(client, dataset["id"])
        for message in queued_messages(embedded_settings):
            message.unlink()  # the job's, long consumed; now the broker holds nothing
        asked = client.post(
            f"/models/{version['id']}/evaluations", json={"dataset_id": dataset["id"]}
        )
        assert asked.status_code == 202, asked.text
        assert asked.json()["split"] == "test"
        for message in queued_messages(embedded_settings):
            message.unlink()  # lost
        celery = make_celery(embedded_settings)
        with get_session_factory()() as session:
            assert resend_lost_messages(session, celery, grace_seconds=0) == 1
            assert resend_lost_messages(session, celery, grace_seconds=0) == 0
        assert len(queued_messages(embedded_settings)) == 1
        run_evaluation(asked.json()["id"])
        run_evaluation(asked.json()["id"])  # a message delivered twice runs it once
        evaluation = client.get(f"/models/{version['id']}/evaluations/{asked.json()['id']}").json()
        assert evaluation["status"] == "succeeded", evaluation["error"]
        test_examples = sum(dataset["counts"]["test"].values())
        assert sum(map(sum, evaluation["report"]["confusion_matrix"]["counts"])) == test_examples
        assert evaluation["started_at"] <= evaluation["finished_at"]
        # One whose worker died mid-run would stay running: the sweep ends it, saying so.
        stalled = client.post(
            f"/models/{version['id']}/evaluations", json={"dataset_id": dataset["id"]}
        ).json()["id"]
        with get_session_factory()() as session:
            assert claim_evaluation(session, stalled) is not None  # a worker took it, then died
            assert end_stalled_evaluations(session, max_seconds=3600) == []  # not yet
            assert end_stalled_evaluations(session, max_seconds=1e-6) == [stalled]
        ended = client.get(f"/models/{version['id']}/evaluations/{stalled}").json()
        assert ended["status"] == "failed" and "ask for the evaluation again" in ended["error"]

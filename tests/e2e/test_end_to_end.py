"""Upload slices of the real data sets, train in the real worker, predict over HTTP."""

import csv
import io
import zipfile
from collections import defaultdict

import numpy as np
import pytest

from tests.conftest import class_pattern, face_set_zip, image_zip, png_bytes
from tests.e2e.conftest import mnist_upload, wait_for_job

pytestmark = pytest.mark.e2e


def cifar_slice(shared_data, per_class: int, test_per_class: int) -> bytes:
    """train/<class>/… and test/<class>/… from the real zips, the first images of each class."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for split, count in (("train", per_class), ("test", test_per_class)):
            taken: defaultdict[str, int] = defaultdict(int)
            with zipfile.ZipFile(shared_data / "cifar10" / f"cifar10-{split}.zip") as source:
                for info in source.infolist():
                    label = info.filename.split("/")[0]
                    if not info.is_dir() and taken[label] < count:
                        taken[label] += 1
                        target.writestr(f"{split}/{info.filename}", source.read(info))
    return out.getvalue()


def mr_slice(shared_data, per_class: int) -> bytes:
    with open(shared_data / "rt-polarity" / "rt-polarity.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    chosen = [r for r in rows if r["label"] == "positive"][:per_class] + [
        r for r in rows if r["label"] == "negative"
    ][:per_class]
    out = io.StringIO()
    writer = csv.DictWriter(out, ["text", "label"])
    writer.writeheader()
    writer.writerows(chosen)
    return out.getvalue().encode()


def train(api, stack, dataset_id: str, task: str, arch: str, **spec) -> dict:
    response = api.post(
        "/jobs", json={"task": task, "dataset_id": dataset_id, "model": {"arch": arch}, **spec}
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "queued"
    return wait_for_job(api, stack, response.json()["id"])


def assert_history(job: dict, epochs: int) -> None:
    assert job["status"] == "succeeded", job["error"]
    assert [h["epoch"] for h in job["history"]] == list(range(1, epochs + 1))
    for entry in job["history"]:
        assert entry["train_loss"] > 0 and entry["val_loss"] > 0
        assert 0 <= entry["val_accuracy"] <= 1
    assert job["metrics"] == job["history"][-1]
    assert job["best_val_accuracy"] == max(h["val_accuracy"] for h in job["history"])
    assert job["started_at"] and job["finished_at"] and job["duration_seconds"] > 0


@pytest.mark.predicts
def test_mnist_idx_upload_train_and_predict_digits(api, stack, mnist):
    uploaded = api.post(
        "/datasets", files=mnist_upload(mnist, 4000, 500), data={"name": "mnist-slice"}
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["format"] == "idx" and dataset["classes"] == [str(d) for d in range(10)]
    assert sum(dataset["counts"]["test"].values()) == 500

    job = train(
        api,
        stack,
        dataset["id"],
        "image_classification",
        "tutorial_cnn",
        hyperparameters={"epochs": 3, "batch_size": 64, "lr": 0.05},
    )
    assert_history(job, 3)
    assert job["best_val_accuracy"] > 0.85  # on the 500 t10k digits

    # 100 digits the job never saw: served answers as good as its validation said
    digits = mnist["t10k-images-idx3"][1000:1100]
    labels = mnist["t10k-labels-idx1"][1000:1100]
    answers = [api.post("/predict", files={"file": ("d.png", png_bytes(d))}).json() for d in digits]
    assert all(a["job_id"] == job["id"] for a in answers)
    correct = sum(a["label"] == str(label) for a, label in zip(answers, labels, strict=True))
    assert correct >= 100 * (job["best_val_accuracy"] - 0.1), (correct, job["best_val_accuracy"])


@pytest.mark.predicts
def test_cifar10_zip_with_test_folder_trains_and_serves_jpegs(api, stack, shared_data):
    archive = cifar_slice(shared_data, per_class=200, test_per_class=30)
    dataset = api.post("/datasets", files={"file": ("cifar.zip", archive)}).json()
    assert dataset["counts"]["train"]["cat"] == 200 and dataset["counts"]["test"]["cat"] == 30
    assert dataset["details"] == {"channels": 3, "height": 32, "width": 32}

    job = train(
        api,
        stack,
        dataset["id"],
        "image_classification",
        "tutorial_cnn",
        hyperparameters={"epochs": 2, "batch_size": 32, "lr": 0.01},
    )
    assert_history(job, 2)
    assert job["history"][-1]["train_loss"] < job["history"][0]["train_loss"]

    with zipfile.ZipFile(shared_data / "cifar10" / "cifar10-test.zip") as source:
        jpeg = source.read(next(i for i in source.infolist() if not i.is_dir()))
    answer = api.post(
        "/predict", files={"file": ("x.jpg", jpeg)}, data={"model": job["id"], "top_k": "10"}
    ).json()
    assert answer["label"] in dataset["classes"] and len(answer["top_k"]) == 10
    assert abs(sum(p["probability"] for p in answer["top_k"]) - 1) < 1e-3


@pytest.mark.predicts
def test_mr_sentiment_holdout_and_text_predictions(api, stack, shared_data):
    dataset = api.post("/datasets", files={"file": ("mr.csv", mr_slice(shared_data, 1500))}).json()
    assert dataset["task"] == "text_sentiment"
    assert dataset["counts"] == {"train": {"negative": 1500, "positive": 1500}}

    job = train(
        api,
        stack,
        dataset["id"],
        "text_sentiment",
        "bag_of_embeddings",
        hyperparameters={"epochs": 4, "batch_size": 32, "optimizer": "adam", "lr": 0.005},
        validation={"source": "holdout", "fraction": 0.1},
    )
    assert_history(job, 4)
    assert job["best_val_accuracy"] > 0.6

    texts = [
        "a moving , beautifully acted and wonderful film",
        "a dull , boring and painfully bad mess",
    ]
    answers = api.post("/predict", json={"texts": texts}).json()
    assert [a["label"] for a in answers] == ["positive", "negative"]
    assert all(a["model_id"] == job["model_id"] for a in answers)


@pytest.mark.predicts
def test_a_face_set_of_pgm_folders_trains_and_predicts(api, stack):
    """40 people of 9 photos each, as the AT&T set is distributed: s1/1.pgm, …, a README."""
    uploaded = api.post("/datasets", files={"file": ("att_faces.zip", face_set_zip(40, 9))})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert len(dataset["classes"]) == 40 and set(dataset["counts"]["train"].values()) == {9}
    assert dataset["details"] == {"channels": 1, "height": 112, "width": 92}
    assert dataset["skipped"] == {"hidden": 1, "not_an_image": 1, "examples": ["README"]}

    job = train(
        api,
        stack,
        dataset["id"],
        "image_classification",
        "tutorial_cnn",
        hyperparameters={"epochs": 2},
    )
    assert_history(job, 2)
    # 360 photos, 36 held out: batches of 324 // 16, the recipe's 64 being too many.
    assert job["spec"]["hyperparameters"]["batch_size"] == 20
    assert job["spec_sources"]["hyperparameters.batch_size"].startswith("data: 324 training")
    assert job["spec_sources"]["hyperparameters.epochs"] == "given"

    photo = zipfile.ZipFile(io.BytesIO(face_set_zip(40, 9))).read("s7/3.pgm")
    answer = api.post(
        "/predict", files={"file": ("3.pgm", photo)}, data={"model": job["id"], "top_k": "40"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["job_id"] == job["id"]
    assert sorted(p["label"] for p in answer.json()["top_k"]) == sorted(dataset["classes"])


def test_a_dataset_too_small_to_validate_is_refused_when_the_job_is_posted(api, stack):
    dataset = api.post("/datasets", files={"file": ("two.zip", face_set_zip(2, 1))}).json()
    assert dataset["counts"] == {"train": {"s1": 1, "s2": 1}}
    refused = api.post(
        "/jobs",
        json={
            "task": "image_classification",
            "dataset_id": dataset["id"],
            "model": {"arch": "tutorial_cnn"},
            "hyperparameters": {"epochs": 1},
        },
    )
    assert refused.status_code == 422
    assert "too small to hold out validation examples" in refused.json()["detail"]


def test_a_bad_job_fails_in_the_worker_with_a_reason(api, stack):
    rng = np.random.default_rng(8)
    small = {f"{c}/{i}.png": png_bytes(class_pattern(c, 8, rng)) for c in (0, 1) for i in range(4)}
    dataset = api.post("/datasets", files={"file": ("8x8.zip", image_zip(small))}).json()
    job = train(api, stack, dataset["id"], "image_classification", "tutorial_cnn")
    assert job["status"] == "failed" and "at least 16x16, not 8x8" in job["error"]
    assert job["history"] == [] and job["model_id"] is None
    listed = api.get("/jobs", params={"limit": 1}).json()["items"]
    assert listed[0]["id"] == job["id"]  # newest first


def test_bad_uploads_over_http_store_nothing(api, stack):
    before = api.get("/datasets").json()["items"]
    corrupt = api.post("/datasets", files={"file": ("x.zip", b"PK\x03\x04broken")})
    one_class = api.post("/datasets", files={"file": ("t.csv", b"text,label\nhi,pos\n")})
    assert corrupt.status_code == 422 and one_class.status_code == 422
    assert "two classes" in one_class.json()["detail"]
    assert api.get("/datasets").json()["items"] == before


def test_fast_resnet_recipe_and_frozen_encoder_through_the_service(api, stack, shared_data):
    images = api.post("/datasets", files={"file": ("c.zip", cifar_slice(shared_data, 40, 10))})
    job = train(
        api,
        stack,
        images.json()["id"],
        "image_classification",
        "fast_resnet",
        hyperparameters={
            "epochs": 2,
            "batch_size": 64,
            "lr": 0.1,
            "nesterov": True,
            "lr_schedule": "onecycle",
            "label_smoothing": 0.1,
            "grad_clip_norm": 5.0,
        },
        augmentation={"crop_padding": 4, "horizontal_flip": True},
    )
    assert_history(job, 2)
    assert job["spec"]["hyperparameters"]["precision"] == "auto"

    texts = api.post("/datasets", files={"file": ("mr.csv", mr_slice(shared_data, 100))})
    job = train(
        api,
        stack,
        texts.json()["id"],
        "text_sentiment",
        "minilm_frozen",
        hyperparameters={"epochs": 5, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
        validation={"source": "holdout", "fraction": 0.2},
    )
    assert_history(job, 5)
    assert job["best_val_accuracy"] >= 0.7  # 40 sentences; chance is 0.5
    answers = api.post(
        "/predict",
        json={"texts": ["a moving and wonderful film", "a dull, boring mess"], "model": job["id"]},
    ).json()
    assert [a["label"] for a in answers] == ["positive", "negative"]

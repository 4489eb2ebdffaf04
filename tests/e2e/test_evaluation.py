"""Judging a model through the real service: the served epoch's report, an evaluation on
new data in the worker (checked against scikit-learn on /predict's answers), /explain, and
the data checks of an upload."""

import base64
import csv
import io

import pytest
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from tests.conftest import idx_bytes, png_bytes
from tests.e2e.conftest import SENTIMENT_JOB, mnist_upload, wait_for_job
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e

DIGITS = [str(d) for d in range(10)]
NEW_DIGITS = slice(1000, 1200)  # MNIST test digits the job never saw


@pytest.fixture(scope="module")
def mnist_model(api, stack, mnist):
    upload = api.post("/datasets", data={"name": "mnist-eval"}, files=mnist_upload(mnist, 600, 200))
    assert upload.status_code == 201, upload.text
    job = api.post(
        "/jobs",
        json={
            "task": "image_classification",
            "dataset_id": upload.json()["id"],
            "name": "mnist-eval",
            "model": {"arch": "tutorial_cnn"},
            "hyperparameters": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        },
    )
    assert job.status_code == 201, job.text
    ended = wait_for_job(api, stack, job.json()["id"])
    assert ended["status"] == "succeeded", ended["error"]
    return ended


def _new_digits(api, mnist) -> tuple[str, list[bytes], list[str]]:
    """The digits as a dataset of their own (a training split only), as PNGs, and their labels."""
    images = mnist["t10k-images-idx3"][NEW_DIGITS]
    labels = mnist["t10k-labels-idx1"][NEW_DIGITS]
    files = [
        ("file", ("new-images-idx3-ubyte.gz", idx_bytes(images))),
        ("file", ("new-labels-idx1-ubyte.gz", idx_bytes(labels))),
    ]
    answer = api.post("/datasets", data={"name": "new digits"}, files=files)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], [png_bytes(image) for image in images], [str(x) for x in labels]


def _evaluated(api, model_id: str, evaluation_id: str) -> dict:
    def ended():
        answer = api.get(f"/models/{model_id}/evaluations/{evaluation_id}")
        assert answer.status_code == 200, answer.text
        return answer.json() if answer.json()["status"] in ("succeeded", "failed") else None

    return wait_until(ended, timeout=120, what=f"evaluation {evaluation_id} to end")


def test_the_served_epoch_is_judged_once_with_the_job_and_its_version(api, mnist_model):
    report = mnist_model["evaluation"]
    assert report["examples"] == 200
    matrix = report["confusion_matrix"]
    assert matrix["classes"] == DIGITS
    assert sum(map(sum, matrix["counts"])) == 200
    assert sum(row["support"] for row in report["per_class"]) == 200
    assert report["accuracy"] == pytest.approx(mnist_model["best_val_accuracy"])
    assert report["accuracy"] <= report["top_k_accuracy"] <= 1
    bins = report["calibration"]["bins"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 200
    assert 0 <= report["calibration"]["expected_calibration_error"] <= 1
    version = api.get(f"/models/{mnist_model['model_id']}").json()
    assert version["evaluation"] == report


def test_an_evaluation_on_new_data_agrees_with_scikit_learn_on_the_served_answers(
    api, stack, mnist, mnist_model
):
    dataset_id, pngs, labels = _new_digits(api, mnist)
    model_id = mnist_model["model_id"]
    asked = api.post(f"/models/{model_id}/evaluations", json={"dataset_id": dataset_id})
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "queued" and asked.json()["split"] == "all"
    evaluation = _evaluated(api, model_id, asked.json()["id"])
    assert evaluation["status"] == "succeeded", evaluation["error"]
    report = evaluation["report"]
    assert sum(map(sum, report["confusion_matrix"]["counts"])) == len(labels)
    answers = api.post(
        "/predict",
        files=[("files", (f"{i}.png", png)) for i, png in enumerate(pngs)]
        + [("model", (None, model_id))],
    )
    assert answers.status_code == 200, answers.text
    predicted = [answer["label"] for answer in answers.json()]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, zero_division=0
    )
    for i, row in enumerate(report["per_class"]):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )
    for wrong in report["most_confidently_wrong"]:
        assert labels[wrong["index"]] == wrong["label"] != wrong["predicted"]
        assert predicted[wrong["index"]] == wrong["predicted"]
    assert report["throughput"]["examples_per_second"] > 0
    listed = api.get(f"/models/{model_id}/evaluations").json()["items"]
    assert [item["id"] for item in listed][:1] == [evaluation["id"]]


def test_a_dataset_whose_classes_are_not_the_models_is_refused(api, mnist_model, two_class_zip):
    shapes = api.post("/datasets", files={"file": ("shapes.zip", two_class_zip)}).json()
    answer = api.post(
        f"/models/{mnist_model['model_id']}/evaluations", json={"dataset_id": shapes["id"]}
    )
    assert answer.status_code == 422
    assert "are not the model's" in answer.json()["detail"]
    assert shapes["classes"][0] in answer.json()["detail"]
    unknown = api.post(f"/models/{mnist_model['model_id']}/evaluations", json={"dataset_id": "x"})
    assert unknown.status_code == 422 and "not a known dataset" in unknown.json()["detail"]


def test_an_image_explanation_is_a_map_at_the_inputs_size_and_an_overlay(api, mnist, mnist_model):
    digit = png_bytes(mnist["t10k-images-idx3"][0])
    answer = api.post(
        "/explain", files={"file": ("7.png", digit)}, data={"model": mnist_model["model_id"]}
    )
    assert answer.status_code == 200, answer.text
    explanation = answer.json()
    assert explanation["method"] == "integrated_gradients"
    assert explanation["label"] in DIGITS and explanation["model_id"] == mnist_model["model_id"]
    attribution = explanation["attribution"]
    assert len(attribution) == 28 and {len(row) for row in attribution} == {28}
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert overlay.size == (28, 28)
    # the black background of a digit is the baseline: it gets no attribution
    background = [
        attribution[y][x]
        for y in range(28)
        for x in range(28)
        if mnist["t10k-images-idx3"][0][y, x] == 0
    ]
    assert max(map(abs, background)) == 0
    # A digit sent at 56 x 84 (not the network's 28 x 28) gets its map at that size.
    wide = Image.fromarray(mnist["t10k-images-idx3"][0]).resize((84, 56))
    sent = io.BytesIO()
    wide.save(sent, format="PNG")
    larger = api.post("/explain", files={"file": ("7.png", sent.getvalue())}).json()
    assert len(larger["attribution"]) == 56 and {len(row) for row in larger["attribution"]} == {84}
    overlay = Image.open(io.BytesIO(base64.b64decode(larger["overlay_png"])))
    assert overlay.size == (84, 56)
    too_many = api.post("/explain", files=[("files", (f"{i}.png", digit)) for i in range(5)])
    assert too_many.status_code == 422
    assert "TRAINSERVE_EXPLAIN_MAX_INPUTS" in too_many.json()["detail"]


def test_a_text_explanation_scores_each_word(api, stack, sentiment_csv):
    dataset = api.post("/datasets", files={"file": ("s.csv", sentiment_csv)}).json()
    job = api.post(
        "/jobs", json={**SENTIMENT_JOB, "dataset_id": dataset["id"], "name": "mood-eval"}
    )
    assert job.status_code == 201, job.text
    ended = wait_for_job(api, stack, job.json()["id"])
    assert ended["status"] == "succeeded", ended["error"]
    answer = api.post("/explain", json={"text": "A great, wonderful film", "model": "mood-eval"})
    assert answer.status_code == 200, answer.text
    explanation = answer.json()
    assert explanation["method"] == "word_occlusion"
    assert [t["token"] for t in explanation["tokens"]] == ["a", "great", ",", "wonderful", "film"]
    long_text = " ".join(["word"] * 201)
    refused = api.post("/explain", json={"text": long_text, "model": "mood-eval"})
    assert refused.status_code == 422 and "TRAINSERVE_EXPLAIN_MAX_WORDS" in refused.text


def test_an_upload_with_50_duplicates_and_20_leaks_reports_exactly_those(api):
    train = [(f"training sentence {i}", "positive" if i % 2 else "negative") for i in range(300)]
    train += train[:50]
    test = [(f"a test sentence number {i}", "negative" if i % 3 else "positive") for i in range(80)]
    test += train[100:120]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label", "split"])
    writer.writerows([(*row, "train") for row in train] + [(*row, "test") for row in test])
    uploaded = api.post("/datasets", files={"file": ("checks.csv", out.getvalue().encode())})
    assert uploaded.status_code == 201, uploaded.text
    checks = api.get(f"/datasets/{uploaded.json()['id']}").json()["checks"]
    assert checks["duplicates"]["train"]["count"] == 50
    assert checks["duplicates"]["test"]["count"] == 0
    assert checks["leakage"]["count"] == 20
    assert checks["imbalance"]["train"]["ratio"] == 1.0  # 175 of each
    assert checks["imbalance"]["test"] == {
        "largest": {"class": "negative", "count": 63},
        "smallest": {"class": "positive", "count": 37},
        "ratio": round(63 / 37, 4),
    }

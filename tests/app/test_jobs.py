"""Job routes in-process on the embedded defaults: idempotency, cancel, listing, events, metrics."""

import json

import pytest

from app.store.db import get_session_factory
from app.store.lifecycle import claim_job
from app.store.records import record_steps
from tests.conftest import bearer
from tests.utils.api import IMAGE_JOB, new_key, upload
from workers.runner import run_job


@pytest.fixture
def image_spec(client, two_class_zip) -> dict:
    return {**IMAGE_JOB, "dataset_id": upload(client, two_class_zip, "d.zip").json()["id"]}


def test_the_same_idempotency_key_and_body_give_one_job(client, image_spec):
    headers = {"Idempotency-Key": "nightly-2026-11-28"}
    first = client.post("/jobs", json=image_spec, headers=headers)
    again = client.post("/jobs", json=image_spec, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/jobs", json={**image_spec, "seed": 7}, headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    without_key = client.post("/jobs", json=image_spec)
    assert without_key.status_code == 201 and without_key.json()["id"] != first.json()["id"]
    assert len(client.get("/jobs").json()["items"]) == 2


def test_idempotency_keys_belong_to_their_api_key(client, image_spec):
    other_key = new_key(client, "train")
    other = bearer(other_key["key"])
    shared = client.post(
        f"/datasets/{image_spec['dataset_id']}/shares", json={"key_id": other_key["id"]}
    )
    assert shared.status_code == 201
    headers = {"Idempotency-Key": "nightly"}
    mine = client.post("/jobs", json=image_spec, headers=headers)
    theirs = client.post("/jobs", json={**image_spec, "name": "theirs"}, headers=headers | other)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_cancelled_queued_job_never_starts(client, image_spec):
    job_id = client.post("/jobs", json=image_spec).json()["id"]
    cancelled = client.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["end_reason"] == "cancelled"
    run_job(job_id)  # its message arrives anyway
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["attempt"] == 0 and job["history"] == []
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200  # repeating is harmless


def test_cancelling_a_finished_job_is_409_and_unknown_is_404(client, image_spec):
    job_id = client.post("/jobs", json=image_spec).json()["id"]
    run_job(job_id)
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    refused = client.post(f"/jobs/{job_id}/cancel")
    assert refused.status_code == 409 and "succeeded" in refused.json()["detail"]
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    assert client.post("/jobs/nope/cancel").status_code == 404
    changes = client.get(f"/jobs/{job_id}/timeline").json()["changes"]
    assert [c["status"] for c in changes] == ["queued", "running", "succeeded"]
    assert changes[-1]["end_reason"] == "completed" and changes[1]["attempt"] == 1
    assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
    assert client.get("/jobs/nope/timeline").status_code == 404


def test_listing_filters_before_paging(client, image_spec):
    ids = [client.post("/jobs", json=image_spec).json()["id"] for _ in range(5)]
    for job_id in ids[:3]:
        client.post(f"/jobs/{job_id}/cancel")
    page = client.get("/jobs", params={"status": "cancelled", "limit": 2}).json()
    rest = client.get(
        "/jobs", params={"status": "cancelled", "limit": 2, "cursor": page["next_cursor"]}
    ).json()
    assert [j["id"] for j in page["items"] + rest["items"]] == ids[:3][::-1]
    assert rest["next_cursor"] is None
    both = client.get("/jobs", params=[("status", "queued"), ("status", "cancelled")]).json()
    assert len(both["items"]) == 5
    assert client.get("/jobs", params={"task": "text_sentiment"}).json()["items"] == []
    assert client.get("/jobs", params={"status": "sleeping"}).status_code == 422


def test_listing_filters_by_the_model_name(client, image_spec):
    named = client.post("/jobs", json={**image_spec, "name": "shapes"}).json()["id"]
    client.post("/jobs", json=image_spec)  # named after its task
    listed = client.get("/jobs", params={"name": "shapes"}).json()["items"]
    assert [job["id"] for job in listed] == [named]
    by_task_name = client.get("/jobs", params={"name": "image_classification"}).json()["items"]
    assert len(by_task_name) == 1 and by_task_name[0]["id"] != named


SUMMARY_FIELDS = {
    "id", "name", "task", "arch", "dataset_id", "status", "end_reason", "attempt",
    "max_attempts", "epoch", "epochs", "progress", "best_epoch", "best_val_accuracy",
    "last_val_accuracy", "last_val_loss", "model_id", "device", "error", "created_at",
    "queued_at", "started_at", "heartbeat_at", "finished_at", "duration_seconds",
    "sweep_id", "trial_number",
}  # fmt: skip


def test_a_listing_holds_summaries_and_the_job_its_history(client, image_spec):
    trained = client.post("/jobs", json={**image_spec, "name": "shapes"}).json()["id"]
    run_job(trained)
    queued = client.post("/jobs", json=image_spec).json()["id"]
    listed = {job["id"]: job for job in client.get("/jobs").json()["items"]}
    assert set(listed[trained]) == set(listed[queued]) == SUMMARY_FIELDS
    full = client.get(f"/jobs/{trained}").json()
    assert listed[trained] == {name: full[name] for name in SUMMARY_FIELDS}
    assert listed[trained]["name"] == "shapes" and listed[trained]["arch"] == "tutorial_cnn"
    assert listed[trained]["progress"] == 1.0 and listed[trained]["model_id"]
    assert listed[trained]["duration_seconds"] > 0
    assert [epoch["epoch"] for epoch in full["history"]] == [1, 2]
    assert full["metrics"] == full["history"][-1] and full["spec"]["name"] == "shapes"
    assert listed[trained]["last_val_loss"] == full["history"][-1]["val_loss"]
    assert listed[queued]["last_val_accuracy"] is None and listed[queued]["last_val_loss"] is None
    waiting = listed[queued]
    assert waiting["name"] == "image_classification"  # no name in the spec: the task's
    assert waiting["progress"] == 0.0 and waiting["model_id"] is None
    assert waiting["started_at"] is None and waiting["duration_seconds"] is None


def test_the_schema_says_a_listing_holds_summaries(client):
    schema = client.get("/openapi.json").json()
    listing = schema["paths"]["/jobs"]["get"]["responses"]["200"]["content"]
    assert listing["application/json"]["schema"]["$ref"].endswith("/JobsPublic")
    components = schema["components"]["schemas"]
    assert components["JobsPublic"]["properties"]["items"]["items"]["$ref"].endswith("/JobSummary")
    assert set(components["JobSummary"]["properties"]) == SUMMARY_FIELDS
    assert {"history", "spec"} <= set(components["JobPublic"]["properties"])


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            events.append({**fields, "id": int(fields["id"])})
    return events


def test_events_replay_a_finished_job_in_order_and_resume_after_an_id(client, image_spec):
    job_id = client.post("/jobs", json=image_spec).json()["id"]
    run_job(job_id)
    events = parse_sse(client.get(f"/jobs/{job_id}/events").text)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["event"] for e in events]
    assert kinds[0] == kinds[-1] == "status" and kinds.count("epoch") == 2
    statuses = [json.loads(e["data"])["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    steps = [json.loads(e["data"]) for e in events if e["event"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, 11))  # 40 images, batch 8, 2 epochs
    assert {s["epoch"] for s in steps} == {1, 2} and all(s["loss"] > 0 for s in steps)
    later = parse_sse(client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "5"}).text)
    assert later == events[5:]
    last_event_id = client.get(f"/jobs/{job_id}").json()["last_event_id"]
    assert last_event_id == events[-1]["id"]
    after_all = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(last_event_id)})
    assert parse_sse(after_all.text) == []
    assert client.get("/jobs/nope/events").status_code == 404


def test_metrics_are_downsampled_by_the_database(client, image_spec, embedded_settings):
    job_id = client.post("/jobs", json=image_spec).json()["id"]
    with get_session_factory()() as session:
        assert claim_job(session, job_id, "a-worker", lease_seconds=60)
        # 1000 steps of loss = step number: buckets of 100 average to their middle.
        record_steps(session, job_id, "a-worker", [(s, 1, float(s), 0.1) for s in range(1, 1001)])
    series = client.get(f"/jobs/{job_id}/metrics", params={"name": "loss", "max_points": 10})
    points = series.json()["points"]
    assert [p["step"] for p in points] == list(range(100, 1001, 100))
    assert points[0] == {"step": 100, "value": 50.5, "min": 1.0, "max": 100.0, "count": 100}
    full = client.get(f"/jobs/{job_id}/metrics", params={"name": "loss", "max_points": 5000})
    assert len(full.json()["points"]) == 1000
    assert client.get(f"/jobs/{job_id}/metrics", params={"name": "nope"}).status_code == 422


def test_several_jobs_series_come_in_one_request_and_only_the_keys_own(client, image_spec):
    """GET /series: the runs page's sparklines, bucketed as /jobs/{id}/metrics buckets."""
    first, second = (client.post("/jobs", json=image_spec).json()["id"] for _ in range(2))
    other_key = new_key(client, "train")
    client.post(f"/datasets/{image_spec['dataset_id']}/shares", json={"key_id": other_key["id"]})
    theirs = {**image_spec, "name": "theirs"}
    others = client.post("/jobs", json=theirs, headers=bearer(other_key["key"])).json()["id"]
    with get_session_factory()() as session:
        for job_id, scale in ((first, 1.0), (second, 2.0), (others, 3.0)):
            assert claim_job(session, job_id, "a-worker", lease_seconds=60)
            record_steps(
                session, job_id, "a-worker", [(s, 1, scale * s, 0.1) for s in range(1, 101)]
            )
    asked = [second, first, "f" * 32, second]
    mine = client.get(
        "/series",
        params={"job_id": [*asked, others], "max_points": 10},
        headers=bearer(new_key(client, "train")["key"]),
    )
    assert mine.status_code == 200 and mine.json() == {"name": "loss", "items": []}
    as_other = client.get(
        "/series", params={"job_id": [*asked, others]}, headers=bearer(other_key["key"])
    ).json()
    assert [series["job_id"] for series in as_other["items"]] == [others]
    admin = client.get("/series", params={"job_id": asked, "max_points": 10}).json()
    assert [series["job_id"] for series in admin["items"]] == [second, first]  # each once
    one = client.get(f"/jobs/{second}/metrics", params={"max_points": 10}).json()
    assert admin["items"][0] == one and len(one["points"]) == 10
    assert admin["items"][1]["points"][0]["value"] == 5.5  # steps 1-10 of loss = step
    too_many = client.get("/series", params={"job_id": [first] * 201})
    assert too_many.status_code == 422 and "job_id" in too_many.text
    assert client.get("/series").status_code == 422


def test_a_step_range_gets_finer_points(client, image_spec, embedded_settings):
    job_id = client.post("/jobs", json=image_spec).json()["id"]
    with get_session_factory()() as session:
        assert claim_job(session, job_id, "a-worker", lease_seconds=60)
        record_steps(session, job_id, "a-worker", [(s, 1, float(s), 0.1) for s in range(1, 1001)])
    zoomed = client.get(
        f"/jobs/{job_id}/metrics",
        params={"name": "loss", "max_points": 10, "step_min": 101, "step_max": 200},
    ).json()["points"]
    assert [p["step"] for p in zoomed] == list(range(110, 201, 10))
    assert zoomed[0] == {"step": 110, "value": 105.5, "min": 101.0, "max": 110.0, "count": 10}
    backwards = client.get(f"/jobs/{job_id}/metrics", params={"step_min": 5, "step_max": 4})
    assert backwards.status_code == 422 and "step_min" in backwards.json()["detail"]


def test_epoch_metrics_are_series_too(client, image_spec):
    job_id = client.post("/jobs", json=image_spec).json()["id"]
    run_job(job_id)
    job = client.get(f"/jobs/{job_id}").json()
    series = client.get(f"/jobs/{job_id}/metrics", params={"name": "val_accuracy"}).json()
    assert [p["value"] for p in series["points"]] == [h["val_accuracy"] for h in job["history"]]
    assert [p["step"] for p in series["points"]] == [5, 10]


def test_a_minimal_spec_is_stored_resolved_with_where_each_value_came_from(client, two_class_zip):
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    minimal = {"task": "image_classification", "dataset_id": dataset_id}
    created = client.post("/jobs", json=minimal)
    assert created.status_code == 201, created.text
    job = client.get(f"/jobs/{created.json()['id']}").json()
    hyper, sources = job["spec"]["hyperparameters"], job["spec_sources"]
    assert job["arch"] == job["spec"]["model"]["arch"] == "fast_resnet"
    assert sources["model.arch"].startswith("auto: 40 training images of 16x16")
    # 40 images: batches of 8 (at least), SGD's rate scaled down with them, more epochs.
    assert hyper["batch_size"] == 8 and sources["hyperparameters.batch_size"].startswith("data:")
    assert hyper["lr"] == pytest.approx(0.2 * 8 / 256)
    assert job["epochs"] == hyper["epochs"] == 60
    assert sources["hyperparameters.momentum"] == "recipe: fast_resnet"
    assert {f"hyperparameters.{name}" for name in hyper} <= sources.keys()
    assert "task" not in sources and not any(path.startswith("text.") for path in sources)


def test_a_given_value_that_contradicts_a_default_is_a_422_naming_it(client, sentiment_csv):
    dataset_id = upload(client, sentiment_csv, "s.csv").json()["id"]
    spec = {
        "task": "text_sentiment",
        "dataset_id": dataset_id,
        "model": {"arch": "minilm_finetuned"},
        "hyperparameters": {"warmup_epochs": 50},
    }
    refused = client.post("/jobs", json=spec)
    assert refused.status_code == 422
    assert "with its defaults filled" in refused.json()["detail"]
    assert "warmup_epochs must be shorter than the run" in refused.json()["detail"]
    assert client.get("/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("resources", "extra", "named"),
    [
        ({"gpus": 2}, {}, "resources.gpus above 1 needs resources.device 'cuda'"),
        ({"device": "cuda", "processes": 2}, {}, "resources.processes is for cpu jobs"),
        ({"processes": 2}, {"hyperparameters": {"batch_size": 9}}, "split evenly over"),
        (
            {"processes": 2},
            {"limits": {"max_run_seconds": 60}, "hyperparameters": {"batch_size": 8}},
            "needs hyperparameters.epochs",
        ),
        ({"processes": 2}, {"device": "cuda"}, "does not fit 2 ranks on cpu"),
    ],
)
def test_ranks_that_do_not_fit_the_spec_are_a_422_naming_why(
    client, image_spec, resources, extra, named
):
    refused = client.post("/jobs", json={**image_spec, "resources": resources, **extra})
    assert refused.status_code == 422 and named in json.dumps(refused.json()["detail"])


def test_a_job_of_several_ranks_is_stored_with_its_resources(client, image_spec):
    spec = {**image_spec, "resources": {"processes": 2}, "hyperparameters": {"batch_size": 8}}
    stored = client.post("/jobs", json=spec)
    assert stored.status_code == 201, stored.text
    resources = stored.json()["spec"]["resources"]
    # routed: no GPU worker was seen, so the CPU's queue
    assert resources == {"device": "cpu", "gpus": 1, "processes": 2}

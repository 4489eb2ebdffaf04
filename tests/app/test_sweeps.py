"""Sweeps in-process: the API stores one, the worker's code runs its trials (without
Celery), the trials' rule prunes, and the best trial's model gets <name>@best."""

import time

import pytest

from app.store.db import get_session_factory
from app.tuning import advance_sweep, should_prune
from tests.conftest import bearer
from tests.utils.api import new_key, upload
from workers.runner import run_job

TEXT_BASE = {
    "task": "text_sentiment",
    "name": "moods-sweep",
    "model": {"arch": "bag_of_embeddings"},
    "text": {"min_freq": 1},
    "hyperparameters": {"epochs": 3, "batch_size": 8, "optimizer": "adam"},
    "validation": {"source": "holdout", "fraction": 0.2},
}


@pytest.fixture
def text_dataset(client, sentiment_csv) -> str:
    return upload(client, sentiment_csv, "t.csv").json()["id"]


def sweep_body(dataset_id: str, **fields) -> dict:
    return {
        "base": {**TEXT_BASE, "dataset_id": dataset_id},
        "space": {"hyperparameters.lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True}},
        "sampler": "tpe",
        "max_trials": 4,
        "max_parallel": 1,
        **fields,
    }


def run_sweep(client, sweep_id: str) -> dict:
    """Each queued trial run by the worker's code, until the sweep ends."""
    for _ in range(100):
        sweep = client.get(f"/sweeps/{sweep_id}").json()
        if sweep["status"] != "running":
            return sweep
        queued = [t for t in sweep["trials"] if t["status"] == "queued"]
        assert queued, sweep
        run_job(queued[0]["job_id"])
    raise AssertionError(f"sweep {sweep_id} did not end")


def test_a_sweep_runs_its_trials_and_follows_the_best_with_an_alias(client, text_dataset):
    created = client.post("/sweeps", json=sweep_body(text_dataset))
    assert created.status_code == 201, created.text
    sweep = created.json()
    assert [t["status"] for t in sweep["trials"]] == ["queued"]  # max_parallel 1
    job = client.get(f"/jobs/{sweep['trials'][0]['job_id']}").json()
    assert (job["sweep_id"], job["trial_number"]) == (sweep["id"], 0)
    assert job["spec_sources"]["hyperparameters.lr"] == "sweep: searched"
    done = run_sweep(client, sweep["id"])
    assert done["status"] == "succeeded", done
    assert [t["number"] for t in done["trials"]] == [0, 1, 2, 3]
    lrs = {t["params"]["hyperparameters.lr"] for t in done["trials"]}
    assert len(lrs) == 4 and all(1e-4 <= lr <= 0.3 for lr in lrs)
    best = done["best_trial"]
    assert best["objective"] == max(t["objective"] for t in done["trials"])
    aliases = {
        a["alias"]: a["version_id"] for a in client.get("/models/moods-sweep/aliases").json()
    }
    assert aliases["best"] == best["model_id"]
    assert client.get("/sweeps").json()["items"][0]["id"] == sweep["id"]


def test_asha_prunes_trials_after_their_first_epoch(client, text_dataset):
    body = sweep_body(
        text_dataset,
        sampler="random",
        max_trials=5,
        pruner={"rule": "asha", "min_epochs": 1, "reduction_factor": 3},
    )
    done = run_sweep(client, client.post("/sweeps", json=body).json()["id"])
    pruned = [t for t in done["trials"] if t["end_reason"] == "pruned"]
    assert pruned, done["trials"]
    for trial in pruned:
        assert trial["pruned_at_epoch"] == trial["epoch"] < 3
        assert client.get(f"/jobs/{trial['job_id']}").json()["end_reason"] == "pruned"
    assert done["epochs_trained"] < 5 * 3


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ({"hyperparameters.lrr": {"type": "float", "low": 0.1, "high": 1}}, "hyperparameters.lrr"),
        ({"hyperparameters.lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low (0.1)"),
        ({"hyperparameters.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale"),
        ({"hyperparameters.dropout": {"type": "float", "low": 0.1, "high": 1.5}}, "dropout"),
        ({"model.width": {"type": "int", "low": 8, "high": 64}}, "model.width"),
        ({"dataset_id": {"type": "categorical", "choices": ["x"]}}, "dataset_id"),
        ({"hyperparameters": {"type": "categorical", "choices": [1]}}, "hyperparameters"),
    ],
)
def test_a_bad_space_is_a_422_naming_the_field(client, text_dataset, space, named):
    answer = client.post("/sweeps", json=sweep_body(text_dataset, space=space))
    assert answer.status_code == 422, answer.text
    assert named in answer.text


def test_a_grid_takes_no_float_range_and_no_more_than_its_most_combinations(client, text_dataset):
    answer = client.post("/sweeps", json=sweep_body(text_dataset, sampler="grid"))
    assert answer.status_code == 422 and "grid sampler needs categorical or int" in answer.text
    huge = {"seed": {"type": "int", "low": 0, "high": 4_000_000_000}}
    answer = client.post("/sweeps", json=sweep_body(text_dataset, sampler="grid", space=huge))
    assert answer.status_code == 422 and "4000000001 combinations" in answer.text


def test_a_grid_sweep_takes_each_combination_once(client, text_dataset):
    space = {
        "hyperparameters.lr": {"type": "categorical", "choices": [0.01, 0.05]},
        "hyperparameters.batch_size": {"type": "int", "low": 8, "high": 16, "step": 8},
    }
    body = sweep_body(text_dataset, space=space, sampler="grid", max_trials=10, max_parallel=4)
    sweep = client.post("/sweeps", json=body).json()
    assert sweep["trials_planned"] == 4 and len(sweep["trials"]) == 4
    combinations = {tuple(sorted(t["params"].items())) for t in sweep["trials"]}
    assert len(combinations) == 4


def test_a_sweep_counts_as_one_job_against_the_quota(client, text_dataset):
    key = new_key(client, "train", max_concurrent_jobs=1)
    headers = bearer(key["key"])
    own = upload(client, b"text,label\n" + b"good film,pos\nbad film,neg\n" * 20, "o.csv", headers)
    body = sweep_body(own.json()["id"], max_parallel=3)
    first = client.post("/sweeps", json=body, headers=headers)
    assert first.status_code == 201 and len(first.json()["trials"]) == 3  # 3 trials, one job
    second = client.post("/sweeps", json=body, headers=headers)
    assert second.status_code == 429, second.text
    cancelled = client.post(f"/sweeps/{first.json()['id']}/cancel", headers=headers).json()
    assert cancelled["status"] == "cancelled"
    assert {t["status"] for t in cancelled["trials"]} == {"cancelled"}
    assert client.post("/sweeps", json=body, headers=headers).status_code == 201


def test_another_keys_sweep_is_unknown(client, text_dataset):
    sweep = client.post("/sweeps", json=sweep_body(text_dataset)).json()
    key = new_key(client, "train")
    answer = client.get(f"/sweeps/{sweep['id']}", headers=bearer(key["key"]))
    assert answer.status_code == 404


def test_moving_a_sweep_on_again_asks_nothing_twice(client, text_dataset):
    sweep = client.post("/sweeps", json=sweep_body(text_dataset, max_parallel=2)).json()
    sent = []
    with get_session_factory()() as session:
        for _ in range(3):  # as a worker and the sweeper would, one after the other
            assert advance_sweep(session, sweep["id"], sent.append) == []
    assert sent == []
    again = client.get(f"/sweeps/{sweep['id']}").json()
    assert [t["job_id"] for t in again["trials"]] == [t["job_id"] for t in sweep["trials"]]


def test_a_trial_asks_the_rule_again_and_gets_the_same_answer(client, text_dataset):
    body = sweep_body(text_dataset, sampler="random", max_trials=4, pruner={"rule": "asha"})
    done = run_sweep(client, client.post("/sweeps", json=body).json()["id"])
    pruned = [trial for trial in done["trials"] if trial["end_reason"] == "pruned"]
    assert pruned, done["trials"]
    with get_session_factory()() as session:
        for trial in pruned:
            assert should_prune(session, trial["job_id"])


def test_a_sweep_past_its_time_budget_cancels_its_trials_and_ends(client, text_dataset):
    sweep = client.post("/sweeps", json=sweep_body(text_dataset, max_seconds=0.5)).json()
    assert len(sweep["trials"]) == 1
    time.sleep(0.6)
    with get_session_factory()() as session:
        assert advance_sweep(session, sweep["id"], lambda _: None) == []  # cancels the trial
        advance_sweep(session, sweep["id"], lambda _: None)  # nothing is open: it ends
    ended = client.get(f"/sweeps/{sweep['id']}").json()
    assert [t["status"] for t in ended["trials"]] == ["cancelled"]
    assert ended["status"] == "failed" and ended["error"] == "no trial produced a model"


def test_asha_judges_short_trials_every_half_epoch(client, text_dataset):
    """Trials of 3 epochs under ASHA's factor of 3 are judged every half epoch by default
    (whole-epoch rungs would leave one decision): one stopped halfway through its first
    epoch ends cancelled with no model, one stopped later is served from its best epoch,
    and the sweep's epochs count the halves trained."""
    body = sweep_body(text_dataset, sampler="random", max_trials=6, pruner={"rule": "asha"})
    sweep = client.post("/sweeps", json=body).json()
    assert sweep["spec"]["pruner"]["min_epochs"] == 0.5
    done = run_sweep(client, sweep["id"])
    pruned = [t for t in done["trials"] if t["end_reason"] == "pruned"]
    assert pruned, done["trials"]
    for trial in pruned:
        assert trial["pruned_at_epoch"] in (0.5, 1.5), trial
        assert trial["epoch"] == int(trial["pruned_at_epoch"])
        job = client.get(f"/jobs/{trial['job_id']}").json()
        served = job["status"] == "succeeded" and trial["model_id"] is not None
        assert served == (trial["epoch"] > 0), job
        checks = client.get(f"/jobs/{trial['job_id']}/metrics", params={"name": "val_accuracy"})
        steps = [point["step"] for point in checks.json()["points"]]
        assert steps[-1] == 6 * trial["pruned_at_epoch"], steps  # 6 batches an epoch
    assert done["epochs_trained"] == sum(t["epochs_trained"] for t in done["trials"]) < 6 * 3
    assert done["epochs_trained"] % 1 == 0.5 * (len(pruned) % 2)  # each pruned: a half


@pytest.mark.parametrize(
    ("pruner", "objective", "named"),
    [
        ({"rule": "asha", "min_epochs": 0.3}, {}, "1/n of one"),
        ({"rule": "asha", "min_epochs": 1.5}, {}, "1/n of one"),
        ({"rule": "asha", "min_epochs": 5e-324}, {}, "greater than or equal to 0.1"),
        ({"rule": "median", "min_epochs": 0.5}, {"metric": "train_loss"}, "training metric"),
    ],
)
def test_a_min_epochs_that_cannot_be_checked_is_a_422(
    client, text_dataset, pruner, objective, named
):
    answer = client.post(
        "/sweeps", json=sweep_body(text_dataset, pruner=pruner, objective=objective)
    )
    assert answer.status_code == 422, answer.text
    assert named in answer.text and "min_epochs" in answer.text


def test_whole_epochs_are_kept_where_they_leave_several_rungs_or_were_asked(client, text_dataset):
    long_trials = sweep_body(text_dataset, pruner={"rule": "asha", "reduction_factor": 2})
    asked = sweep_body(text_dataset, pruner={"rule": "asha", "min_epochs": 1})
    on_loss = sweep_body(text_dataset, pruner={"rule": "asha"}, objective={"metric": "train_loss"})
    for body in (long_trials, asked, on_loss):
        sweep = client.post("/sweeps", json=body).json()
        assert sweep["spec"]["pruner"]["min_epochs"] == 1, sweep["spec"]

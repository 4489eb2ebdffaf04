"""Sweeps through the real stack survive what breaks: a worker killed mid-trial, the API
restarted mid-sweep, a Redis that restarts empty; and a cancelled sweep stops its trials."""

import json

import pytest

from tests.conftest import ADMIN_KEY
from tests.e2e.conftest import (
    JOB_TIMEOUT_S,
    SENTIMENT_JOB,
    Stack,
    fresh_postgres_database,
    mnist_upload,
)
from tests.e2e.test_reliability import (
    RedisServer,
    mnist_job,
    wait_for,
    wait_for_step_of,
)
from tests.utils.cli import json_lines, run_cli
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e


def sweep_body(dataset_id: str, epochs: int, **fields) -> dict:
    return {
        "base": mnist_job(dataset_id, epochs, name="mnist-sweep"),
        "space": {"hyperparameters.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
        "sampler": "random",
        "max_trials": 3,
        "max_parallel": 1,
        "seed": 3,
        **fields,
    }


def submit_sweep(api, body: dict) -> dict:
    answer = api.post("/sweeps", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_for_sweep(api, stack: Stack, sweep_id: str) -> dict:
    def ended() -> dict | None:
        sweep = api.get(f"/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] != "running" else None

    return wait_until(
        ended, JOB_TIMEOUT_S, what=lambda: f"sweep {sweep_id} to end:\n{stack.logs()}", interval=0.3
    )


def assert_finished_with_every_trial(api, sweep: dict, trials: int) -> None:
    assert sweep["status"] == "succeeded", sweep
    assert [t["number"] for t in sweep["trials"]] == list(range(trials))
    assert {t["status"] for t in sweep["trials"]} == {"succeeded"}, sweep["trials"]
    best = sweep["best_trial"]
    aliases = api.get("/models/mnist-sweep/aliases").json()
    assert {a["alias"]: a["version_id"] for a in aliases}["best"] == best["model_id"]


def test_a_worker_killed_mid_trial_is_replaced_and_the_sweep_finishes(api, stack, mnist_dataset):
    """Its trials are judged every half epoch (the median rule stops none of the first
    three): the resumed trial redoes the checks of the epoch it redoes, once each."""
    body = sweep_body(mnist_dataset, epochs=3, pruner={"rule": "median", "min_epochs": 0.5})
    sweep = submit_sweep(api, body)
    first = sweep["trials"][0]["job_id"]
    wait_for_step_of(api, first, 2)  # into its second epoch
    stack.kill("worker")
    stack.start_worker()
    done = wait_for_sweep(api, stack, sweep["id"])
    assert_finished_with_every_trial(api, done, 3)
    assert done["epochs_trained"] == 9
    resumed = api.get(f"/jobs/{first}").json()
    assert resumed["attempt"] == 2 and resumed["resumed_from_epoch"] >= 1, resumed
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    validated = api.get(f"/jobs/{first}/metrics", params={"name": "val_accuracy"}).json()
    steps = [point["step"] for point in validated["points"]]
    batches = steps[-1] // 3
    halves = [(epoch - 1) * batches + round(batches / 2) for epoch in (1, 2, 3)]
    assert steps == sorted([*halves, batches, 2 * batches, 3 * batches]), steps


def test_the_sweep_goes_on_while_the_api_restarts(api, stack, mnist_dataset):
    sweep = submit_sweep(api, sweep_body(mnist_dataset, epochs=1, seed=4))
    port = int(stack.url.rsplit(":", 1)[1])
    wait_for(api, sweep["trials"][0]["job_id"], lambda j: j["status"] == "running")
    stack.kill("api")  # the worker queues the next trials meanwhile
    stack.start_api(port=port)
    done = wait_for_sweep(api, stack, sweep["id"])
    assert_finished_with_every_trial(api, done, 3)


def test_a_cancelled_sweep_cancels_its_trials_and_starts_no_more(api, stack, mnist_dataset):
    sweep = submit_sweep(api, sweep_body(mnist_dataset, epochs=50, max_parallel=2, seed=5))
    running = sweep["trials"][0]["job_id"]
    wait_for(api, running, lambda j: j["status"] == "running")
    cancelled = api.post(f"/sweeps/{sweep['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for trial in cancelled.json()["trials"]:
        wait_for(api, trial["job_id"], lambda j: j["status"] == "cancelled")
    after = api.get(f"/sweeps/{sweep['id']}").json()
    assert len(after["trials"]) == 2 and {t["status"] for t in after["trials"]} == {"cancelled"}
    assert api.post(f"/sweeps/{sweep['id']}/cancel").status_code == 200  # harmless again


def test_a_sweep_goes_on_after_redis_restarts_empty(tmp_path, mnist):
    broker = RedisServer(tmp_path)
    broker.start()
    with fresh_postgres_database() as database_url:
        own = Stack(tmp_path, database_url, broker.url)
        try:
            own.start_api()  # no worker yet: the first trials wait in Redis
            with own.client(timeout=60) as client:
                dataset_id = client.post("/datasets", files=mnist_upload(mnist, 1000)).json()["id"]
                sweep = submit_sweep(client, sweep_body(dataset_id, epochs=1, max_parallel=2))
                assert broker.messages() == 2
                broker.stop()
                broker.start()  # empty: both messages are gone
                own.start_worker()
                done = wait_for_sweep(client, own, sweep["id"])
                assert_finished_with_every_trial(client, done, 3)
        finally:
            own.stop()
            broker.stop()


def test_a_sweep_submitted_and_followed_from_the_cli(api, stack, sentiment_csv, tmp_path):
    dataset = api.post("/datasets", files={"file": ("moods.csv", sentiment_csv)}).json()
    base = SENTIMENT_JOB | {"dataset_id": dataset["id"], "name": "cli-sweep"}
    body = {
        "base": base,
        "space": {"hyperparameters.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
        "pruner": {"rule": "median"},
        "max_trials": 3,
    }
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps(body))
    run = run_cli(
        "sweeps", "submit", str(spec), "--follow", "--json", "--interval", "0.5",
        config_home=tmp_path, url=stack.url, key=ADMIN_KEY, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{stack.logs()}"
    submitted, *trials, sweep = json_lines(run.stdout)  # the sweep, each trial, the sweep
    assert submitted["status"] == "running" and sweep["id"] == submitted["id"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2]
    assert sweep["status"] == "succeeded" and sweep["best_trial"]["model_id"]

"""`trainserve`, the command-line client, run as a process against the real stack: upload,
submit and follow, wait's exit codes, --json, the API's errors, and a follow that outlives
a restart of the API."""

import json
import re
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ADMIN_KEY, class_pattern, image_zip, png_bytes
from tests.e2e.conftest import JOB_TIMEOUT_S, SENTIMENT_JOB, mnist_upload, wait_for_job
from tests.utils.cli import CLI, cli_env, json_lines, json_of, run_cli, run_in_terminal
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MNIST_SPEC = {
    "task": "image_classification",
    "name": "mnist-cli",
    "model": {"arch": "tutorial_cnn"},
    "hyperparameters": {"epochs": 1, "optimizer": "adam", "lr": 0.002},
}


@pytest.fixture(scope="module")
def config_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("config")


@pytest.fixture(scope="module")
def cli(stack, config_home):
    """`trainserve ARGS` against the stack with the admin key."""

    def run(*args: str, key: str = ADMIN_KEY, timeout: float = 120):
        return run_cli(*args, config_home=config_home, url=stack.url, key=key, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory, mnist) -> list[Path]:
    """3,000 training and 500 test images of MNIST as the IDX files users have."""
    folder = tmp_path_factory.mktemp("mnist")
    paths = []
    for _, (name, data) in mnist_upload(mnist, 3000, 500):
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def mnist_dataset(cli, mnist_files) -> dict:
    return json_of(cli("datasets", "upload", *map(str, mnist_files), "--name", "mnist", "--json"))


@pytest.fixture(scope="module")
def followed(cli, mnist_dataset, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    """`jobs submit SPEC.yaml --set … --follow` run to its end, and the job it trained."""
    spec = tmp_path_factory.mktemp("spec") / "mnist.yaml"
    spec.write_text(yaml.safe_dump(MNIST_SPEC | {"dataset_id": mnist_dataset["id"]}))
    run = cli(
        "jobs", "submit", str(spec), "--set", "hyperparameters.epochs=2",
        "--set", "hyperparameters.batch_size=64", "--follow", timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    job_id = run.stdout.split()[1].rstrip(":")  # "job <id>: mnist-cli, …"
    return run, json_of(cli("jobs", "show", job_id, "--json"))


def test_an_upload_sends_every_file_and_answers_the_dataset(mnist_dataset, api):
    assert mnist_dataset["format"] == "idx" and len(mnist_dataset["classes"]) == 10
    counts = mnist_dataset["counts"]
    assert (sum(counts["train"].values()), sum(counts["test"].values())) == (3000, 500)
    assert api.get(f"/datasets/{mnist_dataset['id']}").json() == mnist_dataset


def test_the_same_upload_again_is_the_same_dataset(cli, mnist_files, mnist_dataset):
    again = cli("datasets", "upload", *map(str, mnist_files), "--name", "mnist")
    assert again.returncode == 0, again.stderr
    assert "uploaded before: the same dataset" in again.stdout
    assert mnist_dataset["id"] in again.stdout


def test_submit_follow_shows_each_epoch_and_the_final_accuracy(followed):
    run, job = followed
    assert run.returncode == 0, run.stdout + run.stderr
    assert job["status"] == "succeeded"
    assert (
        job["spec"]["hyperparameters"] | {"epochs": 2, "batch_size": 64, "lr": 0.002}
        == (job["spec"]["hyperparameters"])
    )  # the file's values and the --set ones reached the service
    lines = run.stdout.splitlines()
    assert lines[:2] == [f"job {job['id']}: mnist-cli, tutorial_cnn, 2 epoch(s)", "queued"]
    assert "running (attempt 1)" in lines
    for entry in job["history"]:
        assert (
            f"epoch {entry['epoch']}/2: train_loss {entry['train_loss']:.4g} "
            f"train_accuracy {entry['train_accuracy']:.4g} val_loss {entry['val_loss']:.4g} "
            f"val_accuracy {entry['val_accuracy']:.4g}"
        ) in run.stdout
    assert lines[-1] == (
        f"succeeded (completed) in {job['duration_seconds']:.1f} s: best val_accuracy "
        f"{job['best_val_accuracy']:.4f} (epoch {job['best_epoch']}), "
        f"model {job['model_id']} (mnist-cli)"
    )
    assert job["best_val_accuracy"] > 0.8
    assert "Traceback" not in run.stderr


def test_wait_exits_0_for_a_job_that_succeeded(cli, followed):
    _, job = followed
    run = cli("jobs", "wait", job["id"])
    assert run.returncode == 0
    assert run.stdout.startswith("succeeded (completed)")


def test_wait_exits_4_for_a_job_that_failed_on_its_data(cli, api, tmp_path):
    rng = np.random.default_rng(8)
    small = {f"{c}/{i}.png": png_bytes(class_pattern(c, 8, rng)) for c in (0, 1) for i in range(4)}
    (tmp_path / "8x8.zip").write_bytes(image_zip(small))
    dataset = json_of(cli("datasets", "upload", str(tmp_path / "8x8.zip"), "--json"))
    (tmp_path / "job.json").write_text(
        json.dumps({"task": "image_classification", "model": {"arch": "tutorial_cnn"}})
    )
    job = json_of(
        cli(
            "jobs",
            "submit",
            str(tmp_path / "job.json"),
            "--set",
            f"dataset_id={dataset['id']}",
            "--json",
        )
    )
    run = cli("jobs", "wait", job["id"], "--interval", "0.2", timeout=JOB_TIMEOUT_S)
    assert run.returncode == 4, run.stdout + run.stderr
    assert run.stdout.startswith("failed (invalid)") and "at least 16x16, not 8x8" in run.stdout
    assert api.get(f"/jobs/{job['id']}").json()["status"] == "failed"


def test_a_bad_spec_is_refused_with_the_apis_message(cli, mnist_dataset, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(MNIST_SPEC | {"dataset_id": mnist_dataset["id"]}))
    run = cli(
        "jobs", "submit", str(spec), "--set", "hyperparameters.lr=-1",
        "--set", "hyperparameters.optimizer=rmsprop",
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.splitlines() == [
        "error 422: hyperparameters.optimizer: Input should be 'sgd', 'adam' or 'adamw'",
        "hyperparameters.lr: Input should be greater than 0",
    ]
    assert run.stdout == ""


def test_a_spec_for_a_dataset_that_does_not_exist_is_the_apis_sentence(cli, tmp_path):
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(MNIST_SPEC | {"dataset_id": "nope"}))
    run = cli("jobs", "submit", str(spec))
    assert (run.returncode, run.stderr) == (
        1,
        "error 422: dataset_id 'nope' is not a known dataset\n",
    )


@pytest.mark.parametrize(
    ("command", "path"),
    [
        (["datasets", "list", "--limit", "50"], "/datasets"),
        (["jobs", "list", "--status", "succeeded", "--limit", "50"], "/jobs?status=succeeded"),
        (["models", "list", "--name", "mnist-cli", "--limit", "50"], "/models?name=mnist-cli"),
        (["keys", "list", "--limit", "50"], "/keys"),
        (["models", "alias", "list", "mnist-cli"], "/models/mnist-cli/aliases"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_json_output_is_the_apis_answer(cli, api, followed, command, path):
    # The API's default page is 50: the CLI's is 20, for a terminal.
    assert json_of(cli(*command, "--json")) == api.get(path).json()


def test_show_json_of_a_job_a_dataset_and_a_model_parse(cli, api, followed, mnist_dataset):
    _, job = followed
    for command, path in [
        (["jobs", "show", job["id"]], f"/jobs/{job['id']}"),
        (["datasets", "show", mnist_dataset["id"]], f"/datasets/{mnist_dataset['id']}"),
        (["models", "show", job["model_id"]], f"/models/{job['model_id']}"),
    ]:
        assert json_of(cli(*command, "--json")) == api.get(path).json()


def test_an_unknown_id_is_a_404_sentence_and_exit_code_1(cli):
    run = cli("jobs", "show", "nosuchjob")
    assert (run.returncode, run.stderr) == (1, "error 404: no job with id 'nosuchjob'\n")


def test_predict_answers_with_the_trained_model(cli, followed, mnist, tmp_path):
    _, job = followed
    digits = []
    for i in range(2):
        digits.append(tmp_path / f"digit{i}.png")
        digits[-1].write_bytes(png_bytes(mnist["t10k-images-idx3"][i]))
    one = json_of(cli("predict", str(digits[0]), "--model", "mnist-cli", "--top-k", "2", "--json"))
    assert one["model_id"] == job["model_id"] and len(one["top_k"]) == 2
    assert one["label"] == str(mnist["t10k-labels-idx1"][0])
    labels = [p["label"] for p in json_of(cli("predict", *map(str, digits), "--json"))]
    several = cli("predict", *map(str, digits), "--model", job["id"])  # a job id names its model
    assert several.returncode == 0, several.stderr
    assert f"answered by mnist-cli version {job['model_id']}" in several.stdout
    for digit, label in zip(digits, labels, strict=True):
        assert f"{digit}  {label}  " in several.stdout


def test_aliases_move_and_roll_back_through_the_cli(cli, api, stack, followed, mnist_dataset):
    _, first = followed
    second = api.post("/jobs", json=MNIST_SPEC | {"dataset_id": mnist_dataset["id"], "seed": 1})
    second = wait_for_job(api, stack, second.json()["id"])
    v1, v2 = first["model_id"], second["model_id"]
    moved = cli("models", "alias", "set", "mnist-cli", "production", v1)
    assert moved.stdout == f"mnist-cli@production moved: (new) -> {v1}\n"
    assert cli("models", "alias", "set", "mnist-cli", "production", v2).returncode == 0
    back = cli("models", "alias", "rollback", "mnist-cli", "production")
    assert back.stdout == f"mnist-cli@production rolled_back: {v2} -> {v1}\n"
    aliases = {a["alias"]: a["version_id"] for a in api.get("/models/mnist-cli/aliases").json()}
    assert aliases == {"latest": v2, "production": v1}
    history = json_of(cli("models", "alias", "history", "mnist-cli", "production", "--json"))
    assert [(m["action"], m["to_version_id"]) for m in history] == [
        ("rolled_back", v1),
        ("moved", v2),
        ("moved", v1),
    ]
    refused = cli("models", "alias", "set", "mnist-cli", "production", "nosuchversion")
    assert refused.returncode == 1 and refused.stderr.startswith("error 404: ")


def test_keys_are_made_listed_and_revoked_and_a_bad_scope_is_the_apis_422(cli, mnist_files):
    bad = cli("keys", "create", "--scope", "everything")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error 422: scope: Input should be ") and "'predict'" in bad.stderr
    made = cli("keys", "create", "--scope", "predict", "--name", "cli test")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()  # alone on stdout, for TOKEN=$(trainserve keys create …)
    assert "shown only this once" in made.stderr
    refused = cli("datasets", "list", key=token)
    assert refused.returncode == 1 and refused.stderr.startswith("error 403: ")
    key_id = made.stderr.split()[1]
    listed = json_of(cli("keys", "list", "--json"))["items"]
    assert [k["scope"] for k in listed if k["id"] == key_id] == ["predict"]
    revoked = json_of(cli("keys", "revoke", key_id, "--json"))
    assert revoked["id"] == key_id and revoked["revoked_at"]
    gone = cli("datasets", "list", key=token)
    assert gone.returncode == 1 and gone.stderr.startswith("error 401: ")
    assert "trainserve login" in gone.stderr  # where a key comes from


def test_login_checks_the_key_then_saves_it_for_later_commands(stack, tmp_path):
    wrong = run_cli("login", "--url", stack.url, "--api-key", "ts_wrong", config_home=tmp_path)
    assert wrong.returncode == 1 and wrong.stderr.startswith("error 401: ")
    assert not (tmp_path / "trainserve").exists()
    good = run_cli(
        "login", "--url", stack.url, "--api-key", ADMIN_KEY, "--json", config_home=tmp_path
    )
    saved = tmp_path / "trainserve" / "config.json"
    assert json_of(good) == {"url": stack.url, "saved_to": str(saved)}
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": stack.url, "api_key": ADMIN_KEY}
    listed = run_cli("jobs", "list", "--json", config_home=tmp_path)  # no URL, no key given
    assert "items" in json_of(listed)


def test_follow_resumes_after_the_api_restarts_and_misses_no_event(
    cli, api, stack, mnist_dataset, config_home, tmp_path
):
    spec = MNIST_SPEC | {"dataset_id": mnist_dataset["id"]}
    spec["hyperparameters"] = spec["hyperparameters"] | {"epochs": 200, "batch_size": 64}
    job = api.post("/jobs", json=spec).json()
    stdout, stderr = tmp_path / "events.jsonl", tmp_path / "stderr.txt"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        follower = subprocess.Popen(
            [*CLI, "jobs", "follow", job["id"], "--json", "--retry-for", "300"],
            env=cli_env(config_home, stack.url, ADMIN_KEY),
            stdout=out,
            stderr=err,
        )
    try:
        wait_until(lambda: '"event":"step"' in stdout.read_text(), timeout=JOB_TIMEOUT_S)
        port = int(stack.url.rsplit(":", 1)[1])
        stack.kill("api")
        seen_before_restart = len(json_lines(stdout.read_text()))
        stack.start_api(port=port)
        wait_until(
            lambda: len(json_lines(stdout.read_text())) > seen_before_restart + 10,
            timeout=JOB_TIMEOUT_S,
            what="events after the restart",
        )
        timed_out = cli("jobs", "wait", job["id"], "--timeout", "0")
        assert timed_out.returncode == 7 and timed_out.stdout.startswith("running")
        api.post(f"/jobs/{job['id']}/cancel")
        assert follower.wait(timeout=JOB_TIMEOUT_S) == 6  # cancelled
    finally:
        if follower.poll() is None:
            follower.kill()
    events = json_lines(stdout.read_text())
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))  # none missed, none twice
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "cancelled"
    assert "reconnecting after event" in stderr.read_text()
    steps = [e["data"]["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1))


def test_a_text_model_is_trained_and_asked_from_the_cli(cli, sentiment_csv, tmp_path):
    table = tmp_path / "moods.csv"
    table.write_bytes(sentiment_csv)
    dataset = json_of(cli("datasets", "upload", str(table), "--name", "cli-sentiment", "--json"))
    spec = tmp_path / "text.json"
    spec.write_text(json.dumps(SENTIMENT_JOB | {"dataset_id": dataset["id"], "name": "cli-mood"}))
    trained = cli("jobs", "submit", str(spec), "--follow", timeout=JOB_TIMEOUT_S)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "epoch 3/3: " in trained.stdout and "succeeded (completed)" in trained.stdout
    texts = ["truly great, a delight", "an awful, dull mess"]
    asked = json_of(
        cli("predict", "--model", "cli-mood", *(f"--text={t}" for t in texts), "--json")
    )
    assert [p["label"] for p in asked] == ["positive", "negative"]
    one = cli("predict", "--model", "cli-mood", "--text", texts[0])
    assert one.returncode == 0 and f"{texts[0]}  positive  " in one.stdout


def test_on_a_terminal_upload_and_follow_draw_live_bars(stack, config_home, moods_csv, tmp_path):
    table = tmp_path / "moods.csv"
    table.write_bytes(moods_csv)
    terminal = {"config_home": config_home, "url": stack.url, "key": ADMIN_KEY}
    code, drawn = run_in_terminal("datasets", "upload", str(table), **terminal)
    assert code == 0, drawn
    shown = ANSI_ESCAPE.sub("", drawn)
    size = f"{len(moods_csv) / 1000:.1f}/{len(moods_csv) / 1000:.1f} kB"  # every byte sent
    assert "moods.csv" in shown and size in shown
    dataset_id = re.search(r"^id +([0-9a-f]{32})", shown, re.M).group(1)
    spec = tmp_path / "moods.json"
    spec.write_text(json.dumps(SENTIMENT_JOB | {"dataset_id": dataset_id, "name": "cli-moods"}))
    code, drawn = run_in_terminal("jobs", "submit", str(spec), "--follow", **terminal)
    assert code == 0, drawn
    assert "\x1b[2K" in drawn  # the bar's line erased and drawn again in place
    shown = ANSI_ESCAPE.sub("", drawn)
    bar = r"epoch 3/3 \S+ (\d+)/\1 steps loss \d\.\d{4} val_accuracy \d\.\d{4} \S+ eta"
    assert re.search(bar, shown), shown
    assert "succeeded (completed)" in shown

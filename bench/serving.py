"""Serving figures: trainserve's HTTP front ends against TorchServe and the in-process
limit, in one run.

    .venv/bin/python bench/serving.py [--only uvicorn-asgi,torchserve] [--models cifar-bench]
        [--seconds 5] [--rounds 3] [--warmup 60] [--memory-requests 100000] [--ports 18200-18299]
        [--torchserve /work/ts-venv/bin/torchserve]

It trains the seed's tutorial_cnn on CIFAR-10 images and a bag_of_embeddings on MR
(two versions each, one epoch: the figures are speed, not accuracy) with its own
trainserve (embedded defaults, in a temporary folder), stops it, and then measures at
concurrency 1, 8 and 64 (`--only` picks some of the systems):

- limit: the same checkpoint's decode + batched forward in this process, one torch
  thread as in each server process (batch = c: every request answered at once);
- granian-asgi: Granian's ASGI interface, as `make run` and the image serve the app;
  /predict reaches its handler through app.past_router's PastRouter, past FastAPI's
  router;
- uvicorn-asgi: the same app on plain `uvicorn`;
- torchserve: TorchServe (its own virtual environment; 2 workers, batch size 8, 5 ms
  maximum batch delay) serving the same checkpoint with bench/torchserve_handler.py.

The load is wrk's (bench/wrk.py: a C client on one thread, cycling through 64 prebuilt
requests: multipart 32x32 PNGs, or JSON texts, the same bytes for every system). The
trainserve systems serve at once and take turns: each cell runs `--rounds` times on
each of them in turn and shows its median round, so a change in the machine's other load
falls on all of them alike. Each runs `--api-workers` processes with its access log on,
as users have it; after it stops, its log's access lines, "Logging error"s and
tracebacks are counted. CPU us/req is the server's own CPU time per answered request:
the steadiest figure on a shared machine.

Memory is measured with each server alone (PSS, the proportional set size, divides a
shared library's pages among the processes that map them, so a second server would
lower the first's): each process's PSS and their sum, read from /proc/<pid>/smaps_rollup
after 10k and after `--memory-requests` requests at c=64 (the Python client of
bench/loadgen.py, which counts requests): trainserve serving the image and the text model
in turn, TorchServe the image model. Then failed requests while `production` moves 20
times under load, on the default system. Compare ratios within one run, and read them
with the load average beside them.
"""

import argparse
import asyncio
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch
from client import PROJECT, SHARED_DATA, Service, stop_group
from loadgen import LoadResult, http_request, multipart, run, run_load
from PIL import Image
from wrk import LoadFigures, requests_script, require_wrk, run_wrk

from app.config import get_settings
from models.files import load_plain
from models.predictor import Predictor

CONCURRENCY = (1, 8, 64)
HOST = "127.0.0.1"
ADMIN_KEY = "ts_bench-admin-key-0123456789abcdef0123456789abcd"
# The servers trainserve can run on, by the name --only takes.
TRAINSERVE_SYSTEMS = ("granian-asgi", "uvicorn-asgi")
SYSTEMS = ("limit", *TRAINSERVE_SYSTEMS, "torchserve")
# What `make run` serves with: the alias-move check runs on it.
DEFAULT_SYSTEM = "granian-asgi"
MODELS = ("cifar-bench", "mr-bench")
FIRST_MEMORY_READING = 10_000
LOG4J = """<Configuration status="WARN">
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT">
    <PatternLayout pattern="%d %-5p %c - %m%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="STDOUT"/></Root></Loggers>
</Configuration>
"""


class Ports:
    """Free ports from a range such as 18200-18299 (any free one without), none twice."""

    def __init__(self, span: str | None):
        if span:
            low, high = (int(end) for end in span.split("-"))
            self._candidates = iter(range(low, high + 1))
        else:
            self._candidates = None

    def take(self) -> int:
        if self._candidates is None:
            return _bind(0)
        for port in self._candidates:
            try:
                return _bind(port)
            except OSError:  # in use
                continue
        raise RuntimeError("no free port left in the --ports range")


def _bind(port: int) -> int:
    with socket.socket() as sock:
        sock.bind((HOST, port))
        return sock.getsockname()[1]


def process_tree(root_pid: int) -> list[int]:
    """A process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def pss_by_process(root_pid: int) -> dict[str, float]:
    """PSS in MiB of a process and each of its descendants, by a name with its pid."""
    memory = {}
    for pid in sorted(process_tree(root_pid)):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # it exited meanwhile
            continue
        kib = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        memory[f"{_program(command)} ({pid})"] = kib / 1024
    return memory


def _program(command: list[bytes]) -> str:
    """A short name: the program, or for an interpreter the script or module it runs."""
    line = b" ".join(command).decode(errors="replace")
    if "resource_tracker" in line:
        return "multiprocessing resource tracker"
    if "spawn_main" in line:
        return "worker (multiprocessing spawn)"
    words = [Path(word).name for word in line.split()]
    if words and words[0].startswith("python") and len(words) > 1:
        words = words[2:] if words[1] == "-m" else words[1:]
    if words and words[0] == "java":
        return "java (TorchServe's front end)"
    return " ".join(words[:2])[:40] or "?"


def cpu_seconds(root_pid: int) -> float:
    """User and system CPU time of a process and all its descendants, all threads."""
    ticks = 0
    for pid in process_tree(root_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


class Processes:
    """Child processes this script started, each in its own process group."""

    def __init__(self, folder: Path):
        self.folder, self.running = folder, {}

    def start(self, name: str, command: list, env: dict) -> subprocess.Popen:
        log = open(self.log_path(name), "wb")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def stop(self, name: str) -> None:
        stop_group(self.running.pop(name))

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def wait_until(check, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not come up in {timeout_s} s")


# ---- the models and their requests -------------------------------------------------------


def cifar_pngs(count: int) -> list[bytes]:
    pngs = []
    with zipfile.ZipFile(SHARED_DATA / "cifar10" / "cifar10-test.zip") as archive:
        for info in archive.infolist()[::97]:
            if info.is_dir():
                continue
            buffer = io.BytesIO()
            Image.open(io.BytesIO(archive.read(info))).convert("RGB").save(buffer, "PNG")
            pngs.append(buffer.getvalue())
            if len(pngs) == count:
                return pngs
    return pngs


def mr_sentences(count: int) -> list[str]:
    with open(SHARED_DATA / "rt-polarity" / "rt-polarity.csv", newline="") as file:
        return [row["text"] for row in csv.DictReader(file)][::151][:count]


def cifar_slice(folder: Path, per_class: int) -> Path:
    """The first `per_class` training images of each class, as a zip a user would upload."""
    path, taken = folder / "cifar-slice.zip", Counter()
    with (
        zipfile.ZipFile(SHARED_DATA / "cifar10" / "cifar10-train.zip") as source,
        zipfile.ZipFile(path, "w") as target,
    ):
        for info in source.infolist():
            label = info.filename.split("/")[0]
            if not info.is_dir() and taken[label] < per_class:
                taken[label] += 1
                target.writestr(info.filename, source.read(info))
    return path


def train_versions(service: Service, folder: Path) -> dict[str, list[dict]]:
    """Two versions of each model (seeds 0 and 1), one epoch each: the figures are speed."""
    cifar = service.upload(cifar_slice(folder, 300), name="cifar-bench")
    mr = service.upload(SHARED_DATA / "rt-polarity" / "rt-polarity.csv", name="mr-bench")
    specs = {
        "cifar-bench": {
            "task": "image_classification",
            "dataset_id": cifar["id"],
            "model": {"arch": "tutorial_cnn"},
            "validation": {"source": "holdout", "fraction": 0.1},
            "hyperparameters": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.002},
        },
        "mr-bench": {
            "task": "text_sentiment",
            "dataset_id": mr["id"],
            "model": {"arch": "bag_of_embeddings"},
            "validation": {"source": "holdout", "fraction": 0.1},
            "hyperparameters": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.005},
        },
    }
    versions = {}
    for name, spec in specs.items():
        jobs = [service.train({**spec, "name": name, "seed": seed}) for seed in (0, 1)]
        versions[name] = [service.http.get(f"/models/{job['model_id']}").json() for job in jobs]
    return versions


# ---- one table cell ----------------------------------------------------------------------


def limit_cell(
    predictor: Predictor, examples: list, concurrency: int, seconds: float
) -> LoadFigures:
    """Decode and forward `concurrency` examples at a time: every request answered at once."""
    batches = [examples[i : i + concurrency] for i in range(0, len(examples), concurrency)]
    batches = [b for b in batches if len(b) == concurrency] or [examples[:concurrency]]
    result, deadline, i = LoadResult(), time.perf_counter() + seconds, 0
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        batch = batches[i % len(batches)]
        i += 1
        t0 = time.perf_counter()
        predictor.predict_requests([[x] for x in batch], [3] * len(batch))
        result.latencies += [time.perf_counter() - t0] * len(batch)
    result.seconds = time.perf_counter() - started
    return LoadFigures(
        requests_per_s=result.rate,
        p50_ms=result.percentile(0.50) * 1000,
        p99_ms=result.percentile(0.99) * 1000,
        errors=0,
        requests=len(result.latencies),
    )


def http_cell(load: list[str], concurrency: int, seconds: float, server: int):
    """wrk's figures for `load` (its arguments), and the server's CPU microseconds per
    answered request."""
    run_wrk(load, concurrency, 2)  # the server settles at this concurrency first
    cpu_before = cpu_seconds(server)
    figures = run_wrk(load, concurrency, seconds)
    cpu = (cpu_seconds(server) - cpu_before) / max(1, figures.requests) * 1e6
    return figures, cpu


def median_cell(cells: list[tuple[LoadFigures, float]]) -> tuple[LoadFigures, float]:
    """Of one cell's rounds, the one with the median req/s (its latencies and CPU with it)."""
    return sorted(cells, key=lambda cell: cell[0].requests_per_s)[len(cells) // 2]


def row(system: str, concurrency: int, figures: LoadFigures, pss=None, cpu_us=None) -> dict:
    return {
        "system": system,
        "c": concurrency,
        "rps": figures.requests_per_s,
        "p50": figures.p50_ms,
        "p99": figures.p99_ms,
        "errors": figures.errors,
        "pss": pss,
        "cpu": cpu_us,
        "load": os.getloadavg()[0],
    }


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    header = (
        f"{'system':16} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'PSS MiB':>8} {'CPU us/req':>10} {'load1':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        pss = f"{r['pss']:8.0f}" if r["pss"] is not None else f"{'-':>8}"
        cpu = f"{r['cpu']:10.0f}" if r["cpu"] is not None else f"{'-':>10}"
        print(
            f"{r['system']:16} {r['c']:>3} {r['rps']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
            f"{r['errors']:>6} {pss} {cpu} {r['load']:6.2f}"
        )
    print_ratios(rows)
    sys.stdout.flush()


def print_ratios(rows: list[dict]) -> None:
    """Each trainserve system's req/s against TorchServe's and the fastest trainserve's."""
    by = {(r["system"], r["c"]): r for r in rows}
    for c in CONCURRENCY:
        ours = {s: by[(s, c)]["rps"] for s in TRAINSERVE_SYSTEMS if (s, c) in by}
        if not ours:
            continue
        fastest = max(ours.values())
        torchserve = by.get(("torchserve", c))
        parts = [
            f"{s} {rps / fastest:.2f}"
            + (f" ({rps / torchserve['rps']:.2f}x TorchServe)" if torchserve else "")
            for s, rps in ours.items()
        ]
        print(f"c={c:<3} req/s against the fastest trainserve: " + ", ".join(parts))


# ---- the servers -------------------------------------------------------------------------


def trainserve_command(system: str, port: int, workers: int) -> list:
    """How `system` serves the app, with its access log on (as `make run` has it; uvicorn's
    by default)."""
    venv = Path(sys.executable).parent
    address = ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    if system == "granian-asgi":
        return [venv / "granian", "--interface", "asgi", "--access-log", *address, "app.main:app"]
    return [venv / "uvicorn", "app.main:app", *address]


@dataclass
class Trained:
    """What the training phase leaves for the measurements."""

    versions: dict[str, list[dict]]
    weights: dict[str, bytes]  # the measured (second) version of each model
    auth: str = ""  # the header line of a predict key
    bodies: dict[str, dict] = field(default_factory=dict)


class Bench:
    def __init__(self, args, folder: Path):
        self.args, self.folder = args, folder
        self.processes = Processes(folder)
        self.ports = Ports(args.ports)
        self.env = os.environ | {
            "TRAINSERVE_DATABASE_URL": f"sqlite:///{folder}/trainserve.db",
            "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
            "TRAINSERVE_BROKER_URL": "filesystem://",
            "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
            "TRAINSERVE_ADMIN_KEY": ADMIN_KEY,
            "TRAINSERVE_AUTH_ENABLED": "false" if args.no_auth else "true",
        }

    def train(self) -> Trained:
        """Train the models with a worker and an API of their own, then stop both."""
        venv = Path(sys.executable).parent
        subprocess.run(
            [venv / "alembic", "upgrade", "head"],
            cwd=PROJECT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.start_worker()
        service, _ = self.start_trainserve("trainer", "uvicorn-asgi")
        started = time.perf_counter()
        versions = train_versions(service, self.folder)
        print(f"trained 4 versions in {time.perf_counter() - started:.0f} s", flush=True)
        weights = {
            name: service.http.get(f"/models/{pair[1]['id']}/weights").content
            for name, pair in versions.items()
        }
        # The load is sent with a predict key, as an application would; no rate limit in the way.
        key = service.http.post("/keys", json={"scope": "predict", "rate_limit_per_second": 1e5})
        for name in versions:  # a predict key answers from the model names shared with it
            shared = service.http.post(f"/models/{name}/shares", json={"key_id": key.json()["id"]})
            shared.raise_for_status()
        self.processes.stop("trainer")
        self.processes.stop("worker")  # the worker's CPU is not the servers'
        return Trained(versions, weights, f"Authorization: Bearer {key.json()['key']}\r\n")

    def start_worker(self) -> None:
        venv = Path(sys.executable).parent
        worker = [venv / "celery", "-A", "workers.celery_app", "worker", "--concurrency=1"]
        quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.processes.start("worker", [*worker, *quiet], self.env)

    def start_trainserve(self, name: str, system: str) -> tuple[Service, subprocess.Popen]:
        port = self.ports.take()
        command = trainserve_command(system, port, self.args.api_workers)
        process = self.processes.start(name, command, self.env)
        url = f"http://{HOST}:{port}"
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, name)
        return Service(url, ADMIN_KEY), process

    def start_torchserve(self, name: str, checkpoint: bytes) -> int:
        folder = self.folder / f"ts-{name}"
        store = folder / "store"
        store.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(checkpoint)
        bin_dir = Path(self.args.torchserve).parent
        subprocess.run(
            [
                bin_dir / "torch-model-archiver",
                "--model-name",
                name,
                "--version",
                "1.0",
                "--handler",
                PROJECT / "bench" / "torchserve_handler.py",
                "--extra-files",
                folder / "checkpoint.pt",
                "--export-path",
                store,
            ],
            check=True,
        )
        port, management, metrics = self.ports.take(), self.ports.take(), self.ports.take()
        model = {
            "defaultVersion": True,
            "marName": f"{name}.mar",
            "minWorkers": 2,
            "maxWorkers": 2,
            "batchSize": 8,
            "maxBatchDelay": 5,
            "responseTimeout": 120,
        }
        (folder / "config.properties").write_text(
            f"inference_address=http://{HOST}:{port}\n"
            f"management_address=http://{HOST}:{management}\n"
            f"metrics_address=http://{HOST}:{metrics}\n"
            f"model_store={store}\nload_models={name}.mar\n"
            f"models={json.dumps({name: {'1.0': model}})}\n"
            "disable_system_metrics=true\n"
        )
        (folder / "log4j2.xml").write_text(LOG4J)
        env = os.environ | {
            "PYTHONPATH": str(PROJECT),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "LOG_LOCATION": str(folder / "logs"),
            "METRICS_LOCATION": str(folder / "logs"),
        }
        self.torchserve = self.processes.start(
            "torchserve",
            [
                self.args.torchserve,
                "--start",
                "--foreground",
                "--ncs",
                "--disable-token-auth",
                "--ts-config",
                folder / "config.properties",
                "--log-config",
                folder / "log4j2.xml",
                "--model-store",
                store,
            ],
            env,
        )

        def ready() -> bool:
            [described] = httpx.get(f"http://{HOST}:{management}/models/{name}").json()
            return sum(w["status"] == "READY" for w in described["workers"]) == 2

        wait_until(ready, "TorchServe", 240)  # its Java front end starts slowly on a busy machine
        return port


def warm_up(load: list[str], seconds: float) -> None:
    """Load before the measured cells: TorchServe's Java front end answered half as many
    requests in its first minute as once its JIT had compiled the hot paths."""
    run_wrk(load, 64, seconds)


def total_pss(pid: int) -> float:
    return sum(pss_by_process(pid).values())


def request_bodies(pngs: list[bytes], texts: list[str]) -> dict:
    """Each model's request bodies, as (path, body, content type) of a POST."""
    images = [multipart({"file": png}) for png in pngs]
    text = [(json.dumps({"text": t}).encode(), "application/json") for t in texts]
    return {"cifar-bench": images, "mr-bench": text}


def trainserve_requests(trained: Trained, port: int, model: str) -> list[bytes]:
    return [
        http_request(HOST, port, "/predict", body, content_type, trained.auth)
        for body, content_type in trained.bodies[model]
    ]


def torchserve_requests(trained: Trained, port: int, model: str) -> list[bytes]:
    return [
        http_request(HOST, port, f"/predictions/{model}", body, content_type)
        for body, content_type in trained.bodies[model]
    ]


def limit_rows(predictor: Predictor, examples: list, seconds: float) -> list[dict]:
    return [row("limit", c, limit_cell(predictor, examples, c, seconds)) for c in CONCURRENCY]


def measured(system: str, model: str, c: int, figures: LoadFigures) -> None:
    print(
        f"  {system} {model} c={c}: {figures.requests_per_s:.0f} req/s, {figures.errors} failed",
        flush=True,
    )


def measure_trainserve(bench: Bench, trained: Trained, systems: list[str], rows: dict) -> None:
    """The trainserve systems' cells, interleaved: all of them serve at once, and each cell
    runs `--rounds` times on each system in turn, so that the machine's other load falls
    on all of them alike. A cell's figures are its median round's."""
    servers = {system: bench.start_trainserve(system, system) for system in systems}
    try:
        with training_meanwhile(bench, trained, next(iter(servers.values()))[0]):
            measure_turns(bench, trained, servers, rows)
    finally:
        for system in systems:
            bench.processes.stop(system)
    for system in systems:
        print(f"  {system}: {log_health(bench.processes.log_path(system))}", flush=True)


@contextmanager
def training_meanwhile(bench: Bench, trained: Trained, service: Service):
    """With --while-training: a job trains on the same machine while the cells run, as
    under `make run` when a user trains and predicts at once."""
    if not bench.args.while_training:
        yield
        return
    bench.start_worker()
    first = service.http.get(f"/models/{trained.versions['cifar-bench'][0]['id']}").json()
    dataset_id = service.http.get(f"/jobs/{first['job_id']}").json()["dataset_id"]
    spec = {
        "task": "image_classification",
        "dataset_id": dataset_id,
        "model": {"arch": "fast_resnet"},
        "hyperparameters": {"epochs": 200},  # longer than the cells: cancelled after them
        "validation": {"source": "holdout", "fraction": 0.1},
    }
    job_id = service.http.post("/jobs", json=spec).raise_for_status().json()["id"]
    wait_until(lambda: service.http.get(f"/jobs/{job_id}").json()["epoch"] >= 1, "training")
    print(f"  a fast_resnet job trains meanwhile ({load_average()})", flush=True)
    try:
        yield
    finally:
        service.http.post(f"/jobs/{job_id}/cancel")
        bench.processes.stop("worker")


def measure_turns(bench: Bench, trained: Trained, servers: dict, rows: dict) -> None:
    """Each cell `--rounds` times on each server in turn; its median round is its row."""
    for model in bench.args.models:
        loads = {
            system: trainserve_load(bench, trained, service, model)
            for system, (service, _) in servers.items()
        }
        for load in loads.values():
            warm_up(load, bench.args.warmup)
        for c in CONCURRENCY:
            rounds: dict[str, list] = {system: [] for system in servers}
            for _ in range(bench.args.rounds):
                for system, (_, process) in servers.items():
                    rounds[system].append(
                        http_cell(loads[system], c, bench.args.seconds, process.pid)
                    )
            for system, cells in rounds.items():
                figures, cpu = median_cell(cells)
                rows[model].append(row(system, c, figures, cpu_us=cpu))
                measured(system, model, c, figures)


def measure_alone(bench: Bench, trained: Trained, system: str, memory: dict) -> None:
    """What needs a server alone on the machine: its memory (a shared library's pages are
    divided among every process that maps it), and, on the default, the alias moves."""
    service, process = bench.start_trainserve(f"{system}-alone", system)
    try:
        port = service.http.base_url.port
        if bench.args.memory_requests:
            # Both models in turn: the goal is one image and one text model served.
            each = [trainserve_requests(trained, port, model) for model in MODELS]
            mixed = [request for pair in zip(*each, strict=True) for request in pair]
            memory[system] = memory_readings(port, process.pid, mixed, bench.args.memory_requests)
        if system == DEFAULT_SYSTEM and bench.args.aliases:
            alias_run(service, trained, "cifar-bench")
    finally:
        bench.processes.stop(f"{system}-alone")


def trainserve_load(bench: Bench, trained: Trained, service: Service, model: str) -> list[str]:
    port = service.http.base_url.port
    requests = trainserve_requests(trained, port, model)
    return requests_script(bench.folder, str(service.http.base_url), requests, f"{port}-{model}")


def measure_torchserve(bench: Bench, trained: Trained, model: str, rows: dict, memory: dict):
    port = bench.start_torchserve(model, trained.weights[model])
    pid = bench.torchserve.pid
    try:
        requests = torchserve_requests(trained, port, model)
        load = requests_script(bench.folder, f"http://{HOST}:{port}", requests, f"ts-{model}")
        warm_up(load, bench.args.warmup)
        for c in CONCURRENCY:
            figures, cpu = http_cell(load, c, bench.args.seconds, pid)
            rows[model].append(row("torchserve", c, figures, total_pss(pid), cpu))
            measured("torchserve", model, c, figures)
        if bench.args.memory_requests and model == MODELS[0]:
            memory["torchserve"] = memory_readings(port, pid, requests, bench.args.memory_requests)
    finally:
        bench.processes.stop("torchserve")


def log_health(log: Path) -> str:
    """What a server's log says about its requests: access lines, and errors of logging."""
    text = log.read_text(errors="replace")
    access = text.count('"POST /predict ')
    return (
        f"{access} /predict access-log lines, {text.count('Logging error')} 'Logging error', "
        f"{text.count('Traceback')} 'Traceback' in {log.name}"
    )


# ---- memory ------------------------------------------------------------------------------


@dataclass
class Memory:
    first: dict[str, float]  # PSS MiB by process after FIRST_MEMORY_READING requests
    last: dict[str, float]  # and after all of them
    errors: int
    rate: float


def memory_readings(port: int, pid: int, requests: list[bytes], total: int) -> Memory:
    first = run(run_load(HOST, port, requests, 64, FIRST_MEMORY_READING))
    at_first = pss_by_process(pid)
    rest = run(run_load(HOST, port, requests, 64, total - FIRST_MEMORY_READING))
    return Memory(at_first, pss_by_process(pid), first.errors + rest.errors, rest.rate)


def print_memory(memory: dict[str, Memory], total: int) -> None:
    print(
        f"\nmemory: PSS MiB after {FIRST_MEMORY_READING} and {total} requests at c=64 "
        f"(trainserve: its image and text models in turn; TorchServe: the image model); "
        f"{load_average()}"
    )
    header = f"{'system':16} {'process':44} {'first':>8} {'last':>8} {'change':>8}"
    print(header)
    print("-" * len(header))
    for system, reading in memory.items():
        for name in reading.first | reading.last:
            print(_memory_line(system, name, reading.first.get(name), reading.last.get(name)))
        first, last = sum(reading.first.values()), sum(reading.last.values())
        print(_memory_line(system, "total", first, last))
        print(f"{'':16} {reading.errors} failed, {reading.rate:.0f} req/s")
    sys.stdout.flush()


def _memory_line(system: str, name: str, first: float | None, last: float | None) -> str:
    def mib(value):
        return f"{value:8.0f}" if value is not None else f"{'-':>8}"

    change = f"{(last / first - 1) * 100:+7.1f}%" if first and last else f"{'-':>8}"
    return f"{system:16} {name:44} {mib(first)} {mib(last)} {change}"


# ---- alias moves -------------------------------------------------------------------------


def alias_run(service: Service, trained: Trained, name: str) -> None:
    """Failed requests while `name@production` moves between its two versions under load."""
    port, versions = service.http.base_url.port, trained.versions[name]
    bodies = []
    for png in cifar_pngs(64):
        body, content_type = multipart({"file": png, "model": f"{name}@production"})
        bodies.append(http_request(HOST, port, "/predict", body, content_type, trained.auth))
    aliases = f"/models/{name}/aliases/production"
    service.http.put(aliases, json={"version_id": versions[0]["id"]}).raise_for_status()
    time.sleep(2)

    async def moves_under_load() -> LoadResult:
        load = asyncio.create_task(
            run_load(HOST, port, bodies, 8, 10**9, max_seconds=14, keep_bodies=10**6)
        )
        await asyncio.sleep(1)
        for move in range(20):
            target = versions[(move + 1) % 2]["id"]
            answer = await asyncio.to_thread(service.http.put, aliases, json={"version_id": target})
            answer.raise_for_status()
            await asyncio.sleep(0.6)
        return await load

    result = run(moves_under_load())
    served = Counter(json.loads(body)["model_id"][:8] for body in result.bodies)
    first, second = (v["id"][:8] for v in versions)
    print(
        f"\nalias moves: 20 moves of {name}@production in 12 s under c=8: {len(result.latencies)} "
        f"requests answered, {result.errors} failed, statuses {result.statuses}; answered by "
        f"{first}: {served[first]}, by {second}: {served[second]}; "
        f"p99 {result.percentile(0.99) * 1000:.1f} ms; {load_average()}",
        flush=True,
    )


def names(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated list of some of `allowed`."""

    def parse(text: str) -> list[str]:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(allowed)}")
        return chosen

    return parse


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", type=names(SYSTEMS), default=list(SYSTEMS), help="systems, comma-separated"
    )
    parser.add_argument(
        "--models", type=names(MODELS), default=list(MODELS), help="models, comma-separated"
    )
    parser.add_argument("--torchserve", default="/work/ts-venv/bin/torchserve")
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds a round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each trainserve cell (the median is shown)"
    )
    parser.add_argument(
        "--memory-requests", type=int, default=100_000, help="0: no memory readings"
    )
    parser.add_argument(
        "--warmup", type=float, default=60, help="seconds of load on each server before its cells"
    )
    parser.add_argument("--api-workers", type=int, default=2, help="server processes")
    parser.add_argument("--ports", help="a range of ports to serve on, such as 18200-18299")
    parser.add_argument(
        "--no-aliases", dest="aliases", action="store_false", help="skip the alias moves"
    )
    parser.add_argument(
        "--while-training",
        action="store_true",
        help="a job trains on the machine while the servers' cells run, as under make run",
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="TRAINSERVE_AUTH_ENABLED=false, as TorchServe runs"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    require_wrk()
    torch.set_num_threads(1)  # as in each server process: the limit is one core's
    print(f"{os.cpu_count()} cores; {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trainserve-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            trained = bench.train()
            examples = {"cifar-bench": cifar_pngs(64), "mr-bench": mr_sentences(64)}
            trained.bodies = request_bodies(examples["cifar-bench"], examples["mr-bench"])
            predictors = {
                model: Predictor(
                    load_plain(io.BytesIO(trained.weights[model])), get_settings().serving_runtime
                )
                for model in args.models
            }
            rows, memory = {model: [] for model in args.models}, {}
            try:
                measure_all(bench, trained, examples, predictors, rows, memory)
            finally:  # what there is, if a system failed
                print_results(args, trained, predictors, rows, memory)
        finally:
            bench.processes.stop_all()


def measure_all(bench: Bench, trained, examples, predictors, rows, memory) -> None:
    args = bench.args
    if "limit" in args.only:
        for model in args.models:
            rows[model] += limit_rows(predictors[model], examples[model], args.seconds)
    systems = [system for system in TRAINSERVE_SYSTEMS if system in args.only]
    if systems:
        measure_trainserve(bench, trained, systems, rows)
    for system in systems:
        if args.memory_requests or (system == DEFAULT_SYSTEM and args.aliases):
            measure_alone(bench, trained, system, memory)
    if "torchserve" in args.only:
        for model in args.models:
            measure_torchserve(bench, trained, model, rows, memory)


def print_results(args, trained: Trained, predictors: dict, rows: dict, memory: dict) -> None:
    for model in args.models:
        network, runtime = trained.versions[model][1]["network"], predictors[model].runtime
        title = f"{model} ({network}, answering through {runtime}), {args.seconds:.0f} s a cell"
        print_table(f"{title}; {args.warmup:.0f} s warm-up; {load_average()}", rows[model])
    if memory:
        print_memory(memory, args.memory_requests)


if __name__ == "__main__":
    main()

"""Serving figures: trainserve against TorchServe and the in-process limit, in one run.

    .venv/bin/python bench/serving.py [--torchserve /work/ts-venv/bin/torchserve]
                                      [--seconds 8] [--warmup 60] [--memory-requests 100000]

It starts its own trainserve (API and worker, embedded defaults, in a temporary
folder), trains the seed's tutorial_cnn on CIFAR-10 test images and a
bag_of_embeddings on MR (two versions each), stops the worker, and then, for each
model, after `--warmup` seconds of load on each server, at concurrency 1, 8 and 64:

- limit: the same checkpoint's decode + batched forward in this process, one torch
  thread as in each server process (batch = c: every request answered at once);
- trainserve: POST /predict over HTTP (multipart 32x32 PNG, or JSON text), uvicorn
  with `--api-workers` processes (default 2), the prediction lane
  (app/fastlane.py) and no access log;
- TorchServe 0.12 (its own virtual environment; 2 workers, batch size 8, 5 ms
  maximum batch delay) serving the same checkpoint with bench/torchserve_handler.py,
  sent the same request bodies.

The models are trained for speed figures, not accuracy: one epoch on 3,000 CIFAR-10
training images (300 a class), one epoch on MR.

Figures: requests/s, p50 and p99 latency, failed requests, server RSS (TorchServe:
the Java frontend and its Python workers together). Then trainserve's RSS after 10k
and after `--memory-requests` requests, and failed requests while `production`
moves 20 times under load. The machine is shared: compare ratios within one run, and
read them with the load average printed beside them.
"""

import argparse
import asyncio
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import torch
from client import PROJECT, SHARED_DATA, Service
from loadgen import LoadResult, http_request, multipart, run, run_load
from PIL import Image

from app.config import get_settings
from models.files import load_plain
from models.predictor import Predictor

CONCURRENCY = (1, 8, 64)
HOST = "127.0.0.1"
ADMIN_KEY = "ts_bench-admin-key-0123456789abcdef0123456789abcd"
LOG4J = """<Configuration status="WARN">
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT">
    <PatternLayout pattern="%d %-5p %c - %m%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="STDOUT"/></Root></Loggers>
</Configuration>
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
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


def rss_mib(root_pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    total = 0
    for pid in process_tree(root_pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


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

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
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

    def stop(self, name: str) -> None:
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

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


def limit_cell(predictor: Predictor, examples: list, concurrency: int, seconds: float):
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
    return result


def http_cell(port: int, requests: list[bytes], concurrency: int, seconds: float, server: int):
    """The load's result, and the server's CPU microseconds per answered request."""
    run(run_load(HOST, port, requests, concurrency, 300 * concurrency, max_seconds=2))
    cpu_before = cpu_seconds(server)
    result = run(run_load(HOST, port, requests, concurrency, 10**9, max_seconds=seconds))
    cpu = (cpu_seconds(server) - cpu_before) / max(1, len(result.latencies)) * 1e6
    return result, cpu


def row(system: str, concurrency: int, result: LoadResult, rss=None, cpu_us=None) -> dict:
    return {
        "system": system,
        "c": concurrency,
        "rps": result.rate,
        "p50": result.percentile(0.50) * 1000,
        "p99": result.percentile(0.99) * 1000,
        "errors": result.errors,
        "rss": rss,
        "cpu": cpu_us,
        "load": os.getloadavg()[0],
    }


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    header = (
        f"{'system':11} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'RSS MiB':>8} {'CPU us/req':>10} {'load1':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        rss = f"{r['rss']:8.0f}" if r["rss"] is not None else f"{'-':>8}"
        cpu = f"{r['cpu']:10.0f}" if r["cpu"] is not None else f"{'-':>10}"
        print(
            f"{r['system']:11} {r['c']:>3} {r['rps']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
            f"{r['errors']:>6} {rss} {cpu} {r['load']:6.2f}"
        )
    by = {(r["system"], r["c"]): r for r in rows}
    for c in CONCURRENCY:
        ours, theirs, limit = by[("trainserve", c)], by[("torchserve", c)], by[("limit", c)]
        print(
            f"c={c:<3} trainserve/TorchServe: {ours['rps'] / theirs['rps']:.2f}x req/s, "
            f"p99 {ours['p99'] / theirs['p99']:.2f}x;  trainserve/limit: "
            f"{ours['rps'] / limit['rps']:.2f}x req/s"
        )
    sys.stdout.flush()


# ---- the servers -------------------------------------------------------------------------


class Bench:
    def __init__(self, args, folder: Path):
        self.args, self.folder = args, folder
        self.processes = Processes(folder)
        self.port = free_port()
        self.env = os.environ | {
            "TRAINSERVE_DATABASE_URL": f"sqlite:///{folder}/trainserve.db",
            "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
            "TRAINSERVE_BROKER_URL": "filesystem://",
            "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
            "TRAINSERVE_ADMIN_KEY": ADMIN_KEY,
            "TRAINSERVE_AUTH_ENABLED": "false" if args.no_auth else "true",
        }

    def start_trainserve(self) -> Service:
        venv = Path(sys.executable).parent
        subprocess.run(
            [venv / "alembic", "upgrade", "head"],
            cwd=PROJECT,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.processes.start(
            "worker",
            [
                venv / "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--concurrency=1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            self.env,
        )
        self.api = self.processes.start(
            "api",
            [
                venv / "uvicorn",
                "app.main:app",
                "--http",
                "app.fastlane:PredictProtocol",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--no-access-log",
                "--workers",
                str(self.args.api_workers),
            ],
            self.env,
        )
        url = f"http://{HOST}:{self.port}"
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, "trainserve")
        service = Service(url, ADMIN_KEY)
        # The load is sent with a predict key, as an application would; no rate limit in the way.
        key = service.http.post("/keys", json={"scope": "predict", "rate_limit_per_second": 1e5})
        self.auth = f"Authorization: Bearer {key.json()['key']}\r\n"
        self.admin = service
        return service

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
        port, management = free_port(), free_port()
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
            f"metrics_address=http://{HOST}:{free_port()}\n"
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

        wait_until(ready, "TorchServe", 40)
        return port


def warm_up(port: int, requests: list[bytes], seconds: float) -> None:
    """Load before the measured cells: TorchServe's Java front end answered half as many
    requests in its first minute as once its JIT had compiled the hot paths."""
    run(run_load(HOST, port, requests, 64, 10**9, max_seconds=seconds))


def measure_model(bench: Bench, name: str, version: dict, examples: list, bodies: dict) -> None:
    seconds = bench.args.seconds
    weights = bench.admin.http.get(f"/models/{version['id']}/weights").content
    predictor = Predictor(load_plain(io.BytesIO(weights)), get_settings().serving_runtime)
    rows = [row("limit", c, limit_cell(predictor, examples, c, seconds)) for c in CONCURRENCY]
    warm_up(bench.port, bodies["trainserve"], bench.args.warmup)
    for c in CONCURRENCY:
        result, cpu = http_cell(bench.port, bodies["trainserve"], c, seconds, bench.api.pid)
        rows.append(row("trainserve", c, result, rss_mib(bench.api.pid), cpu))
    port = bench.start_torchserve(name, weights)
    try:
        warm_up(port, bodies["torchserve"](port), bench.args.warmup)
        for c in CONCURRENCY:
            pid = bench.torchserve.pid
            result, cpu = http_cell(port, bodies["torchserve"](port), c, seconds, pid)
            rows.append(row("torchserve", c, result, rss_mib(pid), cpu))
    finally:
        bench.processes.stop("torchserve")
    print_table(
        f"{name} ({version['network']}, answering through {predictor.runtime}), "
        f"{seconds:.0f} s a cell; {load_average()}",
        rows,
    )


def memory_run(bench: Bench, requests: list[bytes], total: int) -> None:
    first = 10_000
    run(run_load(HOST, bench.port, requests, 64, first))
    at_first = rss_mib(bench.api.pid)
    started = time.perf_counter()
    rest = run(run_load(HOST, bench.port, requests, 64, total - first))
    at_total = rss_mib(bench.api.pid)
    print(
        f"\nmemory: trainserve RSS {at_first:.0f} MiB after {first} requests, {at_total:.0f} MiB "
        f"after {total} ({(at_total / at_first - 1) * 100:+.1f} %); the last {total - first} at "
        f"c=64 in {time.perf_counter() - started:.0f} s, {rest.errors} failed; {load_average()}"
    )


def alias_run(bench: Bench, name: str, versions: list[dict], pngs: list[bytes]) -> None:
    bodies = []
    for png in pngs:
        body, content_type = multipart({"file": png, "model": f"{name}@production"})
        bodies.append(http_request(HOST, bench.port, "/predict", body, content_type, bench.auth))
    service = bench.admin.http
    service.put(f"/models/{name}/aliases/production", json={"version_id": versions[0]["id"]})
    time.sleep(2)

    async def moves_under_load() -> LoadResult:
        load = asyncio.create_task(
            run_load(HOST, bench.port, bodies, 8, 10**9, max_seconds=14, keep_bodies=10**6)
        )
        await asyncio.sleep(1)
        for move in range(20):
            target = versions[(move + 1) % 2]["id"]
            answer = await asyncio.to_thread(
                service.put, f"/models/{name}/aliases/production", json={"version_id": target}
            )
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
        f"p99 {result.percentile(0.99) * 1000:.1f} ms; {load_average()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchserve", default="/work/ts-venv/bin/torchserve")
    parser.add_argument("--seconds", type=float, default=8, help="measured seconds a cell")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument(
        "--warmup", type=float, default=60, help="seconds of load on each server before its cells"
    )
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn --workers")
    parser.add_argument(
        "--no-auth", action="store_true", help="TRAINSERVE_AUTH_ENABLED=false, as TorchServe runs"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in each server process: the limit is one core's
    print(f"{os.cpu_count()} cores; {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="trainserve-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            service = bench.start_trainserve()
            started = time.perf_counter()
            versions = train_versions(service, bench.folder)
            print(f"trained 4 versions in {time.perf_counter() - started:.0f} s", flush=True)
            bench.processes.stop("worker")  # the worker's CPU is not the servers'
            pngs, texts = cifar_pngs(64), mr_sentences(64)
            image_bodies = [multipart({"file": png}) for png in pngs]
            text_bodies = [json.dumps({"text": t}).encode() for t in texts]
            measure_model(
                bench,
                "cifar-bench",
                versions["cifar-bench"][1],
                pngs,
                {
                    "trainserve": [
                        http_request(HOST, bench.port, "/predict", b, t, bench.auth)
                        for b, t in image_bodies
                    ],
                    "torchserve": lambda port: [
                        http_request(HOST, port, "/predictions/cifar-bench", b, t)
                        for b, t in image_bodies
                    ],
                },
            )
            measure_model(
                bench,
                "mr-bench",
                versions["mr-bench"][1],
                texts,
                {
                    "trainserve": [
                        http_request(
                            HOST, bench.port, "/predict", b, "application/json", bench.auth
                        )
                        for b in text_bodies
                    ],
                    "torchserve": lambda port: [
                        http_request(HOST, port, "/predictions/mr-bench", b, "application/json")
                        for b in text_bodies
                    ],
                },
            )
            memory_run(
                bench,
                [
                    http_request(HOST, bench.port, "/predict", b, t, bench.auth)
                    for b, t in image_bodies
                ],
                args.memory_requests,
            )
            alias_run(bench, "cifar-bench", versions["cifar-bench"], pngs)
        finally:
            bench.processes.stop_all()


if __name__ == "__main__":
    main()

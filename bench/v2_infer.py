"""KServe V2 infer (the binary tensor extension, as tritonclient sends it by default) beside
/predict, on the same text model, the same server, in one run.

    .venv/bin/python bench/v2_infer.py [--seconds 10] [--rounds 3] [--concurrency 64]

It starts trainserve on embedded defaults in a temporary folder (Granian, as `make run`,
access log on, and one worker), trains a bag_of_embeddings on 2,000 MR sentences (one
epoch: the figures are speed, not accuracy), and then wrk (bench/wrk.py) sends 64 prebuilt
requests of one sentence each in turn: `POST /predict` with JSON, and
`POST /v2/models/{name}/infer` with the sentence as binary BYTES data and both outputs
asked for as binary data. The two take turns, `--rounds` times; each line is a round, and
the ratio is V2's median over /predict's.
"""

import argparse
import csv
import io
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from client import PROJECT, SHARED_DATA, Service
from loadgen import http_request
from wrk import requests_script, require_wrk, run_wrk

HOST = "127.0.0.1"
KEY = "ts_bench-admin-key-0123456789abcdef0123456789abcdef"
NAME = "mr-v2-bench"


def sentences(per_label: int) -> list[dict]:
    """The first sentences of each label (the file lists the positive ones first)."""
    with open(SHARED_DATA / "rt-polarity" / "rt-polarity.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        row
        for label in ("positive", "negative")
        for row in [r for r in rows if r["label"] == label][:per_label]
    ]


def as_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["text", "label"])
    writer.writeheader()
    writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)
    return out.getvalue().encode()


def v2_binary_body(text: str) -> tuple[bytes, int]:
    """A V2 infer body with the text as binary BYTES data (a 4-byte little-endian length,
    then the bytes), both outputs asked for as binary data; and its JSON part's length."""
    data = text.encode()
    element = struct.pack("<I", len(data)) + data
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(element)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    encoded = json.dumps(header).encode()
    return encoded + element, len(encoded)


def start(folder: Path, port: int) -> list[subprocess.Popen]:
    env = os.environ | {
        "TRAINSERVE_DATABASE_URL": f"sqlite:///{folder / 'trainserve.db'}",
        "TRAINSERVE_ARTIFACTS_DIR": str(folder / "artifacts"),
        "TRAINSERVE_BROKER_DIR": str(folder / "broker"),
        "TRAINSERVE_ADMIN_KEY": KEY,
        "TRAINSERVE_TORCH_THREADS": "1",
        "TRAINSERVE_RATE_LIMIT_PER_SECOND": "0",  # the load is one key's
        "PYTHONPATH": str(PROJECT),
    }
    venv = Path(sys.executable).parent
    subprocess.run([venv / "alembic", "upgrade", "head"], cwd=PROJECT, env=env, check=True)
    api = [venv / "granian", "--interface", "asgi", "--access-log", "--host", HOST]
    api += ["--port", str(port), "app.main:app"]
    worker = [venv / "celery", "-A", "workers.celery_app", "worker", "--concurrency=1"]
    with open(folder / "api.log", "ab") as log:  # the children keep their own copies
        return [
            subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log, stderr=log)
            for command in (api, worker)
        ]


def log_summary(log: Path) -> str:
    """The answers' statuses by route, from the access log, and the tracebacks."""
    text = log.read_text(errors="replace")
    found = re.findall(r'"POST (/predict|/v2/models/[^/]+/infer) HTTP/1.1" (\d{3})', text)
    counts = Counter(found)
    tracebacks = text.count("Traceback (most recent call last)")
    return f"answers by route and status: {dict(counts)}; tracebacks in the log: {tracebacks}"


def wait_ready(service: Service) -> None:
    for _ in range(360):
        try:
            if service.http.get("/healthz").status_code == 200:
                return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit("the API did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=18391)
    args = parser.parse_args()
    require_wrk()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        processes = start(folder, args.port)
        try:
            measure(folder, args)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            print(log_summary(folder / "api.log"))


def measure(folder: Path, args) -> None:
    url = f"http://{HOST}:{args.port}"
    service = Service(url, KEY)
    wait_ready(service)
    rows = sentences(1000)
    uploaded = service.http.post("/datasets", files={"file": ("mr.csv", as_csv(rows))})
    if uploaded.status_code not in (200, 201):
        sys.exit(f"the upload was refused: {uploaded.status_code} {uploaded.text}")
    dataset = uploaded.json()
    spec = {"task": "text_sentiment", "name": NAME, "dataset_id": dataset["id"]}
    service.train(spec | {"model": {"arch": "bag_of_embeddings"}, "hyperparameters": {"epochs": 1}})
    auth = f"Authorization: Bearer {KEY}\r\n"
    texts = [r["text"] for r in rows[::31][:64]]  # of both labels
    predict = [
        http_request(
            HOST,
            args.port,
            "/predict",
            json.dumps({"text": t, "model": NAME}).encode(),
            "application/json",
            auth,
        )
        for t in texts
    ]
    infer = []
    for text in texts:
        body, header_length = v2_binary_body(text)
        headers = f"{auth}Inference-Header-Content-Length: {header_length}\r\n"
        infer.append(
            http_request(
                HOST,
                args.port,
                f"/v2/models/{NAME}/infer",
                body,
                "application/octet-stream",
                headers,
            )
        )
    loads = {
        "/predict (JSON)": requests_script(folder, url, predict, "predict"),
        "V2 infer (binary)": requests_script(folder, url, infer, "infer"),
    }
    for load in loads.values():
        run_wrk(load, args.concurrency, 3)  # warm: the model loaded, the server settled
    figures: dict[str, list[float]] = {name: [] for name in loads}
    for round_number in range(1, args.rounds + 1):
        for name, load in loads.items():
            result = run_wrk(load, args.concurrency, args.seconds)
            figures[name].append(result.requests_per_s)
            print(
                f"round {round_number}: {name} c={args.concurrency}: {result.requests_per_s:.0f} "
                f"req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"{result.errors} failed",
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in figures.items()}
    predict_rate, infer_rate = medians.values()
    print(
        f"median at c={args.concurrency}: /predict {predict_rate:.0f} req/s, V2 infer (binary) "
        f"{infer_rate:.0f} req/s: {infer_rate / predict_rate:.2f} of /predict; load average "
        f"{os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()

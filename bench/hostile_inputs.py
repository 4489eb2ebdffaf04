"""Send every hostile request of tests/hostile.py, and a few heavy but valid ones, to a
running service, and print the hostile-request table: the status each got, the API's peak
RSS while it was answered, and how a second client's /predict fared meanwhile (its answers
checked against its first ones, its p99 during the attack against before any).

    TRAINSERVE_API_KEY=<admin key> TRAINSERVE_PREDICT_KEY=<predict key> \\
        .venv/bin/python bench/hostile_inputs.py --api-pid PID [--url http://127.0.0.1:8000] \\
        [--max-upload-bytes N] [--max-decoded-bytes N] [--max-predict-bytes N]

The limits must be the service's (TRAINSERVE_MAX_UPLOAD_BYTES, _MAX_DECODED_BYTES and
_MAX_PREDICT_BYTES) so that each bomb is just over them. The service needs a text model
and an image model (the README's walkthrough trains both); the second client asks the
newest text model. The peak RSS is the API process's VmHWM, reset before each request
(/proc/PID/clear_refs): run the bench as the API's user, on its machine.
"""

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from client import PROJECT, Service

sys.path.insert(0, str(PROJECT))
from tests.conftest import png_bytes
from tests.hostile import Hostile, hostile_inputs, wrong_scope_attacks

PROBES = ["a gripping, beautifully acted film", "dull, lifeless and far too long"]
BEFORE_S = 5.0  # the second client alone, for its p99 before any attack
PAUSE_S = 0.2  # between attacks: a slow answer is counted in the attack that caused it


def heavy_but_valid(max_predict_bytes: int) -> list[Hostile]:
    """Requests within every limit that cost the most: answered 200, and the others' p99
    says what they cost."""
    long_text = "a gripping film, and far too long. " * 230  # about 8,000 characters
    texts = [long_text] * min(1024, max_predict_bytes // (len(long_text) + 8))
    blank = png_bytes(np.zeros((2048, 2048), np.uint8))  # at the pixel cap, a few KiB
    return [
        Hostile(f"/predict: {len(texts)} texts of 8000 characters", 200, "", "/predict",
                json={"texts": texts}),
        Hostile("/predict: 1024 short texts", 200, "", "/predict", json={"texts": PROBES * 512}),
        Hostile("/predict: 64 images of 2048x2048", 200, "", "/predict",
                files=[("files", (f"{i}.png", blank)) for i in range(64)]),
    ]  # fmt: skip


def watch_predict(url: str, key: str | None, expected: list, stop, results) -> None:
    """The second client: asks the probes back to back; (start, end, right) of each."""
    service = Service(url, key)
    answers = []
    while not stop.is_set():
        started = time.time()
        response = service.http.post("/predict", json={"texts": PROBES})
        right = response.status_code == 200 and response.json() == expected
        answers.append((started, time.time(), right))
        time.sleep(0.01)
    results.put(answers)


class PeakRss:
    """The API process's resident memory now, and its peak since the last reset (never
    under the resident memory at the reset: freed memory is not given back), in MiB."""

    def __init__(self, pid: int):
        self.proc = Path(f"/proc/{pid}")

    def reset(self) -> float:
        """The resident memory now; the peak starts from it."""
        (self.proc / "clear_refs").write_text("5")
        return self._status("VmRSS")

    def peak(self) -> float:
        return self._status("VmHWM")

    def _status(self, field: str) -> float:
        for line in (self.proc / "status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/PID/status")


def p99_ms(answers: list, start: float, end: float) -> float:
    """p99 latency of the answers whose request overlapped [start, end]."""
    latencies = [(e - s) * 1000 for s, e, _ in answers if s <= end and e >= start]
    return float(np.percentile(latencies, 99)) if latencies else float("nan")


def run_attack(service: Service, case: Hostile, rss: PeakRss) -> tuple:
    """Its status, whether the answer was the expected one, the RSS before and at the peak
    in MiB, and when it was sent and answered."""
    before = rss.reset()
    started = time.time()
    response = service.http.post(case.path, **case.request_kwargs())
    ended = time.time()
    right = response.status_code == case.status
    if case.status >= 400:
        right = right and case.detail in str(response.json().get("detail"))
    return response.status_code, right, before, rss.peak(), started, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-pid", type=int, required=True)
    parser.add_argument("--max-upload-bytes", type=int, default=512 * 1024 * 1024)
    parser.add_argument("--max-decoded-bytes", type=int, default=1024**3)
    parser.add_argument("--max-predict-bytes", type=int, default=8 * 1024 * 1024)
    args = parser.parse_args()
    service, rss = Service(args.url), PeakRss(args.api_pid)
    first = service.http.post("/predict", json={"texts": PROBES})
    first.raise_for_status()  # needs a trained text model: see the README walkthrough
    stop, results = multiprocessing.Event(), multiprocessing.Queue()
    key = os.environ.get("TRAINSERVE_PREDICT_KEY")
    watch = multiprocessing.Process(
        target=watch_predict, args=(args.url, key, first.json(), stop, results)
    )
    cases = hostile_inputs(args.max_upload_bytes, args.max_decoded_bytes, args.max_predict_bytes)
    if key:  # a predict key's bodies to routes of other scopes
        cases += wrong_scope_attacks(args.max_upload_bytes, key)
    cases += heavy_but_valid(args.max_predict_bytes)
    datasets = service.http.get("/datasets", params={"limit": 200}).json()["items"]
    watch.start()
    time.sleep(BEFORE_S)
    before_end = time.time()
    spans = []
    for case in cases:
        spans.append((case, *run_attack(service, case, rss)))
        time.sleep(PAUSE_S)
    stop.set()
    answers = results.get()
    watch.join()
    print_table(answers, before_end, spans)
    after = service.http.get("/datasets", params={"limit": 200}).json()["items"]
    print(f"datasets stored before/after: {len(datasets)}/{len(after)}")
    print(f"load average: {os.getloadavg()}")


def print_table(answers: list, before_end: float, spans: list) -> None:
    before = [a for a in answers if a[1] <= before_end]
    print(f"second client before the attacks: {len(before)} asked, "
          f"p99 {p99_ms(answers, 0, before_end):.1f} ms")  # fmt: skip
    print(f"{'attack':50} {'status':>6} {'ok':>3} {'RSS MiB before/peak':>19} {'took':>7} "
          f"{'asked':>5} {'wrong':>5} {'p99 during':>10}")  # fmt: skip
    for case, status, right, before, peak, start, end in spans:
        during = [a for a in answers if a[0] <= end and a[1] >= start]
        wrong = sum(not ok for _, _, ok in during)
        print(f"{case.name[:50]:50} {status:>6} {'yes' if right else 'NO':>3} "
              f"{before:>9.0f} /{peak:>5.0f} (+{peak - before:>3.0f}) {end - start:>6.2f}s "
              f"{len(during):>5} {wrong:>5} {p99_ms(answers, start, end):>7.1f} ms")  # fmt: skip
    wrong = sum(not ok for _, _, ok in answers)
    print(f"second client in all: {len(answers)} asked, {wrong} wrong or failed")


if __name__ == "__main__":
    main()

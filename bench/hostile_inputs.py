"""Send every hostile input of tests/hostile.py to a running service and print the status
each got, while a second client checks that /predict keeps giving its first answers.

    TRAINSERVE_API_KEY=<admin key> .venv/bin/python bench/hostile_inputs.py \\
        [--url http://127.0.0.1:8000] [--max-upload-bytes N] [--max-decoded-bytes N]

The limits must be the service's (TRAINSERVE_MAX_UPLOAD_BYTES, TRAINSERVE_MAX_DECODED_BYTES)
so that each bomb is just over them. /predict is checked with the newest text model.
"""

import argparse
import os
import sys
import threading
import time

from client import PROJECT, Service

sys.path.insert(0, str(PROJECT))
from tests.hostile import hostile_inputs

PROBES = ["a gripping, beautifully acted film", "dull, lifeless and far too long"]


class PredictWatch(threading.Thread):
    """Asks /predict the same texts every 0.2 s and counts answers that differ or fail."""

    def __init__(self, service: Service, expected: list):
        super().__init__(daemon=True)
        self.service, self.expected = service, expected
        self.asked = self.wrong = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            response = self.service.http.post("/predict", json={"texts": PROBES})
            self.asked += 1
            self.wrong += response.status_code != 200 or response.json() != self.expected
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--max-upload-bytes", type=int, default=512 * 1024 * 1024)
    parser.add_argument("--max-decoded-bytes", type=int, default=1024**3)
    args = parser.parse_args()
    service = Service(args.url)
    first = service.http.post("/predict", json={"texts": PROBES})
    first.raise_for_status()  # needs a trained text model: see the README walkthrough
    watch = PredictWatch(Service(args.url, os.environ.get("TRAINSERVE_PREDICT_KEY")), first.json())
    before = len(service.http.get("/datasets", params={"limit": 200}).json()["items"])
    watch.start()
    print(f"{'hostile input':48} {'status':>6} {'ok':>4}  detail")
    for case in hostile_inputs(args.max_upload_bytes, args.max_decoded_bytes):
        response = service.http.post(case.path, **case.request_kwargs())
        detail = str(response.json().get("detail"))
        ok = response.status_code == case.status and case.detail in detail
        print(f"{case.name:48} {response.status_code:>6} {'yes' if ok else 'NO':>4}  {detail[:70]}")
    watch.stop.set()
    watch.join()
    after = len(service.http.get("/datasets", params={"limit": 200}).json()["items"])
    last = service.http.post("/predict", json={"texts": PROBES}).json() == first.json()
    print(f"datasets before/after: {before}/{after}")
    print(f"/predict during the suite: {watch.asked} asked, {watch.wrong} wrong or failed")
    print(f"/predict after the suite: {'same answers' if last else 'DIFFERENT ANSWERS'}")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()

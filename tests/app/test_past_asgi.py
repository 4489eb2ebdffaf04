"""POST /predict through a real uvicorn running app.past_asgi.PredictProtocol: the lane's
answers are the app's, and what the lane does not take whole, the app answers as ever."""

import socket

import httpx
import numpy as np
import pytest
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from app.past_asgi import LANE_UVICORN, protocol_for
from app.past_asgi_uvicorn import LaneProtocol
from tests.conftest import ADMIN_KEY, app_client, bearer, class_pattern, png_bytes
from tests.utils.api import TOP_IMAGE
from tests.utils.servers import LANE_PROTOCOL, start_api, wait_until_ready
from tests.utils.waiting import wait_until


@pytest.fixture
def served(shapes_trained_once, tmp_path):
    """The latest of two versions trained once for the module, the in-process app (the
    answers without the lane), and a uvicorn process with the lane on the same database,
    its access log on as `make run` has it."""
    snapshot, _, latest = shapes_trained_once
    snapshot.restore()
    with app_client() as in_process:
        train_key = in_process.post("/keys", json={"scope": "train"}).json()["key"]
        log = tmp_path / "uvicorn.log"
        with open(log, "wb") as output:
            # A process of its own for each test: the lane counts from 0.
            api, url = start_api(stdout=output)
        try:
            wait_until_ready(api, url)
            with httpx.Client(base_url=url, headers=bearer(ADMIN_KEY)) as lane:
                yield {
                    "lane": lane,
                    "app": in_process,
                    "version": latest,
                    "train": train_key,
                    "log": log,
                }
        finally:
            api.terminate()
            api.wait(timeout=30)


def lane_counts(client) -> dict[str, float]:
    counts = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("trainserve_predict_lane_requests_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


def post_image(client, image: bytes = TOP_IMAGE, **kwargs) -> httpx.Response:
    return client.post("/predict", files={"file": ("x.png", image)}, **kwargs)


def test_the_lane_answers_what_the_app_answers(served):
    lane, app = served["lane"], served["app"]
    rng = np.random.default_rng(0)
    images = [png_bytes(class_pattern(label % 2, 16, rng)) for label in range(12)]
    for image in images:
        through_lane = post_image(lane, image)
        assert through_lane.status_code == 200
        assert through_lane.headers["content-type"] == "application/json"
        assert through_lane.json() == post_image(app, image).json()
    assert through_lane.json()["model_id"] == served["version"]["id"]
    # The first request's key was new to the process: the app read it. The lane answered
    # the rest, all on one keep-alive connection.
    assert lane_counts(lane) == {"answered": len(images) - 1, "passed": 1}
    metrics = lane.get("/metrics").text
    assert f'route="/predict",status="200"}} {len(images)}.0' in metrics


def test_the_access_log_has_a_line_per_lane_answer_and_no_error(served):
    lane = served["lane"]
    for _ in range(5):
        assert post_image(lane).status_code == 200
    assert post_image(lane, params={"limt": "3"}).status_code == 422  # the app's answer
    assert lane_counts(lane) == {"answered": 4, "passed": 2}
    log = served["log"].read_text()
    # A log call whose arguments do not fit uvicorn's access formatter prints a traceback
    # per request, and the client still gets its answer: only the log shows it.
    assert "Logging error" not in log and "Traceback" not in log, log[-3000:]
    assert log.count('"POST /predict HTTP/1.1" 200') == 5
    assert log.count('"POST /predict?limt=3 HTTP/1.1" 422') == 1


def test_what_the_lane_does_not_take_the_app_answers_alike(served):
    lane, app = served["lane"], served["app"]
    cases = [
        {"headers": bearer("ts_never-seen-token")},  # 401: no key this process holds
        {"headers": bearer(served["train"])},  # 403: a train key
        {"params": {"limt": "3"}},  # 422: an unknown query parameter
        {"data": {"model": "nobody@production"}},  # 404
        {"data": {"top_k": "0"}},  # 422
    ]
    for case in cases:
        through_lane, through_app = post_image(lane, **case), post_image(app, **case)
        assert through_lane.status_code == through_app.status_code >= 400, case
        assert through_lane.json() == through_app.json(), case
    not_an_image = post_image(lane, b"\x89PNG\r\n\x1a\nnot really")
    assert not_an_image.status_code == 422
    assert not_an_image.json() == post_image(app, b"\x89PNG\r\n\x1a\nnot really").json()
    assert lane_counts(lane) == {"answered": 0, "passed": len(cases) + 1}


def test_big_and_chunked_bodies_and_connection_close_go_through(served):
    lane = served["lane"]
    many = [("files", (f"{i}.png", TOP_IMAGE)) for i in range(150)]  # over 64 KiB: the app's
    answers = lane.post("/predict", files=many)
    assert answers.status_code == 200 and len(answers.json()) == 150
    chunked = lane.post(
        "/predict",
        content=iter([b'{"text": "fine"}']),  # no Content-Length: chunked
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 404  # no text model: the app says so
    assert "no trained text_sentiment model" in chunked.json()["detail"]
    closing = post_image(lane, headers={"connection": "close"})
    assert closing.status_code == 200 and closing.headers["connection"] == "close"
    assert lane_counts(lane) == {"answered": 1, "passed": 2}


def test_a_client_waiting_for_100_continue_gets_it(served):
    body = b'{"text": "fine"}'
    port = int(str(served["lane"].base_url).rsplit(":", 1)[1])
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")  # not a 5 s wait
        sock.sendall(body)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 404")  # no text model: the app's answer
    assert lane_counts(served["lane"]) == {"answered": 0, "passed": 1}


def arriving(client) -> float:
    [value] = [
        float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("trainserve_predict_requests_arriving ")
    ]
    return value


@pytest.mark.parametrize("protocol", [LANE_PROTOCOL, ()], ids=["lane", "stock"])
def test_a_prediction_whose_body_is_on_its_way_counts_as_arriving(embedded_settings, protocol):
    """Through the lane as through the app, a batch being formed waits for such a request."""
    api, url = start_api(args=protocol)
    port = int(url.rsplit(":", 1)[1])
    try:
        wait_until_ready(api, url)
        body = b'{"text": "a fine film"}'
        head = (
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
        )
        # /metrics needs an admin key (TRAINSERVE_METRICS_SCOPE's default).
        with httpx.Client(base_url=url, headers=bearer(ADMIN_KEY)) as client:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                assert arriving(client) == 0
                sock.sendall(head.encode() + body[:5])
                wait_until(
                    lambda: arriving(client) == 1,
                    timeout=10,
                    what="the request to count as arriving",
                )
                sock.sendall(body[5:])
                assert sock.recv(4096).startswith(b"HTTP/1.1 404")  # no text model yet
                assert arriving(client) == 0
                sock.sendall(head.encode() + body[:5])
                wait_until(
                    lambda: arriving(client) == 1, timeout=10, what="the second request to count"
                )
            # The client went away before its body came: the request is no longer awaited.
            wait_until(
                lambda: arriving(client) == 0, timeout=10, what="the count to drop on disconnect"
            )
    finally:
        api.terminate()
        api.wait(timeout=30)


def test_the_lane_is_served_on_its_uvicorn_release_only(caplog):
    assert protocol_for(f"{LANE_UVICORN}.3") is LaneProtocol
    assert not caplog.records
    assert protocol_for("0.55.0") is AutoHTTPProtocol
    [warning] = caplog.records
    assert warning.levelname == "WARNING" and "uvicorn 0.55.0 is not the 0.54.x" in warning.message
    assert "stock protocol" in warning.message

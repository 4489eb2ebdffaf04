"""POST /predict through app.past_router: the answers, errors and metrics the router gave."""

import pytest
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

import app.keys
from app.main import create_app
from app.past_router import PredictPastRouter
from app.routes.predict import MAX_EXAMPLES
from tests.conftest import ADMIN_KEY, bearer


@pytest.fixture
def client(embedded_settings):
    with TestClient(create_app(), headers=bearer(ADMIN_KEY), raise_server_exceptions=False) as c:
        yield c


def test_errors_are_mapped_by_the_apps_handlers_and_counted_by_route(client):
    missing = client.post("/predict", json={"text": "fine", "model": "nobody@production"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]  # a LookupError
    bad = client.post("/predict", json={"txt": "typo"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["txt"]
    assert client.post("/predict", params={"limt": 5}, json={"text": "x"}).status_code == 422
    metrics = client.get("/metrics").text
    for status in ("404", "422"):
        assert f'route="/predict",status="{status}"' in metrics


def test_other_methods_at_the_path_go_through_the_router(client):
    answer = client.get("/predict")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    # Allow names every method of every route at the path (FastAPI names one route's)
    assert client.put("/jobs").headers["allow"] == "GET, POST"


def test_an_unreachable_database_is_a_503_with_retry_after(client, monkeypatch):
    def unreachable(_key_hash):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(app.keys, "_read_key", unreachable)
    answer = client.post("/predict", headers=bearer("ts_never-seen"), json={"text": "fine"})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json() == {"detail": "the database cannot be reached; retry shortly"}


def test_a_handler_that_takes_more_than_the_request_is_refused():
    async def with_body(request: Request, body: dict): ...

    route = APIRoute("/x", with_body, methods=["POST"])
    with pytest.raises(TypeError, match="takes only `request`"):
        PredictPastRouter(None, api=FastAPI(), route=route)


def test_a_bug_in_the_handler_is_a_500(client, monkeypatch):
    async def broken(*_args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.model_server, "resolve", broken)
    answer = client.post("/predict", json={"text": "fine"})
    assert answer.status_code == 500
    assert 'route="/predict",status="500"' in client.get("/metrics").text


def test_more_images_than_the_limit_is_a_422_naming_it(client):
    tiny = b"\x89PNG\r\n\x1a\n"  # refused on count before any is decoded
    files = [("files", (f"{i}.png", tiny)) for i in range(MAX_EXAMPLES + 1)]
    refused = client.post("/predict", files=files)
    assert refused.status_code == 422
    assert refused.json()["detail"] == "'files' takes at most 1024 images a request, not 1025"
    at_the_limit = client.post("/predict", files=files[:MAX_EXAMPLES])
    assert at_the_limit.status_code == 404  # past the count: no image model trained yet

"""Routes through app.past_router: the answers, errors and metrics the router gave."""

import uuid
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

import app.keys
from app.main import create_app
from app.past_router import PastRouter
from app.schemas import MAX_EXAMPLES
from tests.conftest import ADMIN_KEY, bearer
from tests.utils.api import IMAGE_JOB, new_key, upload


def admin_client(api: FastAPI) -> TestClient:
    return TestClient(api, headers=bearer(ADMIN_KEY), raise_server_exceptions=False)


@pytest.fixture
def client(embedded_settings):
    with admin_client(create_app()) as c:
        yield c


@pytest.fixture
def fastapi_only(embedded_settings):
    """The same app, on the same database, with PastRouter left out: every request goes
    through FastAPI's router (Starlette builds the middleware stack on the first request)."""
    api = create_app()
    api.user_middleware = [m for m in api.user_middleware if m.cls is not PastRouter]
    with admin_client(api) as c:
        yield c


BAD_LISTINGS = (
    {"limit": "0"},
    {"limit": "201"},
    {"limit": "abc"},
    {"limit": ["3", "0"]},  # the last value counts
    {"limt": "5"},
    {"status": "bogus"},
    [("status", "queued"), ("status", "bogus")],
    {"task": "nope", "limit": "0"},  # both named, in the query's declared order
    {"cursor": "nonsense"},
)


def test_the_polled_job_routes_answer_as_fastapi_does(client, fastapi_only, two_class_zip):
    dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
    job_id = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id}).json()["id"]
    predict_key = new_key(client, "predict")["key"]
    requests = [("GET", "/jobs", {"params": query}) for query in BAD_LISTINGS] + [
        ("GET", "/jobs", {"params": [("status", "queued"), ("status", "running")]}),
        ("GET", "/jobs", {"params": {"task": "image_classification", "limit": "1"}}),
        ("GET", f"/jobs/{job_id}", {}),
        ("GET", f"/jobs/{uuid.uuid4().hex}", {}),
        ("GET", f"/jobs/{job_id}", {"params": {"limit": "1"}}),
        ("GET", "/jobs", {"params": {"limit": "0"}, "headers": {"Authorization": ""}}),
        ("GET", f"/jobs/{job_id}", {"headers": bearer("ts_" + "x" * 43)}),
        ("GET", "/jobs", {"params": {"limt": "5"}, "headers": bearer(predict_key)}),
        ("HEAD", f"/jobs/{job_id}", {}),
        ("DELETE", "/jobs", {}),
        ("GET", "/jobs/", {}),  # FastAPI's redirect to /jobs
    ]
    for method, path, options in requests:
        fast, full = (
            c.request(method, path, follow_redirects=False, **options)
            for c in (client, fastapi_only)
        )
        answer = (fast.status_code, fast.content, dict(fast.headers))
        assert answer == (full.status_code, full.content, dict(full.headers)), (path, options)


def test_bad_listing_queries_and_unknown_jobs_are_named(client):
    too_few = client.get("/jobs", params={"limit": "0"})
    assert too_few.status_code == 422
    assert too_few.json()["detail"] == [
        {
            "type": "greater_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be greater than or equal to 1",
            "input": "0",
            "ctx": {"ge": 1},
        }
    ]
    typo = client.get("/jobs", params={"limt": "5"})
    assert typo.status_code == 422 and typo.json()["detail"] == (
        "unknown query parameter 'limt'; this route takes: cursor, limit, name, status, task"
    )
    [bogus] = client.get("/jobs", params={"status": ["queued", "bogus"]}).json()["detail"]
    assert bogus["loc"] == ["query", "status", 1] and bogus["input"] == "bogus"
    unknown = client.get("/jobs/nope")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "no job with id 'nope'"}


def test_the_polled_job_routes_need_a_train_key(client):
    for path in ("/jobs", "/jobs/nope"):
        missing = client.get(path, headers={"Authorization": ""}, params={"limit": "0"})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = client.get(path, headers=bearer(new_key(client, "predict")["key"]))
        assert wrong.status_code == 403 and "needs 'train'" in wrong.json()["detail"]


class Page(BaseModel):
    limit: int = Field(10, ge=1)
    tags: list[str] = []


async def thing(*, thing_id: str, page: Annotated[Page, Query()]) -> JSONResponse:
    return JSONResponse({"id": thing_id, "limit": page.limit, "tags": page.tags})


def test_only_the_routes_method_and_whole_path_are_taken_past_the_router():
    behind = FastAPI()

    @behind.api_route("/{path:path}", methods=["GET", "POST"])
    async def fallback(path: str) -> str:
        return f"behind: {path}"

    route = APIRoute("/things/{thing_id}", thing, methods=["GET"])
    with TestClient(PastRouter(behind, api=FastAPI(), routes=[route])) as past:
        query = [("limit", "2"), ("tags", "a"), ("tags", "b")]
        taken = past.get("/things/x", params=query)
        assert taken.json() == {"id": "x", "limit": 2, "tags": ["a", "b"]}
        assert past.post("/things/x").json() == "behind: things/x"
        assert past.get("/things/x/more").json() == "behind: things/x/more"
        assert past.get("/things").json() == "behind: things"
        fastapi = FastAPI()
        fastapi.add_api_route("/things/{thing_id}", thing)
        with TestClient(fastapi) as full:
            for query in ({"limit": "0"}, {"limit": "many"}, {"limit": ["1", "0"]}):
                refused = past.get("/things/x", params=query)
                assert refused.status_code == 422
                assert refused.json() == full.get("/things/x", params=query).json()


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


async def with_body(request: Request, body: dict): ...


async def with_header(*, agent: Annotated[str | None, Header()] = None): ...


async def with_int_path(*, number: int): ...


async def with_two_queries(*, one: Annotated[Page, Query()], two: Annotated[Page, Query()]): ...


def synchronous(request: Request): ...


@pytest.mark.parametrize(
    ("route", "refusal"),
    [
        (APIRoute("/x", with_body, methods=["POST"]), "takes only `request`"),
        (APIRoute("/x", with_header), "takes only `request`"),
        (APIRoute("/x/{number}", with_int_path), "takes only `request`"),
        (APIRoute("/x", with_two_queries), "one query model"),
        (APIRoute("/x", synchronous), "must be async"),
        (APIRoute("/x", thing, dependencies=[Depends(synchronous)]), "no dependency but"),
    ],
)
def test_an_endpoint_that_takes_what_the_router_cannot_give_is_refused(route, refusal):
    with pytest.raises(TypeError, match=refusal):
        PastRouter(None, api=FastAPI(), routes=[route])


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

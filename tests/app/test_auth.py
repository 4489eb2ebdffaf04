"""API keys, scopes and quotas, in-process on the embedded defaults."""

import asyncio
import logging
import re
import stat
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

import app.keys
from app.config import Settings
from app.keys import KeyCache, bootstrap_admin_key
from app.keys import main as keys_cli
from app.quotas import TokenBuckets, rate_refusal
from app.store.db import get_session_factory
from app.store.keys import list_keys
from app.store.tables import ApiKey
from tests.conftest import ADMIN_KEY, app_client, bearer
from tests.utils.api import IMAGE_JOB, CountedBody, new_key, upload
from tests.utils.waiting import wait_until
from workers.runner import run_job

# The scopes each secured path needs, the first (method, path pattern) that matches. A new
# router must be added here, or the test fails.
SCOPES_BY_ROUTE = [
    (r"PUT|POST", r"/models/\{name\}/aliases/\{alias\}(/rollback)?", ("deploy",)),
    (r"DELETE", r"/models/\{model_id\}", ("deploy",)),
    (r".*", r"/models/\{name\}/shares.*", ("train",)),
    (r".*", r"/models.*", ("train", "deploy")),
    (r".*", r"/(datasets|jobs|series).*", ("train",)),
    (r".*", r"/(predict|v2/).*", ("predict",)),
    (r"POST", r"/explain", ("predict",)),
    (r".*", r"/sweeps.*", ("train",)),
    (r".*", r"/keys.*", ("admin",)),
    (r"GET", r"/workers", ("admin",)),
    (r"GET", r"/metrics", ("admin",)),  # TRAINSERVE_METRICS_SCOPE's default
]
OPEN_PATHS = {"/healthz", "/readyz", "/v2", "/v2/health/live", "/v2/health/ready"}


def scopes_of(method: str, path: str) -> tuple[str, ...]:
    return next(
        scopes
        for methods, pattern, scopes in SCOPES_BY_ROUTE
        if re.fullmatch(methods, method.upper()) and re.fullmatch(pattern, path)
    )


def secured_operations(client) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path with ids filled in, scopes) of every operation that asks for a key."""
    operations = []
    for path, methods in client.get("/openapi.json").json()["paths"].items():
        for method, operation in methods.items():
            if path in OPEN_PATHS:
                assert "security" not in operation
                continue
            assert operation["security"] == [{"HTTPBearer": []}], path
            filled = re.sub(r"\{\w+\}", uuid.uuid4().hex, path)
            operations.append((method, filled, scopes_of(method, path)))
    return operations


def test_every_route_needs_a_key_of_its_scope(client):
    keys = {scope: new_key(client, scope)["key"] for scope in ("train", "deploy", "predict")}
    operations = secured_operations(client)
    assert len(operations) >= 10
    for method, path, scopes in operations:
        missing = client.request(method, path, headers={"Authorization": ""})
        assert missing.status_code == 401, (method, path)
        assert missing.headers["www-authenticate"] == "Bearer"
        unknown = client.request(method, path, headers=bearer("ts_" + "x" * 43))
        assert unknown.status_code == 401 and "unknown or revoked" in unknown.text
        needs = f"needs {', '.join(map(repr, scopes))} or 'admin'"
        for other in sorted(set(keys) - set(scopes)):
            wrong = client.request(method, path, headers=bearer(keys[other]))
            assert wrong.status_code == 403, (method, path, other)
            refusal = wrong.json()  # under /v2 in the KServe protocol's shape
            assert needs in (refusal["error"] if path.startswith("/v2/") else refusal["detail"])
        for token in [keys[scope] for scope in scopes if scope in keys] + [ADMIN_KEY]:
            allowed = client.request(method, path, headers=bearer(token))
            assert allowed.status_code not in (401, 403), (method, path, allowed.text)
    for path in OPEN_PATHS | {"/docs", "/openapi.json"}:
        assert client.get(path, headers={"Authorization": ""}).status_code == 200


def test_a_key_of_another_scope_is_refused_before_the_body_is_read(client):
    keys = {scope: new_key(client, scope)["key"] for scope in ("train", "deploy", "predict")}
    for method, path, scopes in secured_operations(client):
        needs = f"needs {', '.join(map(repr, scopes))} or 'admin'"
        for other in sorted(set(keys) - set(scopes)):
            body = CountedBody()
            wrong = client.request(method, path, headers=bearer(keys[other]), content=body)
            assert wrong.status_code == 403, (method, path, other, wrong.text)
            refusal = wrong.json()  # under /v2 in the KServe protocol's shape
            assert needs in (refusal["error"] if path.startswith("/v2/") else refusal["detail"])
            assert body.sent == 0, (method, path, other)
    # The right scope still reaches the route, which reads the body: here not multipart.
    body = CountedBody()
    upload = client.post("/datasets", headers=bearer(keys["train"]), content=body)
    assert upload.status_code == 415 and body.sent == 0  # the content type alone says so
    body = CountedBody()
    job = client.post("/jobs", headers=bearer(keys["train"]), content=body)
    assert job.status_code == 422 and "valid dictionary" in job.text  # read, and parsed
    assert body.sent == len(body.content)


def test_a_revoked_key_is_refused_everywhere(client):
    train = new_key(client, "train")
    assert client.get("/datasets", headers=bearer(train["key"])).status_code == 200
    revoked = client.post(f"/keys/{train['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.post(f"/keys/{train['id']}/revoke").json() == revoked.json()  # idempotent
    for method, path, _ in secured_operations(client):
        response = client.request(method, path, headers=bearer(train["key"]))
        assert response.status_code == 401, (method, path)
    assert client.post(f"/keys/{uuid.uuid4().hex}/revoke").status_code == 404


def test_keys_are_stored_hashed_and_listed_without_tokens(client, embedded_settings):
    created = new_key(client, "predict", rate_limit_per_second=5, max_concurrent_jobs=2)
    assert created["key"].startswith(created["prefix"]) and len(created["key"]) > 40
    listed = client.get("/keys").json()["items"]
    assert listed[0]["id"] == created["id"]
    assert all("key" not in k for k in listed)
    assert {k["scope"] for k in listed} == {"admin", "predict"}
    database = (embedded_settings.artifacts_dir.parent / "trainserve.db").read_bytes()
    assert created["key"].encode() not in database and ADMIN_KEY.encode() not in database
    bad = client.post("/keys", json={"scope": "root"})
    assert bad.status_code == 422 and "scope" in bad.text


def test_the_last_admin_key_cannot_be_revoked(client):
    [admin] = client.get("/keys").json()["items"]
    refused = client.post(f"/keys/{admin['id']}/revoke")
    assert refused.status_code == 409 and "last active admin key" in refused.json()["detail"]
    second = new_key(client, "admin")
    assert client.post(f"/keys/{admin['id']}/revoke").status_code == 200
    assert client.get("/keys").status_code == 401  # the client still sends the revoked key
    assert client.get("/keys", headers=bearer(second["key"])).status_code == 200


def test_first_start_writes_its_admin_key_to_a_file_only_its_user_reads(
    monkeypatch, embedded_settings, caplog
):
    monkeypatch.setattr(embedded_settings, "admin_key", None)
    caplog.set_level(logging.WARNING, logger="trainserve.api")
    path = embedded_settings.artifacts_dir / "first-admin-key"
    with app_client() as client:
        token = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert str(path) in caplog.text and token not in caplog.text
        assert token.startswith("ts_") and len(token) > 40
        assert client.get("/keys", headers=bearer(token)).status_code == 200
    caplog.clear()
    with app_client() as client:  # a key exists now: none is made or written
        assert "no admin API key existed" not in caplog.text
        assert len(client.get("/keys", headers=bearer(token)).json()["items"]) == 1
    assert path.read_text().strip() == token


def test_two_processes_starting_at_once_make_one_first_admin_key(monkeypatch, embedded_settings):
    """The second process counted no admin key before the first one's committed (forced
    here): its insert meets the first key's unique `first_admin`, and it makes nothing."""
    monkeypatch.setattr(embedded_settings, "admin_key", None)
    path = embedded_settings.artifacts_dir / "first-admin-key"
    with get_session_factory()() as session:
        assert bootstrap_admin_key(session, embedded_settings) == path
        token = path.read_text()
        monkeypatch.setattr(app.keys, "count_active_admin_keys", lambda _session: 0)
        assert bootstrap_admin_key(session, embedded_settings) is None
        admins = list_keys(session, 10, None)[0]
    assert [key.name for key in admins] == ["first admin key"]
    assert path.read_text() == token
    assert [p.name for p in path.parent.iterdir()] == ["first-admin-key"]  # no leftovers


def test_a_short_admin_key_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("TRAINSERVE_ADMIN_KEY", "ts_" + "x" * 28)
    with pytest.raises(ValidationError, match="has 31 characters and needs at least 32"):
        Settings()
    monkeypatch.setenv("TRAINSERVE_ADMIN_KEY", "ts_" + "x" * 29)
    assert Settings().admin_key is not None


def test_the_stored_prefix_is_seven_characters_of_any_key(client, embedded_settings):
    created = new_key(client, "train")
    assert created["prefix"] == created["key"][:7]
    admin = next(k for k in client.get("/keys").json()["items"] if k["scope"] == "admin")
    assert admin["prefix"] == ADMIN_KEY[:7]
    database = (embedded_settings.artifacts_dir.parent / "trainserve.db").read_bytes()
    assert ADMIN_KEY[:8].encode() not in database


def test_an_expired_key_gets_401_saying_so(client):
    soon = datetime.now(UTC) + timedelta(seconds=2)
    key = new_key(client, "train", expires_at=soon.isoformat())
    assert key["expires_at"] and client.get("/jobs", headers=bearer(key["key"])).status_code == 200
    wait_until(lambda: datetime.now(UTC) > soon, timeout=10)
    expired = client.get("/jobs", headers=bearer(key["key"]))
    assert expired.status_code == 401 and "expired at" in expired.json()["detail"]
    past = client.post("/keys", json={"scope": "train", "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 422 and "has passed" in past.json()["detail"]


def test_failed_authentications_are_throttled_per_address(monkeypatch, embedded_settings):
    monkeypatch.setattr(embedded_settings, "auth_failures_per_minute", 6)
    monkeypatch.setattr(embedded_settings, "auth_failure_burst", 3)
    with app_client() as client:
        guesses = [
            client.get("/jobs", headers=bearer(f"ts_guess{i}")).status_code for i in range(4)
        ]
        assert guesses == [401, 401, 401, 429]
        refused = client.get("/jobs")  # the admin key, from the same address: refused too
        assert refused.status_code == 429 and "failed authentications" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        client.headers.pop("Authorization")
        assert client.get("/jobs").status_code == 401  # no key sent: nothing to throttle


def test_the_key_cache_rereads_a_key_after_its_ttl(embedded_settings, monkeypatch):
    """A key revoked by another process (here the command line) is refused once the cache's
    copy is older than its ttl and has been read again; the old copy answers meanwhile,
    and while the database cannot be reached."""
    now = [0.0]
    cache = KeyCache(ttl=1.0, clock=lambda: now[0])
    with app_client() as client:
        key = new_key(client, "train")
    reads = []
    read_key = app.keys._read_key
    monkeypatch.setattr(app.keys, "_read_key", lambda h: reads.append(h) or read_key(h))

    async def revoked_after(token: str) -> list[bool]:
        """Whether 21 requests at once, then one after the background read, saw it revoked."""
        at_once = await asyncio.gather(*(cache.find(token) for _ in range(21)))
        for _ in range(500):  # the background read ends
            if not cache._reads:
                break
            await asyncio.sleep(0.01)
        later = await cache.find(token)
        return [key.revoked_at is not None for key in [*at_once, later]]

    async def scenario():
        assert (await cache.find(key["key"])).revoked_at is None
        keys_cli(["revoke", key["id"]])
        now[0] = 0.9
        assert (await cache.find(key["key"])).revoked_at is None and len(reads) == 1
        now[0] = 1.0  # old: the copy answers, and one read for all 21 requests
        assert await revoked_after(key["key"]) == [False] * 21 + [True]
        assert len(reads) == 2
        assert await cache.find("ts_unknown") is None
        assert len(cache._keys) == 1  # unknown tokens are not remembered

        def unreachable(_key_hash):
            raise OperationalError("SELECT", {}, Exception("connection refused"))

        monkeypatch.setattr(app.keys, "_read_key", unreachable)
        now[0] = 5.0
        assert await revoked_after(key["key"]) == [True] * 22  # the copy goes on answering
        with pytest.raises(OperationalError):
            await cache.find("ts_never-seen")  # nothing to answer with

    asyncio.run(scenario())


def test_auth_off_lets_every_request_through(monkeypatch, embedded_settings, two_class_zip):
    monkeypatch.setattr(embedded_settings, "auth_enabled", False)
    with app_client() as client:
        client.headers.pop("Authorization")
        dataset_id = upload(client, two_class_zip, "d.zip").json()["id"]
        created = client.post("/jobs", json={**IMAGE_JOB, "dataset_id": dataset_id})
        assert created.status_code == 201 and client.get("/keys").status_code == 200


def test_rate_limit_is_per_key_with_retry_after(monkeypatch, client, embedded_settings):
    monkeypatch.setattr(embedded_settings, "rate_limit_burst", 3)
    slow = new_key(client, "train", rate_limit_per_second=0.25)
    statuses = [client.get("/jobs", headers=bearer(slow["key"])).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/jobs", headers=bearer(slow["key"]))
    assert limited.status_code == 429 and "0.25 requests per second" in limited.json()["detail"]
    assert 1 <= int(limited.headers["retry-after"]) <= 4
    assert client.get("/jobs").status_code == 200  # the admin key has its own bucket


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    assert [buckets.take("k", rate=2, burst=2) for _ in range(2)] == [0, 0]
    assert buckets.take("k", rate=2, burst=2) == pytest.approx(0.5)
    now[0] = 0.5
    assert buckets.take("k", rate=2, burst=2) == 0
    now[0] = 100  # saved up tokens stop at the burst
    assert [buckets.take("k", rate=2, burst=2) for _ in range(3)][2] > 0
    assert buckets.take("other", rate=2, burst=2) == 0


def test_the_default_rate_limit_lets_a_dashboard_and_a_cli_poll_one_key():
    """A minute of one key in one API process, the polling the default is sized for: a
    dashboard opens on a page of 20 jobs (the page, each job and each job's loss series at
    once), then each second reads the page, each running job (the default job quota's
    worth) and its series, and reconnects an event stream; a CLI reads its job each second
    and lists jobs every 5 s."""
    defaults = Settings.model_construct()  # the fields' defaults, whatever the environment
    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    key = ApiKey(id="k", rate_limit_per_second=None)
    refusals = [rate_refusal(buckets, key, defaults) for _ in range(1 + 20 + 20)]
    for second in range(60):
        now[0] = second + 1.0
        dashboard = 1 + 2 * defaults.max_concurrent_jobs + 1
        cli = 1 + (second % 5 == 0)
        refusals += [rate_refusal(buckets, key, defaults) for _ in range(dashboard + cli)]
    assert len(refusals) > 700 and set(refusals) == {None}


def test_concurrent_jobs_per_key(client, two_class_zip):
    one_at_a_time = bearer(new_key(client, "train", max_concurrent_jobs=1)["key"])
    dataset_id = upload(client, two_class_zip, "d.zip", headers=one_at_a_time).json()["id"]
    spec = {**IMAGE_JOB, "dataset_id": dataset_id, "hyperparameters": {"epochs": 1}}
    first = client.post("/jobs", json=spec, headers=one_at_a_time)
    assert first.status_code == 201
    second = client.post("/jobs", json=spec, headers=one_at_a_time)
    assert second.status_code == 429 and "1 queued or running jobs" in second.json()["detail"]
    assert second.headers["retry-after"] == "30"
    assert client.post("/jobs", json=spec).status_code == 201  # other keys are not held up
    assert len(client.get("/jobs").json()["items"]) == 2  # the refused job was not stored
    run_job(first.json()["id"])
    assert client.post("/jobs", json=spec, headers=one_at_a_time).status_code == 201


def test_keys_without_their_own_quota_get_the_setting(monkeypatch, client, embedded_settings):
    monkeypatch.setattr(embedded_settings, "max_concurrent_jobs", 1)
    dataset_id = upload(client, _small_zip(), "d.zip").json()["id"]
    spec = {**IMAGE_JOB, "dataset_id": dataset_id}
    assert client.post("/jobs", json=spec).status_code == 201
    assert client.post("/jobs", json=spec).status_code == 429


def _small_zip() -> bytes:
    from tests.hostile import valid_png, with_class_b

    return with_class_b({"a/1.png": valid_png(), "a/2.png": valid_png()})  # one to hold out

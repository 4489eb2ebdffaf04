"""What the open routes show: /readyz names what is down and nothing more, /metrics needs
the key scope its setting names."""

import logging

import pytest

from tests.conftest import ADMIN_KEY, app_client, bearer, clear_cached_settings
from tests.utils.api import new_key

# Nothing listens on port 1: each refuses at once, with a message naming host and port.
UNREACHABLE = {
    "database": ("TRAINSERVE_DATABASE_URL", "postgresql+psycopg://secret-user@127.0.0.1:1/db"),
    "broker": ("TRAINSERVE_BROKER_URL", "redis://:secret-password@127.0.0.1:1/0"),
}


@pytest.mark.parametrize("down", sorted(UNREACHABLE))
def test_readyz_names_what_is_down_and_logs_why_on_one_line(
    embedded_settings, monkeypatch, caplog, down
):
    variable, url = UNREACHABLE[down]
    monkeypatch.setenv(variable, url)
    clear_cached_settings()
    caplog.set_level(logging.WARNING, logger="trainserve.api")
    with app_client() as client:
        caplog.clear()
        answer = client.get("/readyz", headers={"Authorization": ""})
    assert answer.status_code == 503
    assert answer.json() == {"detail": f"not ready: the {down} is unavailable"}
    [record] = [r for r in caplog.records if r.getMessage().startswith("/readyz")]
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "127.0.0.1" in record.getMessage()  # the detail is the operator's, in the log


def test_metrics_need_an_admin_key_by_default(client):
    predict = new_key(client, "predict")["key"]
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert client.get("/metrics", headers=bearer(predict)).status_code == 403
    answer = client.get("/metrics", headers=bearer(ADMIN_KEY))
    assert answer.status_code == 200 and "trainserve_http_request_duration_seconds" in answer.text


@pytest.mark.parametrize(("scope", "without_key"), [("open", 200), ("predict", 401)])
def test_the_metrics_scope_is_a_setting(embedded_settings, monkeypatch, scope, without_key):
    monkeypatch.setattr(embedded_settings, "metrics_scope", scope)
    with app_client() as client:
        assert client.get("/metrics", headers={"Authorization": ""}).status_code == without_key
        if scope == "predict":
            predict = new_key(client, "predict")["key"]
            assert client.get("/metrics", headers=bearer(predict)).status_code == 200

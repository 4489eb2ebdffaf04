"""schemathesis against the app's own OpenAPI, in-process: no server errors, no response
that breaks the schema. The figures are printed at the end of the pytest run."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from app.main import create_app
from tests.conftest import (
    ADMIN_KEY,
    app_client,
    bearer,
    clear_cached_settings,
    embedded_settings_in,
)

EXAMPLES_PER_OPERATION = 25
FIGURES = {"operations": set(), "cases": 0, "server errors": 0}


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TRAINSERVE_RATE_LIMIT_PER_SECOND", "0")  # the fuzzer outpaces clients
    embedded_settings_in(tmp_path_factory.mktemp("fuzz"), monkeypatch)
    with app_client() as client:  # runs the lifespan: the admin key, the queue, the cache
        schema.app = client.app  # every request, the checks' own included, goes in-process
        yield
    monkeypatch.undo()
    clear_cached_settings()


# The schema is the app's own; the app that answers is the fixture's (migrated, key stored).
# (schemathesis.pytest.from_fixture does not work with pytest 9 yet.)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_every_response_fits_the_schema(case, fuzzed_app):
    FIGURES["operations"].add(case.operation.label)
    FIGURES["cases"] += 1
    response = case.call(headers=bearer(ADMIN_KEY))
    FIGURES["server errors"] += response.status_code >= 500
    # Not every schema-valid request can succeed: a dataset_id must name a stored dataset,
    # an upload must hold real data. And a negative case that drops or spoils the
    # Authorization header gets a valid one back from the call above, so "schema-violating
    # request accepted" failed at random; tests/app/test_auth.py checks missing, wrong and
    # revoked keys on every route instead. Every other check runs.
    case.validate_response(
        response,
        headers=bearer(ADMIN_KEY),
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )

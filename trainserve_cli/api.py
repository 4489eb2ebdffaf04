"""The HTTP API as the commands call it: one httpx client, and an error answer turned into
ApiError, whose message is the answer's `detail` as a person reads it."""

import json
from typing import Any

import httpx

from trainserve_cli.config import Connection

# Uploads are checked and decoded before the answer, which takes a while for a large set;
# a connection that cannot be made fails fast.
TIMEOUT = httpx.Timeout(300, connect=10)
# Statuses that a restart or an outage of the service answers for a while.
UNAVAILABLE = (502, 503, 504)


class ApiError(Exception):
    """An error answer of the API."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def detail_text(detail: Any) -> str:
    """An answer's `detail` as lines a person reads: a sentence as it is; invalid fields
    (FastAPI's 422 list) one per line, as `field.path: message`."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and all(isinstance(item, dict) for item in detail):
        return "\n".join(_field_problem(item) for item in detail)
    return json.dumps(detail)


def _field_problem(item: dict) -> str:
    location = [str(part) for part in item.get("loc", [])]
    if location[:1] == ["body"]:  # where the field is: the body is where they all are
        location = location[1:]
    where = ".".join(location)
    message = item.get("msg", json.dumps(item))
    return f"{where}: {message}" if where else message


def error_of(response: httpx.Response) -> ApiError:
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):  # not the API's error shape (a proxy's page)
        detail = response.text.strip()[:300] or response.reason_phrase
    message = detail_text(detail)
    if response.status_code == 401:
        message += " (give a key: --api-key, TRAINSERVE_API_KEY or `trainserve login`)"
    if retry_after := response.headers.get("Retry-After"):
        message += f" (retry after {retry_after} s)"
    return ApiError(response.status_code, message)


class Unreachable(Exception):
    """No answer from the service: it is down, the URL is wrong, or the network is."""

    def __init__(self, url: str, problem: object):
        super().__init__(f"cannot reach {url}: {problem or type(problem).__name__}")


class Api:
    def __init__(self, connection: Connection):
        headers = {"Authorization": f"Bearer {connection.api_key}"} if connection.api_key else {}
        self.url = connection.url
        self.http = httpx.Client(base_url=connection.url, headers=headers, timeout=TIMEOUT)

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """The answer; ApiError for an error status, Unreachable for none."""
        try:
            response = self.http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from exc
        if response.is_error:
            raise error_of(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """The JSON answer of a GET; parameters that are None are left out."""
        kept = {name: value for name, value in params.items() if value is not None}
        return self.request("GET", path, params=kept).json()

    def post(self, path: str, body: Any = None, **options: Any) -> Any:
        return self.request("POST", path, json=body, **options).json()

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body).json()

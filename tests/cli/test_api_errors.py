"""The API's error answers as the CLI prints them: the detail, readable."""

import httpx

from trainserve_cli.api import detail_text, error_of

REQUEST = httpx.Request("POST", "http://127.0.0.1:8000/jobs")


def answer(status: int, **kwargs) -> httpx.Response:
    return httpx.Response(status, request=REQUEST, **kwargs)


def test_a_sentence_is_printed_as_it_is():
    assert detail_text("no job with id 'x'") == "no job with id 'x'"


def test_invalid_fields_are_one_line_each_named_by_their_path():
    detail = [
        {
            "type": "greater_than",
            "loc": ["body", "hyperparameters", "lr"],
            "msg": "Input should be greater than 0",
            "input": -1,
        },
        {
            "type": "extra_forbidden",
            "loc": ["body", "epochz"],
            "msg": "Extra inputs are not permitted",
        },
        {
            "type": "int_parsing",
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer",
        },
        {"type": "missing", "loc": [], "msg": "Field required"},
    ]
    assert detail_text(detail).splitlines() == [
        "hyperparameters.lr: Input should be greater than 0",
        "epochz: Extra inputs are not permitted",
        "query.limit: Input should be a valid integer",
        "Field required",
    ]


def test_a_detail_of_another_shape_is_printed_as_json():
    assert detail_text({"code": 7}) == '{"code": 7}'


def test_an_error_answer_becomes_its_detail_with_status_and_hints():
    refused = error_of(answer(429, json={"detail": "rate limit"}, headers={"Retry-After": "2"}))
    assert (refused.status, str(refused)) == (429, "rate limit (retry after 2 s)")
    unknown = error_of(answer(401, json={"detail": "unknown API key"}))
    assert str(unknown).startswith("unknown API key (give a key: --api-key, TRAINSERVE_API_KEY")


def test_an_answer_that_is_not_the_apis_shape_is_still_shown():
    assert str(error_of(answer(502, text="<html>Bad Gateway</html>"))) == "<html>Bad Gateway</html>"
    assert str(error_of(answer(503))) == "Service Unavailable"
    assert str(error_of(answer(500, json=["no detail"]))) == '["no detail"]'

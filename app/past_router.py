"""A few hot routes handed to their endpoints past FastAPI's router: plain ASGI, any server.

FastAPI takes a request through its exception and exit-stack middleware, the router's
match over every route, dependency solving and response handling before an endpoint runs:
for a prediction that was a fifth of the server's CPU time per request (bench/serving.py),
for GET /jobs/{id} over a quarter (py-spy under bench/job_api.py). `PastRouter` hands the
requests of a declared few routes (POST /predict, and GET /jobs and /jobs/{job_id}, which
dashboards and CLIs poll) to the route's endpoint itself, with what FastAPI would have
given it, and maps its exceptions with the app's own handlers, as the router would. Every
other request, and every other method at those paths, goes through FastAPI. The routes
stay declared there, so the docs and OpenAPI describe them, and FastAPI would answer them
the same way.

What it gives an endpoint, in FastAPI's order, is checked at start against the route:
its key check (the route's own `require_scope` dependency, an app.deps.ScopeCheck),
then its arguments: the `request`, path parameters of type `str`, and one query model
(`Annotated[SomeModel, Query()]`), read as FastAPI reads one, with FastAPI's 422. A route
that asks for anything else (a body, a header, another dependency) is refused at start:
it would be silently missing here.
"""

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import ScopeCheck

QUERY = type(Query())  # the marker of `Annotated[SomeModel, Query()]`
SEQUENCES = (list, set, frozenset, tuple)


class PastRouter:
    """Pure ASGI middleware, innermost: the body-size limit and metrics still apply."""

    def __init__(self, app: ASGIApp, api: FastAPI, routes: Sequence[APIRoute]):
        self.app, self.api = app, api
        self.endpoints = [PastEndpoint.of(route) for route in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for endpoint in self.endpoints:
                match, child_scope = endpoint.route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)  # as the router does: path_params, route
                    await self._answer(endpoint, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, endpoint: "PastEndpoint", scope: Scope, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint.answer(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # a bug: Starlette's outermost middleware answers 500
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception):
        """The app's handler for this exception's class or its nearest base, as Starlette
        looks it up."""
        for cls in type(exc).__mro__:
            if cls in self.api.exception_handlers:
                return self.api.exception_handlers[cls]
        return None


@dataclass(frozen=True)
class PastEndpoint:
    """A route's endpoint with what it takes: its key checks, and how each argument is made
    from the request."""

    route: APIRoute
    checks: tuple[ScopeCheck, ...]
    arguments: dict[str, Callable[[Request], Any]]

    @classmethod
    def of(cls, route: APIRoute) -> "PastEndpoint":
        if not inspect.iscoroutinefunction(route.endpoint):
            raise TypeError(f"{route.path}: an endpoint past the router must be async")
        return cls(route, _checks(route), _argument_makers(route))

    async def answer(self, request: Request) -> Response:
        for check in self.checks:  # first, as FastAPI solves dependencies before parameters
            await check.run(request)
        arguments = {name: make(request) for name, make in self.arguments.items()}
        return await self.route.endpoint(**arguments)


def _checks(route: APIRoute) -> tuple[ScopeCheck, ...]:
    checks = []
    for depends in route.dependencies:
        if not isinstance(depends.dependency, ScopeCheck):
            raise TypeError(f"{route.path}: past the router, no dependency but require_scope")
        checks.append(depends.dependency)
    return tuple(checks)


def _argument_makers(route: APIRoute) -> dict[str, Callable[[Request], Any]]:
    hints = get_type_hints(route.endpoint, include_extras=True)
    path_names = {param.name for param in route.dependant.path_params}
    makers: dict[str, Callable[[Request], Any]] = {}
    for name in inspect.signature(route.endpoint).parameters:
        hint = hints.get(name)
        if hint is Request:
            makers[name] = _the_request
        elif name in path_names and hint is str:
            makers[name] = PathParameter(name)
        elif (model := _query_model(hint)) is not None:
            makers[name] = QueryModel.of(model)
        else:
            raise TypeError(
                f"{route.path}: an endpoint past the router takes only `request`, str path "
                f"parameters and one query model, not {name}: {hint}"
            )
    if sum(isinstance(make, QueryModel) for make in makers.values()) > 1:
        raise TypeError(f"{route.path}: an endpoint past the router takes one query model")
    return makers


def _the_request(request: Request) -> Request:
    return request


@dataclass(frozen=True)
class PathParameter:
    name: str

    def __call__(self, request: Request) -> str:
        return request.path_params[self.name]


def _query_model(hint: Any) -> type[BaseModel] | None:
    """SomeModel for `Annotated[SomeModel, Query()]`, else None."""
    if get_origin(hint) is not Annotated:
        return None
    model, *metadata = get_args(hint)
    is_model = isinstance(model, type) and issubclass(model, BaseModel)
    return model if is_model and any(isinstance(m, QUERY) for m in metadata) else None


@dataclass(frozen=True)
class QueryModel:
    """A query model, read from the query as FastAPI reads one: every value of a list
    field, the last of any other. A name the route does not take is refused before (the
    ScopeCheck's unknown-query check), so none reaches the model."""

    model: type[BaseModel]
    names: frozenset[str]
    list_names: frozenset[str]

    @classmethod
    def of(cls, model: type[BaseModel]) -> "QueryModel":
        names = {field.alias or name: field for name, field in model.model_fields.items()}
        return cls(
            model,
            frozenset(names),
            frozenset(name for name, field in names.items() if _is_sequence(field.annotation)),
        )

    def __call__(self, request: Request) -> BaseModel:
        query = request.query_params
        values = {
            name: query.getlist(name) if name in self.list_names else query[name]
            for name in query
            if name in self.names
        }
        try:
            return self.model.model_validate(values)
        except ValidationError as exc:
            # FastAPI's errors for a query model: pydantic's, located under "query".
            errors = exc.errors(include_url=False)
            raise RequestValidationError(
                [{**error, "loc": ("query", *error["loc"])} for error in errors]
            ) from None


def _is_sequence(annotation: Any) -> bool:
    """Whether a field takes a list (`list[X]`, `list[X] | None`), as FastAPI tells one."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return any(get_origin(member) in SEQUENCES for member in (annotation, *members))

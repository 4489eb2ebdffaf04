"""POST /predict past FastAPI's router: plain ASGI, any ASGI server.

FastAPI takes a request through its exception and exit-stack middleware, the router's
match over every route, dependency solving and response handling before a handler
runs; for a prediction that was a fifth of the server's CPU time per request
(bench/serving.py). `PredictPastRouter` hands `POST /predict` to the route's own handler
and maps its exceptions with the app's own handlers, as the router would. Everything
else, and every other method at that path, goes through FastAPI as usual; the route
stays declared there, so the docs and OpenAPI describe it.
"""

import inspect

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send


class PredictPastRouter:
    """Pure ASGI middleware, innermost: the body-size limit and metrics still apply."""

    def __init__(self, app: ASGIApp, api: FastAPI, route: APIRoute):
        # Nothing but the request reaches the handler: a parameter declared the FastAPI
        # way would be silently missing, so it is refused here, at start.
        parameters = list(inspect.signature(route.endpoint).parameters)
        if parameters != ["request"]:
            raise TypeError(f"{route.path}: a lane's handler takes only `request`: {parameters}")
        self.app, self.api, self.route = app, api, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.route.path:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the router would set: metrics label by it
        request = Request(scope, receive)
        try:
            response = await self.route.endpoint(request)
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

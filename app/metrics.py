"""Prometheus metrics of one API process, and the middleware that times every request."""

import time

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batching import BatchMetrics

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class Metrics:
    """One registry per app, so that several apps in one process (tests) do not collide."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "trainserve_http_request_duration_seconds",
            "HTTP requests by route and status, and how long they took.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = BatchMetrics(
            sizes=Histogram(
                "trainserve_batch_size",
                "Examples per forward pass.",
                ["model"],
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                registry=self.registry,
            ),
            queue_wait=Histogram(
                "trainserve_batch_queue_wait_seconds",
                "Time a request waited in its model's queue before its batch started.",
                ["model"],
                buckets=(0.0001, 0.0005, *LATENCY_BUCKETS),
                registry=self.registry,
            ),
        )
        self.model_load = Histogram(
            "trainserve_model_load_seconds",
            "Time to check and load a model version.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30),
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "trainserve_models_loaded", "Model versions loaded.", registry=self.registry
        )
        self.jobs = Gauge("trainserve_jobs", "Jobs by status.", ["status"], registry=self.registry)
        self.predictions_arriving = Gauge(
            "trainserve_predict_requests_arriving",
            "Prediction requests this process is reading that have not reached a batch queue "
            "yet (a batch waits for them, within its time budget); read when scraped.",
            registry=self.registry,
        )

    def render(self, jobs_by_status: dict[str, int], models_loaded: int) -> bytes:
        self.jobs.clear()  # a status with no job left reads as absent, not as its old count
        for status, count in jobs_by_status.items():
            self.jobs.labels(status=status).set(count)
        self.models_loaded.set(models_loaded)
        return generate_latest(self.registry)


class RequestMetrics:
    """Pure ASGI middleware: latency by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")  # set by the router; unmatched paths share one label
            self.metrics.requests.labels(
                method=scope["method"],
                route=getattr(route, "path", "unmatched"),
                status=str(status),
            ).observe(time.perf_counter() - started)

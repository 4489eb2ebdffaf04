"""create_app(): routers, middleware, error handlers, and what lives for the process."""

import logging
import os
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.config import get_settings
from app.limits import BodySizeLimit
from app.queue import make_celery
from app.repository import InvalidCursor
from app.routes import datasets, health, jobs, predict
from app.serving import ModelFileCorrupt, PredictorCache
from app.sweeper import Sweeper
from models.data import DatasetError, UnsupportedFormat

log = logging.getLogger("trainserve.api")


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    app.state.celery = make_celery(settings)
    app.state.predictors = PredictorCache(settings.model_cache_size)
    sweeper = Sweeper(settings, app.state.celery)
    sweeper.start()
    yield
    sweeper.stop()


def _error(status: int):
    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


def create_app() -> FastAPI:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = FastAPI(
        title="trainserve",
        version="0.1.0",
        summary="Train PyTorch models from uploaded data and serve their predictions.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_exception_handler(UnsupportedFormat, _error(415))
    app.add_exception_handler(DatasetError, _error(422))
    app.add_exception_handler(InvalidCursor, _error(422))
    app.add_exception_handler(ModelFileCorrupt, _error(503))
    for router in (datasets.router, jobs.router, predict.router, health.router):
        app.include_router(router)
    return app


app = create_app()

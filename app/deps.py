"""Annotated dependency aliases for route signatures."""

from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import get_db
from app.serving import PredictorCache

SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_predictors(request: Request) -> PredictorCache:
    return request.app.state.predictors


def require_multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(
            415,
            f"send multipart/form-data with the field 'file', "
            f"not {content_type or 'no content type'}",
        )


CeleryDep = Annotated[Celery, Depends(get_celery)]
PredictorsDep = Annotated[PredictorCache, Depends(get_predictors)]

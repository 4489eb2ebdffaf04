"""The model registry: versions, their weights, and the aliases of each model name.

No authentication here: the app adds it per router at include_router time: `router`
reads (train or deploy), `deploy_router` changes what is served (deploy). Either way a
key acts on the names it may read (app.store.access): any other is answered as unknown.
"""

import hashlib
import json
import re
from typing import Annotated, Literal
from urllib.parse import quote

import safetensors.torch
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.conditional import not_modified
from app.config import Settings
from app.deps import CurrentKeyDep, ModelServerDep, SessionDep, SettingsDep
from app.exports import cached_onnx, forget_export
from app.schemas import (
    ALIAS_NAME,
    AliasMovePublic,
    AliasMoveRequest,
    AliasPublic,
    ModelPublic,
    ModelsPublic,
    Responses,
    error,
)
from app.serving import ModelServer
from app.store import access, versions
from app.store.artefacts import ArtefactCorrupt, ArtefactStore, get_store
from app.store.tables import ApiKey, ModelVersion
from models.checkpoint import file_metadata
from models.export import ExportError
from models.files import load_plain

router = APIRouter(tags=["models"])
deploy_router = APIRouter(tags=["models"])

AliasName = Annotated[
    str, PathParam(pattern=ALIAS_NAME, max_length=60, description="letters, digits, _ . -")
]
NOT_FOUND: Responses = {404: error("No such model version.")}
WeightsFormat = Literal["pt", "safetensors", "onnx"]
# Said, never guessed from a machine's mime table (which types .pt as an SNES page table):
# no format has a registered type, and each is arbitrary binary data (RFC 2046).
MEDIA_TYPES: dict[str, str] = dict.fromkeys(
    ("pt", "safetensors", "onnx"), "application/octet-stream"
)
JSON_TYPE = "application/json"
NOT_MODIFIED: Responses = {304: {"description": "If-None-Match names the current ETag."}}


def model_version(session: Session, model_id: str, key: ApiKey | None) -> ModelVersion:
    """The version by its id or its job's, if the key may read its name; else 404."""
    model = versions.find_model(session, model_id)
    if model is None or not access.may_read_name(session, model.name, key):
        raise HTTPException(404, f"model {model_id!r} is neither a model id nor a job's")
    return model


def _readable_name(session: Session, name: str, key: ApiKey | None) -> str:
    if not access.may_read_name(session, name, key):
        raise HTTPException(404, f"no model named {name!r}")
    return name


@router.get("/models")
def list_models(
    *,
    session: SessionDep,
    key: CurrentKeyDep,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ModelsPublic:
    """Model versions of the names this key may read, newest first; `name` keeps one
    model's versions."""
    rows, next_cursor = versions.list_models(
        session, limit, cursor, name, access.readable_names(key)
    )
    aliases = versions.aliases_of_versions(session, [row.id for row in rows])
    return ModelsPublic(
        items=[ModelPublic.of(row, aliases.get(row.id, [])) for row in rows],
        next_cursor=next_cursor,
    )


@router.api_route("/models/{model_id}", methods=["HEAD"], include_in_schema=False)
@router.get("/models/{model_id}", response_model=ModelPublic, responses=NOT_FOUND | NOT_MODIFIED)
def get_model(
    *, request: Request, session: SessionDep, key: CurrentKeyDep, model_id: str
) -> Response:
    """One version, by its id or its job's. Its ETag changes when the version does (an
    alias moved onto it or away): send it back as If-None-Match for a 304."""
    model = model_version(session, model_id, key)
    aliases = versions.aliases_of_versions(session, [model.id]).get(model.id, [])
    body = ModelPublic.of(model, aliases).model_dump_json().encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    unchanged = not_modified(request, etag)
    return unchanged or Response(body, media_type=JSON_TYPE, headers={"ETag": etag})


@router.api_route("/models/{model_id}/weights", methods=["HEAD"], include_in_schema=False)
@router.get(
    "/models/{model_id}/weights",
    response_class=Response,
    responses={
        **NOT_FOUND,
        **NOT_MODIFIED,
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        503: error("The checkpoint no longer matches its sha256."),
    },
)
def download_weights(
    *,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: CurrentKeyDep,
    model_id: str,
    format: WeightsFormat = "pt",
) -> Response:
    """The weights as a file. `pt`: the checkpoint dict (network arguments, classes,
    preprocessing, state_dict) that `torch.load(..., weights_only=True)` opens;
    `safetensors`: the state_dict; `onnx`: the network as an ONNX graph (input `input`:
    normalised images or token ids, any batch size; output `logits`), exported once per
    checkpoint. safetensors and ONNX carry the checkpoint's format_version, task, arch,
    model_args, classes and preprocessing as metadata: strings as they are, the rest as
    JSON. The ETag is the checkpoint's sha256 (with `.safetensors` or `.onnx` for those):
    If-None-Match with it answers 304. 422 for a network that has no ONNX form
    (`bag_of_embeddings`)."""
    model = model_version(session, model_id, key)
    etag = f'"{model.sha256}"' if format == "pt" else f'"{model.sha256}.{format}"'
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    headers = {
        "ETag": etag,
        "Content-Disposition": attachment(f"{model.name}-{model.id}.{format}"),
    }
    media_type = MEDIA_TYPES[format]
    store = get_store(settings)
    if format == "onnx":
        try:
            onnx = cached_onnx(model, session, store)
        except ExportError as exc:
            raise HTTPException(422, str(exc)) from exc
        return FileResponse(onnx, headers=headers, media_type=media_type)
    if format == "pt":
        return _streamed(store, model, headers)
    content = _safetensors(load_plain(versions.checkpoint_of(model, store)))
    return Response(content, media_type=media_type, headers=headers)


def _streamed(store: ArtefactStore, model: ModelVersion, headers: dict) -> Response:
    """The checkpoint as it comes from the store, never whole in memory; its sha256 is
    checked as it goes (from a local folder, before the first byte), and a mismatch found
    at the end cuts the response short of its Content-Length, so no client takes it whole."""
    try:
        size, chunks = store.stream(model.checkpoint_path, model.sha256)
    except ArtefactCorrupt as exc:
        raise versions.ModelFileCorrupt(f"model {model.id}: {exc}") from exc
    headers = headers | {"Content-Length": str(size)}
    return StreamingResponse(chunks, headers=headers, media_type=MEDIA_TYPES["pt"])


def attachment(filename: str) -> str:
    """Content-Disposition for a download (RFC 6266): the name as RFC 5987 encodes it, and
    for clients that know only `filename` an ASCII copy with nothing but letters, digits
    and . _ -, so no character of a model's name can end the value or add a parameter."""
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _safetensors(checkpoint: dict) -> bytes:
    """The state_dict as safetensors, the same bytes at every call, as its ETag promises:
    safetensors (0.8) writes the metadata in a new order each time, so the header is
    written again with its keys sorted."""
    weights = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}
    return _header_sorted(safetensors.torch.save(weights, metadata=file_metadata(checkpoint)))


def _header_sorted(file: bytes) -> bytes:
    size = int.from_bytes(file[:8], "little")
    header = json.loads(file[8 : 8 + size])
    encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data stays 8-byte aligned, as safetensors pads
    return len(encoded).to_bytes(8, "little") + encoded + file[8 + size :]


@deploy_router.delete(
    "/models/{model_id}",
    status_code=204,
    responses={**NOT_FOUND, 409: error("An alias points at the version.")},
)
async def delete_model(
    *,
    session: SessionDep,
    settings: SettingsDep,
    server: ModelServerDep,
    key: CurrentKeyDep,
    model_id: str,
) -> None:
    """Delete a version and its checkpoint; refused while an alias points at it."""
    model = await run_in_threadpool(model_version, session, model_id, key)
    try:
        await run_in_threadpool(versions.delete_model, session, model)
    except IntegrityError as exc:  # an alias was moved onto it meanwhile
        raise HTTPException(409, f"model {model.id}: an alias now points at it") from exc
    await run_in_threadpool(get_store(settings).delete, model.checkpoint_path)
    forget_version(server, settings, model)


def forget_version(server: ModelServer, settings: Settings, model: ModelVersion) -> None:
    """After a version's deletion has committed: drop it from this process's cache (the
    others drop it at their next registry read) and remove its ONNX export."""
    server.cache.discard(model.id)
    forget_export(get_store(settings), model.sha256)


# ---- aliases -----------------------------------------------------------------------------


@router.get("/models/{name}/aliases")
def list_aliases(*, session: SessionDep, key: CurrentKeyDep, name: str) -> list[AliasPublic]:
    """Where each alias of a model name points now."""
    _readable_name(session, name, key)
    return [AliasPublic.model_validate(a) for a in versions.aliases_of_name(session, name)]


@deploy_router.put(
    "/models/{name}/aliases/{alias}",
    responses={
        404: error("No such version."),
        409: error("Moved by another call at the same moment; try again."),
        422: error("The version belongs to another model name."),
    },
)
async def move_alias(
    *,
    session: SessionDep,
    server: ModelServerDep,
    key: CurrentKeyDep,
    name: str,
    alias: AliasName,
    body: AliasMoveRequest,
) -> AliasMovePublic:
    """Point an alias at a version of this name. Serving switches once it is loaded."""
    model = await run_in_threadpool(model_version, session, body.version_id, key)
    if model.name != name:
        raise HTTPException(
            422, f"version {model.id} is a version of {model.name!r}, not of {name!r}"
        )
    return await _move(session, server, name, alias, model.id, "moved", key)


@deploy_router.post(
    "/models/{name}/aliases/{alias}/rollback",
    responses={
        404: error("The alias was never set."),
        409: error("No way back."),
    },
)
async def rollback_alias(
    *, session: SessionDep, server: ModelServerDep, key: CurrentKeyDep, name: str, alias: str
) -> AliasMovePublic:
    """Move an alias back to where it pointed before its last move."""
    await run_in_threadpool(_readable_name, session, name, key)
    moves = await run_in_threadpool(versions.alias_moves, session, name, alias, 1)
    if not moves:
        raise HTTPException(404, f"model {name!r} has no alias {alias!r}")
    previous = moves[0].from_version_id
    if previous is None:
        raise HTTPException(409, f"{name}@{alias} was created by its last move: no way back")
    if await run_in_threadpool(versions.find_model, session, previous) is None:
        raise HTTPException(409, f"{name}@{alias} pointed at {previous}, which was deleted")
    return await _move(session, server, name, alias, previous, "rolled_back", key)


@router.get("/models/{name}/aliases/{alias}/history")
def alias_history(
    *,
    session: SessionDep,
    key: CurrentKeyDep,
    name: str,
    alias: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AliasMovePublic]:
    """Every move of the alias, newest first."""
    _readable_name(session, name, key)
    moves = versions.alias_moves(session, name, alias, limit)
    return [AliasMovePublic.model_validate(m) for m in moves]


async def _move(
    session: Session,
    server: ModelServer,
    name: str,
    alias: str,
    version_id: str,
    action: str,
    key: ApiKey | None,
) -> AliasMovePublic:
    moved_by = key.id if key else None  # None with TRAINSERVE_AUTH_ENABLED=false
    try:
        move = await run_in_threadpool(
            versions.move_alias,
            session,
            name,
            alias,
            version_id,
            action=action,
            moved_by=moved_by,
        )
    except IntegrityError as exc:
        raise HTTPException(409, f"{name}@{alias} was moved by another call; try again") from exc
    await server.refresh()  # this process starts loading now; the others at their next poll
    return AliasMovePublic.model_validate(move)

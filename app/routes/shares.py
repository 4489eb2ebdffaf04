"""Sharing a dataset or a model name with another key: its owner (or admin) names the key.

A dataset shared may be read and trained on; a model name shared may be read (versions,
weights, aliases, predictions) and, by a deploy key, deployed. Only the owner or admin
shares, lists and withdraws shares.
"""

from fastapi import APIRouter, HTTPException, Response

from app.deps import CurrentKeyDep, SessionDep
from app.schemas import Responses, SharePublic, ShareRequest, error
from app.store import access, datasets, keys
from app.store.access import ShareKind
from app.store.tables import ApiKey

router = APIRouter(tags=["shares"])

SHARE_ERRORS: Responses = {
    403: error("Only the owner or admin shares it."),
    404: error("No such dataset or model name, or one this key may not read."),
}


def _owned_dataset(session, dataset_id: str, key: ApiKey | None) -> str:
    dataset = datasets.get_dataset(session, dataset_id)
    if dataset is None or not access.may_read_dataset(session, dataset, key):
        raise HTTPException(404, f"no dataset with id {dataset_id!r}")
    _refuse_unless_owner(key, dataset.owner_key_id, f"dataset {dataset_id}")
    return dataset.id


def _owned_name(session, name: str, key: ApiKey | None) -> str:
    if not access.name_exists(session, name) or not access.may_read_name(session, name, key):
        raise HTTPException(404, f"no model named {name!r}")
    _refuse_unless_owner(key, access.name_owner(session, name), f"model {name!r}")
    return name


def _refuse_unless_owner(key: ApiKey | None, owner_key_id: str | None, what: str) -> None:
    if not access.owns(key, owner_key_id):
        raise HTTPException(403, f"{what} is shared with this key: only its owner shares it")


def _shares(session, kind: ShareKind, target: str) -> list[SharePublic]:
    return [SharePublic.model_validate(s) for s in access.shares_of(session, kind, target)]


def _add(session, kind: ShareKind, target: str, key_id: str) -> list[SharePublic]:
    if keys.get_key(session, key_id) is None:
        raise HTTPException(422, f"key_id {key_id!r} is not the id of a key")
    access.share(session, kind, target, key_id)
    return _shares(session, kind, target)


def _remove(session, kind: ShareKind, target: str, key_id: str) -> Response:
    if not access.unshare(session, kind, target, key_id):
        raise HTTPException(404, f"{target} is not shared with key {key_id!r}")
    return Response(status_code=204)


@router.get("/datasets/{dataset_id}/shares", responses=SHARE_ERRORS)
def dataset_shares(
    *, session: SessionDep, key: CurrentKeyDep, dataset_id: str
) -> list[SharePublic]:
    """The keys, besides its owner, that may read the dataset and train on it."""
    return _shares(session, "dataset", _owned_dataset(session, dataset_id, key))


@router.post("/datasets/{dataset_id}/shares", status_code=201, responses=SHARE_ERRORS)
def share_dataset(
    *, session: SessionDep, key: CurrentKeyDep, dataset_id: str, body: ShareRequest
) -> list[SharePublic]:
    """Let another key read the dataset and train on it (again, harmlessly); its shares."""
    return _add(session, "dataset", _owned_dataset(session, dataset_id, key), body.key_id)


@router.delete("/datasets/{dataset_id}/shares/{key_id}", status_code=204, responses=SHARE_ERRORS)
def unshare_dataset(
    *, session: SessionDep, key: CurrentKeyDep, dataset_id: str, key_id: str
) -> Response:
    """Withdraw a share: the key's jobs already trained keep their models."""
    return _remove(session, "dataset", _owned_dataset(session, dataset_id, key), key_id)


@router.get("/models/{name}/shares", responses=SHARE_ERRORS)
def model_shares(*, session: SessionDep, key: CurrentKeyDep, name: str) -> list[SharePublic]:
    """The keys, besides its owner, that may read the model name."""
    return _shares(session, "model", _owned_name(session, name, key))


@router.post("/models/{name}/shares", status_code=201, responses=SHARE_ERRORS)
def share_model(
    *, session: SessionDep, key: CurrentKeyDep, name: str, body: ShareRequest
) -> list[SharePublic]:
    """Let another key read the name's versions, weights and aliases and predict with
    them; a deploy key, also move its aliases and delete its versions. Its shares."""
    return _add(session, "model", _owned_name(session, name, key), body.key_id)


@router.delete("/models/{name}/shares/{key_id}", status_code=204, responses=SHARE_ERRORS)
def unshare_model(*, session: SessionDep, key: CurrentKeyDep, name: str, key_id: str) -> Response:
    """Withdraw a share; every API process stops serving the key from it within a poll."""
    return _remove(session, "model", _owned_name(session, name, key), key_id)

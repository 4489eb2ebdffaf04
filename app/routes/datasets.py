import logging
from functools import lru_cache
from typing import Annotated, Literal

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.deps import CurrentKeyDep, SessionDep, SettingsDep, require_multipart
from app.ingest import file_size, ingest_upload, read_options
from app.quotas import check_storage_quota
from app.schemas import (
    PRINTABLE,
    ClassExamples,
    DatasetExample,
    DatasetExamples,
    DatasetPublic,
    DatasetsPublic,
    Responses,
    error,
)
from app.store import access, datasets
from app.store.artefacts import get_store
from app.store.tables import ApiKey, Dataset
from models.data import (
    ImageData,
    LabelledData,
    NamedFile,
    TextData,
    data_from_state,
    examples_per_class,
    thumbnail_png,
)
from models.files import load_plain

router = APIRouter(prefix="/datasets", tags=["datasets"])
log = logging.getLogger("trainserve.api")
NOT_FOUND: Responses = {404: error("No such dataset.")}
UPLOAD_REFUSAL = (413, "this upload")
EXAMPLE_CHARACTERS = 300  # of a text shown as an example
THUMBNAIL_TYPES = ("image/png", "application/octet-stream")
BINARY = {"type": "string", "format": "binary"}
THUMBNAIL_SIDE = 96  # pixels: two cells of the dataset page's 48 px grid, for sharp screens

FILE_HELP = (
    "A zip of images in any format Pillow decodes, told by content (other files are "
    "skipped and counted), one folder per class (<class>/<file>, optionally under train/ "
    "and test/); or MNIST-style IDX files, images and labels, gzipped or not (send each as a "
    "'file' part; names with t10k or test form the test split); or a CSV, TSV or JSONL "
    "table with a text and a label column (an optional 'split' column says train or test)."
)


def parse_resize(resize: str | None, max_side: int) -> tuple[int, int] | None:
    """(height, width); a 422 naming the cap for a side over it, before anything is read:
    every image is made that size, whatever size it was."""
    if not resize:
        return None
    height, _, width = resize.lower().partition("x")
    size = int(height), int(width or height)
    if max(size) > max_side:
        raise HTTPException(
            422,
            f"resize {size[0]}x{size[1]} is over the limit of {max_side} pixels a side "
            f"(TRAINSERVE_MAX_RESIZE_SIDE)",
        )
    return size


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(require_multipart)],
    responses={
        200: {
            "model": DatasetPublic,
            "description": "This exact upload was stored before: the same dataset.",
        },
        400: error("The multipart body cannot be parsed."),
        413: error("Over the upload limit, or over the key's storage quota."),
        415: error("Not multipart, or not a supported format."),
        422: error("The data fails a check; the detail says which."),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "examples": {
                        "image zip": {
                            "value": {"file": ["(cifar10-train.zip)"], "name": "cifar10-train"}
                        },
                        "IDX files": {
                            "value": {
                                "file": [
                                    "(train-images-idx3-ubyte.gz)",
                                    "(train-labels-idx1-ubyte.gz)",
                                ],
                                "name": "mnist",
                            }
                        },
                        "table": {
                            "value": {
                                "file": ["(reviews.csv)"],
                                "text_column": "review",
                                "label_column": "stars",
                            }
                        },
                        "resized images": {"value": {"file": ["(photos.zip)"], "resize": "32x32"}},
                    }
                }
            }
        }
    },
)
def upload_dataset(
    *,
    session: SessionDep,
    settings: SettingsDep,
    key: CurrentKeyDep,
    response: Response,
    file: Annotated[list[UploadFile], File(description=FILE_HELP)],
    name: Annotated[
        str | None, Form(max_length=200, pattern=PRINTABLE, examples=["cifar10-train"])
    ] = None,
    resize: Annotated[
        str | None,
        Form(
            pattern=r"^[1-9]\d{0,3}(x[1-9]\d{0,3})?$",
            description="HEIGHTxWIDTH (or one number) to resize every image to.",
        ),
    ] = None,
    text_column: Annotated[
        str, Form(min_length=1, max_length=200, pattern=PRINTABLE, examples=["review"])
    ] = "text",
    label_column: Annotated[
        str, Form(min_length=1, max_length=200, pattern=PRINTABLE, examples=["stars"])
    ] = "label",
) -> DatasetPublic:
    """Upload labelled data; it is checked, decoded once and stored by content hash. It is
    the key's; the same bytes sent by another key answer the stored dataset, shared with
    it (it holds the data already)."""
    options = read_options(
        settings,
        resize=parse_resize(resize, settings.max_resize_side),
        text_column=text_column,
        label_column=label_column,
    )
    files = [NamedFile(upload.filename or "", upload.file) for upload in file]
    upload_bytes = sum(file_size(f) for f in files)
    check_storage_quota(session, key, settings, upload_bytes, refusal=UPLOAD_REFUSAL)
    owner_key_id = key.id if key else None
    dataset, created = ingest_upload(session, settings, files, name, options, owner_key_id)
    if not created:
        response.status_code = 200
        if key is not None and not access.may_read_dataset(session, dataset, key):
            access.share(session, "dataset", dataset.id, key.id)
        return DatasetPublic.model_validate(dataset)
    try:  # decoded, the data may take more room than the upload did
        check_storage_quota(session, key, settings, adding=0, refusal=UPLOAD_REFUSAL)
    except HTTPException:
        _delete(session, dataset.id)
        raise
    return DatasetPublic.model_validate(dataset)


@router.get("")
def list_datasets(
    *,
    session: SessionDep,
    key: CurrentKeyDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> DatasetsPublic:
    """The datasets this key may read (its own and those shared with it), newest first."""
    items, next_cursor = datasets.list_datasets(
        session, limit, cursor, access.readable_datasets(key)
    )
    return DatasetsPublic(items=items, next_cursor=next_cursor)


@router.get("/{dataset_id}", responses=NOT_FOUND)
def get_dataset(*, session: SessionDep, key: CurrentKeyDep, dataset_id: str) -> DatasetPublic:
    return DatasetPublic.model_validate(_readable_dataset(session, key, dataset_id))


@router.get("/{dataset_id}/examples", responses=NOT_FOUND)
def dataset_examples(
    *,
    session: SessionDep,
    key: CurrentKeyDep,
    dataset_id: str,
    per_class: Annotated[int, Query(ge=1, le=16)] = 4,
) -> DatasetExamples:
    """A few examples of each class, the training split's first: a text set's texts (their
    first 300 characters), an image set's thumbnails (the path of each small PNG)."""
    dataset = _readable_dataset(session, key, dataset_id)
    data = _stored_data(dataset)
    picked = examples_per_class(data, per_class)
    return DatasetExamples(
        dataset_id=dataset.id,
        task=data.task,
        classes=[
            ClassExamples(name=name, examples=[_example(dataset.id, data, i) for i in indices])
            for name, indices in zip(data.classes, picked, strict=True)
        ],
    )


@router.get(
    "/{dataset_id}/examples/{index}/thumbnail",
    response_class=Response,
    responses={
        200: {
            "content": {media_type: {"schema": BINARY} for media_type in THUMBNAIL_TYPES},
            "description": "The example as a small PNG (application/octet-stream when the "
            "Accept header asks for it and not for an image).",
        },
        404: error("No such dataset, example, or a text set (no images)."),
    },
)
def example_thumbnail(
    *,
    request: Request,
    session: SessionDep,
    key: CurrentKeyDep,
    dataset_id: str,
    index: Annotated[int, Path(ge=0)],
) -> Response:
    """One image of an image set, at most 96 pixels a side; a dataset never changes, so a
    browser keeps it."""
    dataset = _readable_dataset(session, key, dataset_id)
    data = _stored_data(dataset)
    if not isinstance(data, ImageData):
        raise HTTPException(404, f"dataset {dataset_id} holds texts: it has no thumbnails")
    if index >= len(data.labels):
        raise HTTPException(
            404, f"dataset {dataset_id} has {len(data.labels)} examples: no example {index}"
        )
    return Response(
        thumbnail_png(data.images[index], THUMBNAIL_SIDE),
        media_type=_thumbnail_type(request.headers.get("accept", "")),
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


def _thumbnail_type(accept: str) -> str:
    """image/png, unless the client asks for bytes and for no image (a client generated from
    the OpenAPI document reads only application/octet-stream as bytes)."""
    wants_bytes = "application/octet-stream" in accept and "image/" not in accept
    return THUMBNAIL_TYPES[1] if wants_bytes else THUMBNAIL_TYPES[0]


def _readable_dataset(session: Session, key: ApiKey | None, dataset_id: str) -> Dataset:
    dataset = datasets.get_dataset(session, dataset_id)
    if dataset is None or not access.may_read_dataset(session, dataset, key):
        raise _no_such_dataset(dataset_id)
    return dataset


def _stored_data(dataset: Dataset) -> LabelledData:
    return _mapped_data(dataset.path, dataset.file_sha256)


# The datasets whose pages are open, each read and checked once (a key names its content).
@lru_cache(maxsize=2)
def _mapped_data(key: str, sha256: str | None) -> LabelledData:
    """The stored examples, mapped rather than read: a page shows a few of them."""
    return data_from_state(load_plain(get_store().read(key, sha256), mmap=True))


def _example(dataset_id: str, data: LabelledData, index: int) -> DatasetExample:
    split: Literal["train", "test"] = "test" if data.is_test[index] else "train"
    if isinstance(data, TextData):
        return DatasetExample(index=index, split=split, text=data.texts[index][:EXAMPLE_CHARACTERS])
    return DatasetExample(
        index=index, split=split, thumbnail=f"/datasets/{dataset_id}/examples/{index}/thumbnail"
    )


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses={
        **NOT_FOUND,
        403: error("The dataset is shared with this key, not its own."),
        409: error("A job that has not ended uses the dataset."),
    },
)
async def delete_dataset(*, session: SessionDep, key: CurrentKeyDep, dataset_id: str) -> None:
    """Delete a dataset of the key's and its stored file; refused while a job that has not
    ended trains or validates on it. Ended jobs that used it keep its id."""
    dataset = _readable_dataset(session, key, dataset_id)
    if not access.owns(key, dataset.owner_key_id):
        raise HTTPException(403, f"dataset {dataset_id} is shared with this key, not its own")
    try:
        await run_in_threadpool(_delete, session, dataset_id)
    except datasets.DatasetInUse as exc:
        raise HTTPException(409, str(exc)) from exc


def _delete(session, dataset_id: str) -> None:
    key = datasets.delete_dataset(session, dataset_id)
    if key is None:
        raise _no_such_dataset(dataset_id)
    get_store().delete(key)  # after the commit: never a row without its object
    log.info("dataset %s: deleted", dataset_id)


def _no_such_dataset(dataset_id: str) -> HTTPException:
    return HTTPException(404, f"no dataset with id {dataset_id!r}")

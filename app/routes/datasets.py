from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile

from app.deps import CurrentKeyDep, SessionDep, SettingsDep, require_multipart
from app.ingest import ingest_upload
from app.schemas import PRINTABLE, DatasetPublic, DatasetsPublic, error
from app.store import access, datasets
from models.data import NamedFile, ReadOptions

router = APIRouter(prefix="/datasets", tags=["datasets"])

FILE_HELP = (
    "A zip of images in any format Pillow decodes, told by content (other files are "
    "skipped and counted), one folder per class (<class>/<file>, optionally under train/ "
    "and test/); or MNIST-style IDX files, images and labels, gzipped or not (send each as a "
    "'file' part; names with t10k or test form the test split); or a CSV, TSV or JSONL "
    "table with a text and a label column (an optional 'split' column says train or test)."
)


def parse_resize(resize: str | None) -> tuple[int, int] | None:
    if not resize:
        return None
    height, _, width = resize.lower().partition("x")
    return int(height), int(width or height)


@router.post(
    "",
    status_code=201,
    dependencies=[Depends(require_multipart)],
    responses={
        200: {"description": "This exact upload was stored before: the same dataset."},
        400: error("The multipart body cannot be parsed."),
        413: error("Over the upload limit."),
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
    options = ReadOptions(
        resize=parse_resize(resize),
        text_column=text_column,
        label_column=label_column,
        max_examples=settings.max_dataset_examples,
        max_decoded_bytes=settings.max_decoded_bytes,
        max_zip_ratio=settings.max_zip_ratio,
    )
    files = [NamedFile(upload.filename or "", upload.file) for upload in file]
    dataset, created = ingest_upload(session, settings, files, name, options)
    if created:
        datasets.set_owner(session, dataset, key.id if key else None)
    else:
        response.status_code = 200
        if key is not None and not access.may_read_dataset(session, dataset, key):
            access.share(session, "dataset", dataset.id, key.id)
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


@router.get("/{dataset_id}", responses={404: error("No such dataset.")})
def get_dataset(*, session: SessionDep, key: CurrentKeyDep, dataset_id: str) -> DatasetPublic:
    dataset = datasets.get_dataset(session, dataset_id)
    if dataset is None or not access.may_read_dataset(session, dataset, key):
        raise HTTPException(404, f"no dataset with id {dataset_id!r}")
    return DatasetPublic.model_validate(dataset)

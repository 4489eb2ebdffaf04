"""Property tests for the readers: whatever the bytes, a reader returns data or raises
DatasetError (a 4xx), and well-formed data reads back as it was written."""

import csv
import io
import json

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.data import DatasetError, NamedFile, ReadOptions, read_upload
from tests.conftest import idx_bytes, image_zip, png_bytes

fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILENAMES = st.sampled_from(["x.zip", "t.csv", "t.tsv", "t.jsonl", "train-images", "blob", ""])
# Labels and texts a person could write: no control characters, not blank.
WORDS = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30
).filter(lambda s: s.strip() == s and s)


def read(*files: tuple[str, bytes]):
    return read_upload([NamedFile(name, io.BytesIO(data)) for name, data in files], ReadOptions())


def read_or_refuse(*files: tuple[str, bytes]):
    try:
        return read(*files)
    except DatasetError:
        return None


def small_zip() -> bytes:
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    return image_zip({"a/1.png": png_bytes(pixels), "b/1.png": png_bytes(255 - pixels)})


@fast
@given(filename=FILENAMES, data=st.binary(max_size=2048))
@example(filename="x.zip", data=b"PK\x03\x04" + bytes(60))
@example(filename="t.jsonl", data=b'{"text": "a", "label": 1' + b"0" * 5000 + b"}")
def test_any_bytes_are_read_or_refused_with_a_dataset_error(filename, data):
    read_or_refuse((filename, data))


@fast
@given(position=st.integers(0, 10_000), value=st.integers(0, 255), cut=st.integers(0, 10_000))
def test_a_damaged_zip_is_read_or_refused(position, value, cut):
    archive = bytearray(small_zip())
    archive[position % len(archive)] = value
    data = read_or_refuse(("x.zip", bytes(archive[: len(archive) - cut % len(archive)])))
    assert data is None or data.images.shape[1:] == (3, 4, 4)


@fast
@given(names=st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_any_entry_names_are_read_or_refused(names):
    read_or_refuse(
        # zipfile cuts a name at its first NUL, and cannot write an empty one
        (
            "x.zip",
            image_zip(
                {
                    name.split("\0")[0] or "x": png_bytes(np.zeros((2, 2), np.uint8))
                    for name in names
                }
            ),
        )
    )


@fast
@given(rows=st.lists(st.tuples(WORDS, WORDS), min_size=2, max_size=30), tabs=st.booleans())
def test_tables_read_back_as_written(rows, tabs):
    rows.append((rows[0][0], rows[0][1] + "x"))  # at least two classes
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if tabs else ",")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    data = read(("t.tsv" if tabs else "t.csv", out.getvalue().encode()))
    assert data.texts == [text for text, _ in rows]
    assert data.classes == sorted({label for _, label in rows})
    assert [data.classes[i] for i in data.labels] == [label for _, label in rows]


@fast
@given(rows=st.lists(st.tuples(WORDS, WORDS), min_size=2, max_size=30))
def test_json_lines_read_back_as_written(rows):
    rows.append((rows[0][0], rows[0][1] + "x"))
    lines = [json.dumps({"text": text, "label": label}) for text, label in rows]
    data = read(("t.jsonl", "\n".join(lines).encode()))
    assert data.texts == [text for text, _ in rows]
    assert [data.classes[i] for i in data.labels] == [label for _, label in rows]


@fast
@given(
    images=st.integers(2, 12).flatmap(
        lambda n: st.tuples(
            st.binary(min_size=n * 9, max_size=n * 9),
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
        )
    )
)
def test_idx_reads_back_as_written(images):
    pixels, labels = images
    labels[-1] = 5  # at least two classes
    array = np.frombuffer(pixels, np.uint8).reshape(len(labels), 3, 3)
    data = read(
        ("train-images-idx3-ubyte", idx_bytes(array, compress=False)),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.array(labels))),
    )
    assert np.array_equal(data.images[:, 0].numpy(), array)
    assert [int(data.classes[i]) for i in data.labels] == labels


@fast
@given(data=st.binary(max_size=512))
def test_any_bytes_in_a_zip_entry_are_an_image_or_refused(data):
    read_or_refuse(
        ("x.zip", image_zip({"a/1.png": data, "b/1.png": png_bytes(np.zeros((2, 2), np.uint8))}))
    )

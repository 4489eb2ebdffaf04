import gzip
import io
import json
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import (
    DatasetError,
    ImageData,
    ImagePreprocessing,
    NamedFile,
    NotAnImage,
    ReadOptions,
    Skipped,
    TextData,
    UnsupportedFormat,
    data_from_state,
    decode_image,
    plain_png,
    read_upload,
    with_test_split,
)
from tests.conftest import (
    class_pattern,
    face_set_zip,
    idx_bytes,
    image_bytes,
    image_zip,
    png_bytes,
)
from tests.hostile import png_header


def read(*files: tuple[str, bytes], **options) -> ImageData | TextData:
    named = [NamedFile(name, io.BytesIO(data)) for name, data in files]
    return read_upload(named, ReadOptions(**options))


def test_image_zip_with_train_and_test_folders(two_class_zip):
    data = read(("data.zip", two_class_zip))
    assert isinstance(data, ImageData)
    assert data.classes == ["bottom", "top"]
    assert data.images.shape == (50, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.counts() == {"train": {"bottom": 20, "top": 20}, "test": {"bottom": 5, "top": 5}}
    assert data.source_format == "image_zip"


def test_image_zip_under_one_outer_folder_and_grey_images():
    rng = np.random.default_rng(1)
    entries = {
        f"digits/{c}/{i}.png": png_bytes(class_pattern(c, 8, rng, 1))
        for c in (0, 1)
        for i in range(3)
    }
    entries["digits/.DS_Store"] = b"junk"
    data = read(("d.zip", image_zip(entries)))
    assert data.classes == ["0", "1"]
    assert data.images.shape == (6, 1, 8, 8)
    assert "test" not in data.counts()


def test_mixed_sizes_need_a_resize():
    rng = np.random.default_rng(2)
    entries = {
        "a/1.png": png_bytes(class_pattern(0, 8, rng)),
        "b/2.png": png_bytes(class_pattern(1, 12, rng)),
    }
    with pytest.raises(DatasetError, match=r"b/2\.png.*resize"):
        read(("x.zip", image_zip(entries)))
    assert read(("x.zip", image_zip(entries)), resize=(10, 10)).images.shape == (2, 3, 10, 10)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"a/1.png": b"not a png", "b/2.png": "VALID"}, "a/1.png.*not a decodable image"),
        ({"a/1.jpg": b"\xff\xd8\xff\xe0" + bytes(64), "b/2": "VALID"}, "a/1.jpg.*not a decodable"),
        ({"a/1.pgm": b"P5\n4 4\n255\n", "b/2.png": "VALID"}, "a/1.pgm.*not a decodable image"),
        ({"a/huge.bin": png_header(60000, 60000), "b/1": "VALID"}, "a/huge.bin.*pixels"),
        (
            {"notes.txt": b"hello", "README": b"read me", ".DS_Store": b"\0"},
            r"no image files \(2 files are not images, e.g. 'notes.txt', 'README'\)",
        ),
        ({"only/1.png": "VALID"}, "at least two classes"),
        (
            {"train/a/1.png": "VALID", "train/b/1.png": "VALID", "test/c/1.png": "VALID"},
            "'c' has test examples but no training",
        ),
        ({"a/b/c/d.png": "VALID", "x.png": "VALID"}, "not laid out"),
        ({"a/1.png": "VALID", "b/1.png": "VALID", "c/": b""}, "'c/' holds no images"),
        ({"a/1.png": "VALID", "b/1.png": "VALID", ".": b"x"}, "a zip entry has no file name"),
    ],
)
def test_bad_image_zips_name_the_problem(entries, message):
    valid = png_bytes(np.zeros((4, 4, 3), np.uint8))
    entries = {k: valid if v == "VALID" else v for k, v in entries.items()}
    with pytest.raises(DatasetError, match=message):
        read(("x.zip", image_zip(entries)))


def grey_and_colour(seed: int, size: tuple[int, int] = (6, 10)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size, np.uint8), rng.integers(0, 256, (*size, 3), np.uint8)


# Lossless encodings, so the pixels read back are those written.
LOSSLESS = {
    "PGM/PPM": ("PPM", {}),
    "BMP": ("BMP", {}),
    "TIFF": ("TIFF", {"compression": "tiff_lzw"}),
    "WebP": ("WEBP", {"lossless": True}),
    "PNG": ("PNG", {}),
}


@pytest.mark.parametrize("name", LOSSLESS)
def test_images_of_any_format_are_told_by_content_not_by_name(name):
    image_format, options = LOSSLESS[name]
    grey, colour = grey_and_colour(len(name))
    if image_format == "WEBP":  # WebP has no grey: it comes back as RGB
        grey = grey[:, :, None].repeat(3, axis=2)
    entries = {
        "a/1.dat": image_bytes(grey, image_format, **options),  # a suffix that says nothing
        "b/photo": image_bytes(colour, image_format, **options),  # none at all
    }
    data = read(("x.zip", image_zip(entries)))
    assert data.classes == ["a", "b"] and data.images.shape == (2, 3, 6, 10)
    assert torch.equal(data.images[1], torch.from_numpy(colour).permute(2, 0, 1))
    # Grey beside colour is made colour: every channel holds the grey.
    for channel in range(3):
        assert torch.equal(
            data.images[0, channel], torch.from_numpy(grey[..., 0] if grey.ndim == 3 else grey)
        )
    assert data.skipped == Skipped()


def test_a_grey_set_stays_grey_in_any_format_and_a_gif_gives_its_first_frame():
    grey, _ = grey_and_colour(3)
    second_frame = Image.fromarray(255 - grey)
    gif = io.BytesIO()
    Image.fromarray(grey).save(gif, format="GIF", save_all=True, append_images=[second_frame])
    entries = {
        "a/1.pgm": image_bytes(grey, "PPM"),
        "a/2.tif": image_bytes(grey, "TIFF"),
        "b/1.bmp": image_bytes(grey, "BMP"),
        "b/2.gif": gif.getvalue(),
        "b/3.png": image_bytes(np.dstack([grey, grey]), "PNG"),  # grey with alpha
    }
    data = read(("x.zip", image_zip(entries)))
    assert data.images.shape == (5, 1, 6, 10)
    for image in data.images:
        assert torch.equal(image[0], torch.from_numpy(grey))


def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped():
    levels = np.array([[0, 257, 32896, 65535]], np.uint16)  # 0, 1, 128, 255 in 8 bits
    pgm = b"P5\n4 1\n65535\n" + levels.astype(">u2").tobytes()
    for data in (pgm, image_bytes(levels, "PNG"), image_bytes(levels, "TIFF")):
        assert decode_image(data).tolist() == [[0, 1, 128, 255]]
    assert decode_image(pgm, mode="RGB").tolist() == [[[0] * 3, [1] * 3, [128] * 3, [255] * 3]]


def test_non_square_images_keep_their_shape():
    rng = np.random.default_rng(4)
    entries = {
        f"{c}/{i}.pgm": image_bytes(class_pattern(0, 4, rng, 1), "PPM")
        for c in "ab"
        for i in range(2)
    }
    tall = read(("faces.zip", face_set_zip(2, 3, size=(24, 16))))
    assert tall.images.shape == (6, 1, 24, 16) and tall.details() == {
        "channels": 1,
        "height": 24,
        "width": 16,
    }
    assert read(("x.zip", image_zip(entries)), resize=(6, 9)).images.shape == (4, 1, 6, 9)


def test_files_that_are_not_images_are_skipped_and_counted():
    grey, _ = grey_and_colour(5)
    pgm = image_bytes(grey, "PPM")
    entries = {
        "faces/README": b"forty people",
        "faces/s1/1.pgm": pgm,
        "faces/s1/2.pgm": pgm,
        "faces/s1/notes.txt": b"taken in 1992",
        "faces/s2/1.pgm": pgm,
        "faces/s2/Thumbs.db": b"\xd0\xcf\x11\xe0",
        "faces/.DS_Store": b"\0\0\0\1Bud1",
        "__MACOSX/faces/s1/._1.pgm": b"\0\5\26\7",
        "faces/docs/": b"",  # a folder of files that are not images is no class
        "faces/docs/LICENSE": b"free",
    }
    data = read(("faces.zip", image_zip(entries)))
    assert data.classes == ["s1", "s2"] and data.counts() == {"train": {"s1": 2, "s2": 1}}
    assert data.skipped == Skipped(
        hidden=3,
        not_an_image=3,
        examples=["faces/README", "faces/s1/notes.txt", "faces/docs/LICENSE"],
    )
    assert "skipped" not in data.to_state()  # training needs only the examples


def test_a_face_set_as_distributed_reads_with_a_class_per_person():
    data = read(("att_faces.zip", face_set_zip(40, 9)))
    assert len(data.classes) == 40 and data.classes[:3] == ["s1", "s10", "s11"]
    assert set(data.counts()["train"].values()) == {9}
    assert data.images.shape == (360, 1, 112, 92)
    assert data.skipped == Skipped(hidden=1, not_an_image=1, examples=["README"])


def test_decode_image_says_whether_bytes_are_no_image_or_a_broken_one():
    with pytest.raises(NotAnImage, match="unknown or corrupt format"):
        decode_image(b"a README, not an image")
    truncated = png_bytes(grey_and_colour(6, (32, 32))[0])[:60]
    with pytest.raises(DatasetError, match="not a decodable image") as broken:
        decode_image(truncated)
    assert not isinstance(broken.value, NotAnImage)


def test_corrupt_zip_is_rejected():
    with pytest.raises(DatasetError, match="not a readable zip"):
        read(("x.zip", b"PK\x03\x04" + b"\0" * 40))


def test_idx_pairs_make_train_and_test_splits():
    rng = np.random.default_rng(3)
    train_images = rng.integers(0, 255, (12, 6, 6))
    test_images = rng.integers(0, 255, (4, 6, 6))
    data = read(
        ("train-images-idx3-ubyte.gz", idx_bytes(train_images)),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.arange(12) % 3)),
        ("t10k-images-idx3-ubyte", idx_bytes(test_images, compress=False)),
        ("t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 2]), compress=False)),
    )
    assert data.classes == ["0", "1", "2"]
    assert data.images.shape == (16, 1, 6, 6)
    assert torch.equal(data.images[0, 0], torch.from_numpy(train_images[0].astype(np.uint8)))
    assert data.counts()["test"] == {"0": 1, "1": 1, "2": 2}


def test_idx_with_mismatched_counts_is_rejected():
    with pytest.raises(DatasetError, match="5 images but 4 labels"):
        read(
            ("train-images", idx_bytes(np.zeros((5, 2, 2)))),
            ("train-labels", idx_bytes(np.array([0, 1, 0, 1]))),
        )


def test_truncated_idx_is_rejected():
    truncated = idx_bytes(np.zeros((5, 2, 2)), compress=False)[:-3]
    with pytest.raises(DatasetError, match="truncated"):
        read(("train-images", truncated), ("train-labels", idx_bytes(np.arange(5) % 2)))


def test_csv_tsv_and_jsonl_read_the_same(sentiment_csv):
    csv_data = read(("mr.csv", sentiment_csv))
    tsv = sentiment_csv.decode().replace('",', '"\t').replace("text,label", "text\tlabel")
    tsv_data = read(("mr.tsv", tsv.replace('"', "").encode()))
    labels = [csv_data.classes[i] for i in csv_data.labels]
    jsonl = "\n".join(
        json.dumps({"text": text, "label": label})
        for text, label in zip(csv_data.texts, labels, strict=True)
    )
    jsonl_data = read(("mr.jsonl", jsonl.encode()))
    for data in (csv_data, tsv_data, jsonl_data):
        assert isinstance(data, TextData)
        assert data.classes == ["negative", "positive"]
        assert data.counts() == {"train": {"negative": 30, "positive": 30}}
    assert csv_data.texts == jsonl_data.texts == tsv_data.texts


def test_custom_columns_and_split_column():
    content = b"review,stars,split\ngood,5,train\nbad,1,train\nfine,5,test\n"
    data = read(("r.csv", content), text_column="review", label_column="stars")
    assert data.classes == ["1", "5"] and data.counts()["test"] == {"1": 0, "5": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text,label\n\xff\xfe bad bytes,pos\n", "not UTF-8"),
        (b"words,label\nhello,pos\n", "no column 'text'"),
        (b"text,label\nhello,\n", "label must be"),
        (b"text,label\n,pos\nhi,neg\n", "text is empty"),
        (b"text,label\nhello,pos\n", "at least two classes"),
        (b"text,label\n", "no rows"),
    ],
)
def test_bad_text_tables_name_the_problem(content, message):
    with pytest.raises(DatasetError, match=message):
        read(("t.csv", content))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("blob", b"\x00\x01\x02\x03binary"),
        ("notes.bin", b"hello"),
        ("digit.png", png_bytes(np.zeros((4, 4), np.uint8))),
    ],
)
def test_files_of_no_accepted_format_are_unsupported(name, content):
    with pytest.raises(UnsupportedFormat, match="none of the accepted formats"):
        read((name, content))


def test_a_broken_gzip_is_named():
    with pytest.raises(DatasetError, match="not a valid gzip file"):
        read(("train-images.gz", b"\x1f\x8b\x08\x00"))


def test_a_table_without_suffix_is_sniffed(sentiment_csv):
    assert read(("upload", sentiment_csv)).source_format == "csv"
    assert (
        read(("upload", b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}')).source_format
        == "jsonl"
    )


def test_state_round_trip_and_merged_validation_split(two_class_zip, sentiment_csv):
    images = read(("d.zip", two_class_zip))
    restored = data_from_state(images.to_state())
    assert torch.equal(restored.images, images.images) and restored.classes == images.classes
    merged = with_test_split(images, images)
    assert merged.counts()["train"] == {"bottom": 20, "top": 20}
    assert merged.counts()["test"] == {"bottom": 25, "top": 25}
    grey = replace(images, images=images.images[:, :1])
    assert with_test_split(grey, images).images.shape == (90, 3, 16, 16)  # grey made colour
    assert torch.equal(with_test_split(images, grey).images[-1, 2], grey.images[-1, 0])
    with pytest.raises(DatasetError, match="classes"):
        with_test_split(images, read(("t.csv", sentiment_csv)))


def test_preprocessing_normalises_and_decodes_to_the_network_input(two_class_zip):
    images = read(("d.zip", two_class_zip)).images
    preprocessing = ImagePreprocessing.fit(images)
    normalised = preprocessing.normalize(images)
    assert normalised.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (normalised.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    big_grey = png_bytes(np.full((40, 30), 200, np.uint8))
    decoded = preprocessing.decode(big_grey)
    assert decoded.shape == (3, 16, 16) and int(decoded[0, 0, 0]) == 200


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def saved_png(array: np.ndarray, **options) -> bytes:
    return encoded(Image.fromarray(array), "PNG", **options)


def decoded_by_pil(data: bytes, channels: int, size: tuple[int, int]) -> torch.Tensor:
    array = decode_image(data, size, "L" if channels == 1 else "RGB")
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


@pytest.mark.parametrize(
    ("channels", "options"),
    [
        (3, {}),
        (3, {"interlace": 1}),
        (3, {"transparency": (0, 0, 0)}),
        (1, {}),
        (1, {"optimize": True}),
    ],
)
def test_plain_pngs_decode_through_libpng_to_the_pixels_pil_gives(channels, options):
    rng = np.random.default_rng(channels)
    shape = (12, 20, 3) if channels == 3 else (12, 20)
    data = saved_png(rng.integers(0, 256, shape, dtype=np.uint8), **options)
    pixels = plain_png(data, channels, (12, 20))
    assert pixels is not None and pixels.shape == (channels, 12, 20)
    assert torch.equal(pixels, decoded_by_pil(data, channels, (12, 20)))
    preprocessing = ImagePreprocessing(channels, 12, 20, [0.5] * channels, [0.2] * channels)
    assert torch.equal(preprocessing.decode(data), pixels)


def test_other_images_are_left_to_pil():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    others = {
        "another size": saved_png(colour),
        "grey for a colour network": saved_png(colour[:, :, 0]),
        "RGBA": saved_png(np.dstack([colour, colour[:, :, :1]])),
        "palette": encoded(Image.fromarray(colour).convert("P"), "PNG"),
        "16-bit": saved_png(colour[:, :, 0].astype(np.uint16) * 200),
        "JPEG": encoded(Image.fromarray(colour), "JPEG"),
        "truncated": saved_png(colour)[:60],
    }
    for what, data in others.items():
        channels = 1 if what == "16-bit" else 3
        size = (8, 8) if what == "another size" else (12, 20)
        assert plain_png(data, channels, size) is None, what
    preprocessing = ImagePreprocessing(3, 8, 8, [0.5] * 3, [0.2] * 3)
    assert preprocessing.decode(others["another size"]).shape == (3, 8, 8)  # resized by PIL
    with pytest.raises(DatasetError, match="not a decodable image"):
        ImagePreprocessing(3, 12, 20, [0.5] * 3, [0.2] * 3).decode(others["truncated"])


def traced_peak(function) -> tuple[object, int]:
    """function()'s result (or the exception it raised) and the most bytes Python held
    meanwhile beyond what it held before."""
    tracemalloc.start()
    try:
        try:
            result: object = function()
        except DatasetError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


ROW = b"x" * 95 + b",pos\n"  # 100 bytes


@pytest.mark.parametrize(
    ("line", "detail", "bound"),
    [(b"\n", "over 1000 blank lines", 1 << 20), (ROW, "decodes to more than", 24 << 20)],
    ids=["blank lines", "rows"],
)
def test_a_gzipped_table_is_read_in_bounded_memory(line, detail, bound):
    limit = 8 << 20
    bomb = gzip.compress(b"text,label\n" + line * (limit // len(line) + 1), compresslevel=1)
    refused, peak = traced_peak(lambda: read(("bomb.csv", bomb), max_decoded_bytes=limit))
    assert isinstance(refused, DatasetError) and detail in str(refused)
    # Blank lines are refused at once; rows are held as the texts they are, never as the
    # whole decoded file, its text and a list of its lines besides (as splitlines() did).
    assert peak < bound


def test_quoted_newlines_do_not_hide_columns_from_the_cap():
    row = ",".join(['"a\nb"'] * 600)  # 599 delimiters a row, one or none a line
    with pytest.raises(DatasetError, match="line 1003: over 1000 columns"):
        read(("t.csv", f"text,label\nx,pos\n{row},{row}\n".encode()))

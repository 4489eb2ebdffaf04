"""Readers for uploaded data (image zip, IDX, CSV/TSV/JSONL) and image preprocessing.

Every reader returns decoded, validated data or raises DatasetError with a
message that names the offending file, entry, line or column.
"""

import csv
import gzip
import io
import json
import lzma
import math
import re
import stat
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import PurePosixPath
from typing import BinaryIO, ClassVar, Final, Literal, get_args

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchcodec.decoders import decode_png

Task = Literal["image_classification", "text_sentiment"]
TASKS: tuple[Task, ...] = get_args(Task)
IMAGE_TASK: Final[Task] = "image_classification"
TEXT_TASK: Final[Task] = "text_sentiment"

# A file of a zip that Pillow does not recognise is skipped, unless its name says it is an
# image: then it is a damaged one, and the upload is refused rather than quietly smaller.
IMAGE_SUFFIXES = {
    *(".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    *(".pgm", ".ppm", ".pbm", ".pnm"),
}
TEXT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Written by file managers next to the files (besides every name starting with '.').
SYSTEM_FILES = {"thumbs.db", "desktop.ini"}
SKIPPED_EXAMPLES = 5  # names of files skipped as not images, kept for the upload's answer
SPLITS = ("train", "test")
MAX_LABEL_LENGTH = 200
MAX_CLASSES = 10_000
MAX_COLUMNS = 1_000
# A line of a table, in characters: ten of the longest texts. A longer one is no row.
MAX_LINE_CHARACTERS = 1_000_000
# Blank lines in a row that a table may hold: each costs a read, and a gzip of a few MB can
# hold a billion of them.
MAX_BLANK_LINES = 1_000
MAX_TEXT_CHARACTERS = 100_000  # the longest text /predict accepts, too
MAX_IMAGE_PIXELS = 50_000_000  # one image, judged from its header before it is decoded
RESIZE_SLICE_BYTES = 64 << 20  # the float copy of the images resized at once
RATIO_CHECKED_ABOVE = 1 << 20  # smaller zip entries cannot hurt, whatever their ratio
# What ingesting an upload holds at its peak besides the decoded examples themselves,
# charged against ReadOptions.max_memory_bytes as it is read (each measured, with room, by
# tests/app/test_ingest_memory.py as the rise of a process's resident memory):
# a row's list slots, label, split and tensors' share, its checks' digest and the pickler's
# memo when it is stored;
TEXT_ROW_BYTES = 160
# a text's bytes, in eighths: held as read (8), pickled when stored, into a buffer that
# grows by an eighth at a time (9), and once more as the pickle is written (8; a table of
# 2,000-character texts peaked at 3.1 times its texts);
TEXT_EIGHTHS = 25
# a zip entry's ZipInfo, name and path parts, its place in the lists of names, labels and
# splits, and its checks' digest and tables (1.5 KiB measured);
ZIP_ENTRY_BYTES = 2048
# an IDX example's label string and split, its label id and its checks' digest (0.2 KiB).
IDX_EXAMPLE_BYTES = 256
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class DatasetError(ValueError):
    """The upload cannot be used; the message says why."""


class UnsupportedFormat(DatasetError):
    """The upload is none of the accepted formats."""


@dataclass
class ReadOptions:
    resize: tuple[int, int] | None = None  # (height, width)
    text_column: str = "text"
    label_column: str = "label"
    max_examples: int = 2_000_000
    max_decoded_bytes: int = 1024**3  # unzipped, gunzipped, or as pixels
    max_zip_ratio: int = 100
    max_memory_bytes: int = 2 * 1024**3  # what reading, checking and storing it may hold


@dataclass
class NamedFile:
    filename: str
    stream: BinaryIO


class NotAnImage(DatasetError):
    """Pillow does not recognise the bytes as an image of any format it reads."""


@dataclass
class Skipped:
    """The files of an image zip left out of the dataset, by reason."""

    hidden: int = 0  # system and hidden files: __MACOSX/, ._*, .DS_Store, Thumbs.db, …
    not_an_image: int = 0  # what Pillow does not recognise, in a file not named as an image
    examples: list[str] = field(default_factory=list)  # the first few not an image

    def add_not_an_image(self, name: str) -> None:
        self.not_an_image += 1
        if len(self.examples) < SKIPPED_EXAMPLES:  # shown as a class name would be
            self.examples.append(CONTROL_CHARACTERS.sub("", name)[:MAX_LABEL_LENGTH])


@dataclass
class LabelledData:
    classes: list[str]
    labels: torch.Tensor  # int64, index into classes
    is_test: torch.Tensor  # bool, True for the upload's own test split
    source_format: str  # image_zip, idx, csv, tsv or jsonl
    skipped: Skipped = field(default_factory=Skipped, kw_only=True)
    task: ClassVar[Task]

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for split, mask in (("train", ~self.is_test), ("test", self.is_test)):
            per_class = torch.bincount(self.labels[mask], minlength=len(self.classes)).tolist()
            if sum(per_class):
                counts[split] = dict(zip(self.classes, per_class, strict=True))
        return counts

    def to_state(self) -> dict:
        """What training reads back (data_from_state): the examples, not what was left out.
        The tensors themselves, not copies (as asdict would make): the images may be most
        of the process's memory."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped"}
        return {"task": self.task, **state}

    def details(self) -> dict:
        """Reader facts training needs, stored with the dataset: each kind says its own."""
        raise NotImplementedError


@dataclass
class ImageData(LabelledData):
    images: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # uint8 N,C,H,W
    task: ClassVar[Task] = IMAGE_TASK

    def details(self) -> dict:
        _, channels, height, width = self.images.shape
        return {"channels": channels, "height": height, "width": width}


@dataclass
class TextData(LabelledData):
    texts: list[str] = field(default_factory=list)
    task: ClassVar[Task] = TEXT_TASK

    def details(self) -> dict:
        return {"mean_characters": round(sum(map(len, self.texts)) / max(len(self.texts), 1), 1)}


def with_test_split(train: LabelledData, test: LabelledData) -> LabelledData:
    """train's training examples, and every example of test as the test split."""
    if type(train) is not type(test) or train.classes != test.classes:
        raise DatasetError(
            f"the validation dataset's classes {test.classes} differ from {train.classes}"
        )
    keep = ~train.is_test
    labels = torch.cat([train.labels[keep], test.labels])
    is_test = torch.cat(
        [
            torch.zeros(int(keep.sum()), dtype=torch.bool),
            torch.ones(len(test.labels), dtype=torch.bool),
        ]
    )
    if isinstance(train, TextData) and isinstance(test, TextData):
        texts = [text for text, kept in zip(train.texts, keep.tolist(), strict=True) if kept]
        return replace(train, labels=labels, is_test=is_test, texts=texts + test.texts)
    assert isinstance(train, ImageData) and isinstance(test, ImageData)  # same type, checked
    train_images, test_images = _same_channels(train.images[keep], test.images)
    if train_images.shape[2:] != test_images.shape[2:]:
        raise DatasetError(
            f"validation images are {tuple(test.images.shape[2:])} (HxW), training images "
            f"{tuple(train.images.shape[2:])}: upload one of them with a 'resize'"
        )
    images = torch.cat([train_images, test_images])
    return replace(train, labels=labels, is_test=is_test, images=images)


def _same_channels(*batches: torch.Tensor) -> list[torch.Tensor]:
    """Grey images as colour ones when any batch is in colour, as within one upload."""
    channels = max(batch.shape[1] for batch in batches)
    return [batch.expand(-1, channels, -1, -1) for batch in batches]


def data_from_state(state: dict) -> ImageData | TextData:
    state = dict(state)
    kind = ImageData if state.pop("task") == IMAGE_TASK else TextData
    return kind(**state)


def read_upload(files: list[NamedFile], options: ReadOptions) -> ImageData | TextData:
    """Detect the format of the uploaded file(s) and read them."""
    if not files:
        raise DatasetError("no file uploaded: send the data in the multipart field 'file'")
    heads = [_peek(f.stream, 4) for f in files]
    if all(_is_idx(f, head) for f, head in zip(files, heads, strict=True)):
        return read_idx(files, options)
    if len(files) > 1:
        raise DatasetError("several files are accepted only for IDX data (images and labels)")
    file, head = files[0], heads[0]
    if head.startswith(b"PK\x03\x04"):
        return read_image_zip(file.stream, options)
    text_format = _text_format(file.filename, _peek(file.stream, 4096))
    if text_format is None:
        raise UnsupportedFormat(
            f"{file.filename!r} is none of the accepted formats: a zip of images, IDX files, "
            f"or a .csv, .tsv or .jsonl table"
        )
    return read_text_table(file, text_format, options)


def _peek(stream: BinaryIO, size: int) -> bytes:
    head = stream.read(size)
    stream.seek(0)
    return head


def _read_maybe_gzip(stream: BinaryIO, size: int) -> bytes:
    """The file's first size bytes, gunzipped if it is gzip: never more, whatever it holds."""
    try:
        if _peek(stream, 2) != b"\x1f\x8b":
            return stream.read(size)
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            return unzipped.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"not a valid gzip file ({exc})") from exc
    finally:
        stream.seek(0)


def _read_capped(file: NamedFile, limit: int) -> bytes:
    """The whole file, gunzipped if it is gzip; refused as soon as it passes limit bytes."""
    data = _read_maybe_gzip(file.stream, limit + 1)
    if len(data) > limit:
        raise DatasetError(
            f"{file.filename!r} decodes to more than {limit} bytes (TRAINSERVE_MAX_DECODED_BYTES)"
        )
    return data


def _is_idx(file: NamedFile, head: bytes) -> bool:
    if head[:2] == b"\x1f\x8b":
        head = _read_maybe_gzip(file.stream, 4)
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] == 0x08 and head[3] in (1, 3)


def _text_format(filename: str, head: bytes) -> str | None:
    """By suffix; a file without one is sniffed. Other suffixes (.png, .bin) are not tables."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return TEXT_SUFFIXES[suffix]
    if suffix or not _looks_like_text(head):
        return None
    return "jsonl" if head.lstrip()[:1] == b"{" else "csv"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
    return b"\0" not in head


# ---- image zip -------------------------------------------------------------------------


def read_image_zip(stream: BinaryIO, options: ReadOptions) -> ImageData:
    entry_count = _zip_entry_count(stream)  # before parsing: each entry costs memory
    if entry_count > options.max_examples:
        raise DatasetError(f"{entry_count} entries in the zip; the limit is {options.max_examples}")
    memory = memory_budget(options)
    memory.charge(entry_count * ZIP_ENTRY_BYTES, f"the zip's {entry_count} entries")
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"not a readable zip archive: {exc}") from exc
    _check_zip_entries(archive.infolist(), options)
    # A name such as "" or "." names no file (and zipfile's is_dir() fails on "")
    if any(not PurePosixPath(info.filename).parts for info in archive.infolist()):
        raise DatasetError("a zip entry has no file name: the zip is damaged")
    files = [info for info in archive.infolist() if not info.is_dir()]
    shown = [info for info in files if not _is_hidden(info.filename)]
    _refuse_empty_folders(archive, shown)
    skipped = Skipped(hidden=len(files) - len(shown))
    names, arrays = _decode_images(archive, shown, options, skipped, memory)
    placed = _place_entries([PurePosixPath(name).parts for name in names], skipped)
    images = _stack_images(arrays, names, memory)
    splits = [split for split, _ in placed]
    labels = [label for _, label in placed]
    classes, label_ids = _index_labels(labels, splits)
    return ImageData(
        classes, label_ids, _test_mask(splits), "image_zip", skipped=skipped, images=images
    )


EOCD, ZIP64_LOCATOR, ZIP64_EOCD = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


def _zip_entry_count(stream: BinaryIO) -> int:
    """The entry count the end-of-central-directory record declares (zip64 included)."""
    size = stream.seek(0, 2)
    stream.seek(max(0, size - (1 << 16) - 22))  # the record and a comment of up to 64 KiB
    tail = stream.read()
    at = tail.rfind(EOCD)
    if at < 0:
        stream.seek(0)
        raise DatasetError("not a readable zip archive: it has no central directory")
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    locator = tail.rfind(ZIP64_LOCATOR, 0, at)
    if count == 0xFFFF and locator >= 0:
        stream.seek(int.from_bytes(tail[locator + 8 : locator + 16], "little"))
        record = stream.read(56)
        if record[:4] == ZIP64_EOCD:
            count = int.from_bytes(record[32:40], "little")
    stream.seek(0)
    return count


def _check_zip_entries(infos: list[zipfile.ZipInfo], options: ReadOptions) -> None:
    """From the central directory, before anything is decompressed: safe paths, no links,
    no encryption, sizes and compression ratios within the limits."""
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", name):
            raise DatasetError(f"zip entry {name!r} has an unsafe path (absolute or with '..')")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"zip entry {name!r} is a symbolic link: send the file itself")
        if info.flag_bits & 0x1:
            raise DatasetError(f"zip entry {name!r} is encrypted")
        if info.file_size > RATIO_CHECKED_ABOVE and (
            info.file_size > options.max_zip_ratio * max(info.compress_size, 1)
        ):
            raise DatasetError(
                f"zip entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f} "
                f"times; the limit is {options.max_zip_ratio} (a zip bomb?)"
            )
        total += info.file_size
    if total > options.max_decoded_bytes:
        raise DatasetError(
            f"the zip expands to {total} bytes; the limit is {options.max_decoded_bytes} "
            f"(TRAINSERVE_MAX_DECODED_BYTES)"
        )


class Budget:
    """Bytes left of one of an upload's limits, charged as it is read; the refusal names
    the limit and the setting that sets it."""

    def __init__(self, limit: int, bytes_of: str, setting: str):
        self.limit, self.bytes_of, self.setting = limit, bytes_of, setting
        self.left = limit

    def charge(self, size: int, what: str) -> None:
        self.left -= size
        if self.left < 0:
            raise DatasetError(
                f"{what} brings the upload past {self.limit} {self.bytes_of} ({self.setting})"
            )


def decode_budget(options: ReadOptions) -> Budget:
    """The upload's decoded size: unzipped, gunzipped, or as pixels."""
    return Budget(options.max_decoded_bytes, "decoded bytes", "TRAINSERVE_MAX_DECODED_BYTES")


def memory_budget(options: ReadOptions) -> Budget:
    """What ingesting it holds at its peak: the examples as decoded and as stored, and what
    each costs besides (TEXT_ROW_BYTES and the others above)."""
    return Budget(
        options.max_memory_bytes,
        "bytes of memory to ingest",
        "TRAINSERVE_MAX_INGEST_MEMORY_BYTES",
    )


def _refuse_empty_folders(archive: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> None:
    """An empty class folder is a class with no examples: say so rather than drop it. (A
    folder of files that are not images, such as docs/README, is no class: it is skipped.)"""
    holding = {str(parent) for info in files for parent in PurePosixPath(info.filename).parents}
    for info in archive.infolist():
        folder = info.filename.rstrip("/")
        if info.is_dir() and folder not in holding and not _is_hidden(folder):
            raise DatasetError(
                f"folder {info.filename!r} holds no images: every class needs at least one example"
            )


def _is_hidden(path: str) -> bool:
    """A file no one means as data: a name starting with '.' (.DS_Store, the ._ copies of
    macOS) or inside such a folder, under __MACOSX/, or a system file (Thumbs.db)."""
    parts = PurePosixPath(path).parts
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in parts)
    return hidden or parts[-1].lower() in SYSTEM_FILES


def _decode_images(
    archive: zipfile.ZipFile,
    files: list[zipfile.ZipInfo],
    options: ReadOptions,
    skipped: Skipped,
    memory: Budget,
) -> tuple[list[str], list[np.ndarray]]:
    """The name and pixels of every file that is an image; the others counted in skipped."""
    budget = decode_budget(options)
    names, arrays = [], []
    for info in files:
        array = _decode_entry(archive, info, options.resize, budget)
        if array is None:
            skipped.add_not_an_image(info.filename)
        else:
            memory.charge(array.nbytes, f"zip entry {info.filename!r}")
            names.append(info.filename)
            arrays.append(array)
    return names, arrays


def _place_entries(paths: list[tuple[str, ...]], skipped: Skipped) -> list[tuple[str, str]]:
    """Map each image path to (split, class): <class>/<f> or <train|test>/<class>/<f>."""
    if not paths:
        raise DatasetError(f"the zip holds no image files{_not_images_note(skipped)}")
    first_folders = {parts[0] for parts in paths if len(parts) > 1}
    wrapped = len(first_folders) == 1 and first_folders.pop().lower() not in SPLITS
    if wrapped and all(len(parts) > 2 for parts in paths):  # one outer folder, e.g. cifar10/…
        paths = [parts[1:] for parts in paths]
    return [_place_entry(parts) for parts in paths]


def _not_images_note(skipped: Skipped) -> str:
    if not skipped.not_an_image:
        return ""
    examples = ", ".join(map(repr, skipped.examples))
    return f" ({skipped.not_an_image} files are not images, e.g. {examples})"


def _place_entry(parts: tuple[str, ...]) -> tuple[str, str]:
    if len(parts) == 3 and parts[0].lower() in SPLITS:
        return parts[0].lower(), parts[1]
    if len(parts) == 2:
        return "train", parts[0]
    raise DatasetError(
        f"zip entry {'/'.join(parts)!r} is not laid out as <class>/<file> or "
        f"train|test/<class>/<file>"
    )


def _decode_entry(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    resize: tuple[int, int] | None,
    budget: Budget,
) -> np.ndarray | None:
    """The entry's pixels; None for a file that is not an image and not named as one."""
    what = f"zip entry {info.filename!r}"
    try:
        # Read no more than the budget allows, whatever the central directory declared.
        with archive.open(info) as entry:
            data = entry.read(max(budget.left, 0) + 1)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise DatasetError(f"{what} cannot be read: {exc}") from exc
    except (NotImplementedError, RuntimeError) as exc:  # an unknown compression method
        raise DatasetError(f"{what} cannot be read: {exc}") from exc
    budget.charge(len(data), what)
    try:
        array = decode_image(data, resize)
    except NotAnImage as exc:
        if PurePosixPath(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
            return None
        raise DatasetError(f"{what}: {exc}") from exc
    except DatasetError as exc:
        raise DatasetError(f"{what}: {exc}") from exc
    budget.charge(array.nbytes, what)
    return array


# Pillow's modes of one channel; "I;16" and its byte orders start with "I;16".
GREY_MODES = {"1", "L", "LA", "La", "I", "F"}


def decode_image(
    data: bytes,
    resize: tuple[int, int] | None = None,
    mode: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Image bytes of any format Pillow reads to a uint8 array, HxW (grey) or HxWx3 (colour).

    The format is told from the bytes, never from a name. Raises NotAnImage when Pillow
    does not recognise them, DatasetError when it does but the image is too large or
    cannot be decoded (truncated, corrupt).
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImage("not a decodable image (unknown or corrupt format)") from exc
    except Exception as exc:  # a format's parser failing on a header that began like its own
        raise NotAnImage(f"not a decodable image ({type(exc).__name__}: {exc})") from exc
    with image:
        try:
            return _pixels(image, resize, mode, max_pixels)
        except DatasetError:
            raise
        except Image.DecompressionBombError as exc:
            raise DatasetError(f"image too large ({exc})") from exc
        except Exception as exc:  # PIL's decoders raise many kinds of error on malformed input
            raise DatasetError(f"not a decodable image ({type(exc).__name__}: {exc})") from exc


def _pixels(
    image: Image.Image, resize: tuple[int, int] | None, mode: str | None, max_pixels: int
) -> np.ndarray:
    """The first frame (of a GIF, a TIFF), in mode or else grey or RGB as the image is;
    refused from its header, before it is decoded, if it has over max_pixels."""
    width, height = image.size
    if width * height > max_pixels:
        raise DatasetError(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    image.load()
    converted = _eight_bit(image).convert(mode or ("L" if _is_grey(image) else "RGB"))
    if resize and converted.size != (resize[1], resize[0]):
        converted = converted.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8)


def _is_grey(image: Image.Image) -> bool:
    """One channel, or a palette of greys only (a grey GIF is one)."""
    if image.mode in GREY_MODES or image.mode.startswith("I;16"):
        return True
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    return palette is not None and palette[0::3] == palette[1::3] == palette[2::3]


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey (a PGM whose maxval is over 255, a 16-bit PNG or TIFF) scaled to 0-255:
    Pillow's convert() clips it at 255 instead, which turns nearly every pixel white."""
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    return image.convert("I").point(lambda value: value / 257 + 0.5)  # rounded, 65535 → 255


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPE = {1: 0, 3: 2}  # channels: IHDR colour type of 8-bit grey, 8-bit RGB


def plain_png(data: bytes, channels: int, size: tuple[int, int]) -> torch.Tensor | None:
    """uint8 C,H,W of a PNG that is already 8-bit grey (channels 1) or RGB (3) of this
    height and width, decoded by libpng (torchcodec): the pixels PIL gives, in a third of
    its time. None for any other image, left to decode_image, which converts and resizes
    it and names what is wrong with a bad one."""
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if (height, width) != size or depth != 8 or colour != PNG_COLOUR_TYPE[channels]:
        return None
    try:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return decode_png(encoded, mode="GRAY" if channels == 1 else "RGB")
    except RuntimeError:  # libpng refuses it
        return None


def _stack_images(arrays: list[np.ndarray], names: list[str], memory: Budget) -> torch.Tensor:
    """uint8 N,C,H,W, each array copied into its place and let go (the list is emptied):
    the decoded images, most of an upload's memory, are held about once, not three times.
    Charged as a second copy all the same: the arrays' memory, freed in small pieces,
    is not all given back while the tensor fills."""
    height, width = arrays[0].shape[:2]
    for array, name in zip(arrays, names, strict=True):
        if array.shape[:2] != (height, width):
            raise DatasetError(
                f"{name!r} is {array.shape[1]}x{array.shape[0]} but the first image is "
                f"{width}x{height}: send a 'resize' such as {height}x{width}"
            )
    channels = 3 if any(array.ndim == 3 for array in arrays) else 1
    memory.charge(len(arrays) * channels * height * width, "the images put in one tensor")
    images = torch.empty((len(arrays), channels, height, width), dtype=torch.uint8)
    into = images.numpy()  # the same memory
    while arrays:
        array = arrays.pop()
        into[len(arrays)] = array.transpose(2, 0, 1) if array.ndim == 3 else array  # grey: to C
    return images


# ---- IDX -------------------------------------------------------------------------------


def read_idx(files: list[NamedFile], options: ReadOptions) -> ImageData:
    by_split: dict[str, dict[str, np.ndarray]] = {}
    budget, memory = decode_budget(options), memory_budget(options)
    for file in files:
        memory.charge(_idx_declared_bytes(file), repr(file.filename))  # before it is read
        array = read_idx_array(file, budget.left)
        budget.charge(array.nbytes, repr(file.filename))
        split = "test" if re.search(r"t10k|test", file.filename or "", re.I) else "train"
        kind = "images" if array.ndim == 3 else "labels"
        if kind in by_split.setdefault(split, {}):
            raise DatasetError(f"two IDX {kind} files for the {split} split ({file.filename!r})")
        by_split[split][kind] = array
    if "train" not in by_split:
        raise DatasetError("no IDX training files: test files are named t10k-* or *test*")
    images, labels, splits = [], [], []
    for split, pair in by_split.items():
        if set(pair) != {"images", "labels"}:
            raise DatasetError(f"the {split} split needs both an IDX image file and a label file")
        if len(pair["images"]) != len(pair["labels"]):
            raise DatasetError(
                f"the {split} split has {len(pair['images'])} images "
                f"but {len(pair['labels'])} labels"
            )
        images.append(pair["images"])
        count = len(pair["labels"])
        memory.charge(count * IDX_EXAMPLE_BYTES, f"the {split} split's {count} examples")
        labels += [str(int(label)) for label in pair["labels"]]
        splits += [split] * len(pair["labels"])
    if len({array.shape[1:] for array in images}) > 1:
        raise DatasetError("the train and test IDX images differ in size")
    if len(labels) > options.max_examples:
        raise DatasetError(f"{len(labels)} examples; the limit is {options.max_examples}")
    memory.charge(sum(array.nbytes for array in images), "the images put in one tensor")
    tensor = torch.from_numpy(np.concatenate(images)).unsqueeze(1)
    if options.resize:
        budget.charge(len(tensor) * math.prod(options.resize), "the resize")
        memory.charge(_resize_memory(tensor, options.resize), "the resize")
        tensor = _resize_uint8(tensor, options.resize)
    classes, label_ids = _index_labels(labels, splits, numeric=True)
    return ImageData(classes, label_ids, _test_mask(splits), "idx", images=tensor)


def _idx_declared_bytes(file: NamedFile) -> int:
    """The size an IDX file's header declares (a file that holds more is refused once
    read, as truncated or over the decoded limit)."""
    head = _read_maybe_gzip(file.stream, 4 + 4 * 3)  # the magic number and up to 3 sizes
    sizes = [int.from_bytes(head[at : at + 4], "big") for at in range(4, 4 + 4 * head[3], 4)]
    return len(head) + math.prod(sizes)


def read_idx_array(file: NamedFile, max_bytes: int = 1024**3) -> np.ndarray:
    raw = _read_capped(file, max_bytes)
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) < header or len(raw) - header != math.prod(shape):
        raise DatasetError(f"{file.filename!r}: IDX header says {shape} but the data is truncated")
    if ndim == 3 and 0 in shape[1:]:
        raise DatasetError(f"{file.filename!r}: IDX images of {shape[1]}x{shape[2]} pixels")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # In slices: the float copies interpolate needs are four times the uint8 images, before
    # and after.
    return torch.cat(
        [_resize_slice(part, size) for part in images.split(_slice_count(images, size))]
    )


def _slice_count(images: torch.Tensor, size: tuple[int, int]) -> int:
    return max(1, RESIZE_SLICE_BYTES // (4 * _largest_image(images, size)))


def _largest_image(images: torch.Tensor, size: tuple[int, int]) -> int:
    """Pixels of one image before or after the resize, whichever is more."""
    return max(math.prod(images.shape[1:]), images.shape[1] * math.prod(size))


def _resize_memory(images: torch.Tensor, size: tuple[int, int]) -> int:
    """What the resize holds at its peak: a slice's float copies before and after, the
    resized slices and the tensor they are put together in."""
    slice_images = min(len(images), _slice_count(images, size))
    resized = len(images) * images.shape[1] * math.prod(size)
    return 2 * 4 * slice_images * _largest_image(images, size) + 2 * resized


def _resize_slice(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear")
    return resized.round().clamp(0, 255).to(torch.uint8)


# ---- text tables -----------------------------------------------------------------------


def read_text_table(file: NamedFile, text_format: str, options: ReadOptions) -> TextData:
    lines, memory = TextLines(file, options.max_decoded_bytes), memory_budget(options)
    rows = _json_lines(lines) if text_format == "jsonl" else _table_rows(lines, text_format)
    texts, labels, splits = [], [], []
    names: dict[str, str] = {}  # one string per label and split, not one per row
    for number, row in rows:
        text, label, split = _row_fields(row, number, options)
        memory.charge(TEXT_ROW_BYTES + TEXT_EIGHTHS * sys.getsizeof(text) // 8, f"line {number}")
        texts.append(text)
        labels.append(names.setdefault(label, label))
        splits.append(names.setdefault(split, split))
        if len(texts) > options.max_examples:
            raise DatasetError(f"more than {options.max_examples} rows")
    if not texts:
        raise DatasetError("the table has no rows")
    classes, label_ids = _index_labels(labels, splits)
    return TextData(classes, label_ids, _test_mask(splits), text_format, texts=texts)


class CappedReader(io.RawIOBase):
    """A binary stream that refuses to give more than `limit` bytes in all."""

    def __init__(self, stream: BinaryIO, limit: int, filename: str):
        self.stream, self.left, self.limit, self.filename = stream, limit, limit, filename

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # any writable buffer
        data = self.stream.read(min(len(buffer), self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise DatasetError(
                f"{self.filename!r} decodes to more than {self.limit} bytes "
                f"(TRAINSERVE_MAX_DECODED_BYTES)"
            )
        buffer[: len(data)] = data
        return len(data)


class TextLines:
    """A table's lines, gunzipped if it is gzip and decoded as UTF-8 one at a time: the
    file is never held whole. `number` is the line last read. Refused (DatasetError) past
    the decoded-bytes limit, at a line of over MAX_LINE_CHARACTERS, over MAX_BLANK_LINES
    blank lines in a row, bytes that are not UTF-8, or a NUL character."""

    def __init__(self, file: NamedFile, limit: int):
        self.file, self.limit = file, limit
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        blank = 0
        with self._text() as text:
            while line := self._readline(text):
                self.number += 1
                blank = blank + 1 if line.isspace() else 0
                if blank > MAX_BLANK_LINES:
                    raise DatasetError(f"line {self.number}: over {MAX_BLANK_LINES} blank lines")
                if len(line) > MAX_LINE_CHARACTERS:
                    raise DatasetError(f"line {self.number}: over {MAX_LINE_CHARACTERS} characters")
                if "\x00" in line:
                    raise DatasetError(
                        f"line {self.number}: the text holds a NUL character: binary data?"
                    )
                yield line

    def _text(self) -> io.TextIOWrapper:
        stream = self.file.stream
        if _peek(stream, 2) == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        capped = CappedReader(stream, self.limit, self.file.filename)
        # newline="": line ends kept as they are, as csv needs (quoted ones included)
        return io.TextIOWrapper(io.BufferedReader(capped), encoding="utf-8-sig", newline="")

    def _readline(self, text: io.TextIOWrapper) -> str:
        try:
            return text.readline(MAX_LINE_CHARACTERS + 1)
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"the text is not UTF-8 (near line {self.number + 1}): re-encode it"
            ) from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"not a valid gzip file ({exc})") from exc


def _table_rows(lines: TextLines, text_format: str) -> Iterator[tuple[int, dict]]:
    """Each row (a dict by the header's column names) and the line it ends on."""
    width = RowWidth(lines, "\t" if text_format == "tsv" else ",")
    reader = csv.reader(width, delimiter=width.delimiter)
    try:
        header = next(reader, [])
        for fields in reader:
            width.next_row()
            if fields:  # a blank line, as csv.DictReader skips them
                yield lines.number, dict(zip(header, fields, strict=False))
    except csv.Error as exc:
        raise DatasetError(f"line {lines.number}: {exc}") from exc


class RowWidth:
    """The lines csv reads, refused once the row being read holds MAX_COLUMNS delimiters,
    before csv splits it into fields: counted across the lines a row's quoted newlines join,
    not line by line (quoted delimiters count too)."""

    def __init__(self, lines: TextLines, delimiter: str):
        self.lines, self.delimiter = lines, delimiter
        self.delimiters = 0  # in the row being read

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.delimiters += line.count(self.delimiter)
            if self.delimiters >= MAX_COLUMNS:
                raise DatasetError(f"line {self.lines.number}: over {MAX_COLUMNS} columns")
            yield line

    def next_row(self) -> None:
        self.delimiters = 0


def _json_lines(lines: TextLines) -> Iterator[tuple[int, dict]]:
    for line in lines:
        number = lines.number
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError as exc:
            raise DatasetError(f"line {number}: JSON nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
            raise DatasetError(f"line {number}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"line {number}: expected a JSON object")
        if len(row) > MAX_COLUMNS:
            raise DatasetError(f"line {number}: over {MAX_COLUMNS} fields")
        yield number, row


def _row_fields(row: dict, number: int, options: ReadOptions) -> tuple[str, str, str]:
    for column in (options.text_column, options.label_column):
        if row.get(column) is None:
            present = ", ".join(str(key) for key in row if key is not None)
            raise DatasetError(f"line {number}: no column {column!r} (columns: {present})")
    text = str(row[options.text_column]).strip()
    label = str(row[options.label_column]).strip()
    split = str(row.get("split") or "train").strip().lower()
    if not text:
        raise DatasetError(f"line {number}: the text is empty")
    if len(text) > MAX_TEXT_CHARACTERS:
        raise DatasetError(f"line {number}: the text is over {MAX_TEXT_CHARACTERS} characters")
    if problem := label_problem(label):
        raise DatasetError(f"line {number}: the label {problem}")
    if split not in SPLITS:
        raise DatasetError(f"line {number}: split must be 'train' or 'test', not {split!r}")
    return text, label, split


# ---- shared ----------------------------------------------------------------------------


def label_problem(label: str) -> str | None:
    """What is wrong with a class name, or None."""
    if not label or len(label) > MAX_LABEL_LENGTH:
        return f"must be 1 to {MAX_LABEL_LENGTH} characters long, not {len(label)}"
    if CONTROL_CHARACTERS.search(label):
        return "holds control characters"
    return None


def _index_labels(
    labels: list[str], splits: list[str], numeric: bool = False
) -> tuple[list[str], torch.Tensor]:
    train_classes = {label for label, split in zip(labels, splits, strict=True) if split == "train"}
    if len(train_classes) > MAX_CLASSES:
        raise DatasetError(f"{len(train_classes)} classes; the limit is {MAX_CLASSES}")
    for label in train_classes:
        if problem := label_problem(label):
            raise DatasetError(f"class {label[:40]!r} {problem}")
    test_only = sorted(set(labels) - train_classes)
    if test_only:
        raise DatasetError(f"class {test_only[0]!r} has test examples but no training examples")
    if len(train_classes) < 2:
        raise DatasetError(f"at least two classes are needed; found {sorted(train_classes)}")
    classes = sorted(train_classes, key=int if numeric else str)
    index = {name: i for i, name in enumerate(classes)}
    return classes, torch.tensor([index[label] for label in labels], dtype=torch.int64)


def _test_mask(splits: list[str]) -> torch.Tensor:
    return torch.tensor([split == "test" for split in splits], dtype=torch.bool)


# ---- image preprocessing, shared by training and serving --------------------------------


@dataclass
class ImagePreprocessing:
    channels: int
    height: int
    width: int
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, images: torch.Tensor) -> "ImagePreprocessing":
        """Per-channel mean and std of uint8 training images, in [0, 1] units."""
        _, channels, height, width = images.shape
        pixels = images.transpose(0, 1).reshape(channels, -1).double() / 255
        std = pixels.std(dim=1).clamp_min(1e-3)
        return cls(channels, height, width, pixels.mean(dim=1).tolist(), std.tolist())

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N,C,H,W (on any device) to normalised float, in one multiply-add."""
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        return torch.addcmul(-mean / std, batch.float(), 1 / (255 * std))

    def decode(self, data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
        """Image bytes to uint8 C,H,W in this network's channels and size; DatasetError for
        an image of over max_pixels, before it is decoded."""
        pixels = plain_png(data, self.channels, (self.height, self.width))
        if pixels is not None:
            return pixels
        mode = "L" if self.channels == 1 else "RGB"
        array = decode_image(data, (self.height, self.width), mode, max_pixels)
        tensor = torch.from_numpy(array.copy())
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def examples_per_class(data: LabelledData, per_class: int) -> list[list[int]]:
    """The indices of each class's first `per_class` examples, training split first: what a
    dataset's page shows of it."""
    order = torch.argsort(data.is_test.to(torch.int8), stable=True)  # train, then test
    labels = data.labels.tolist()
    picked: list[list[int]] = [[] for _ in data.classes]
    for index in order.tolist():
        chosen = picked[labels[index]]
        if len(chosen) < per_class:
            chosen.append(index)
            if all(len(p) == per_class for p in picked):
                break
    return picked


def thumbnail_png(image: torch.Tensor, max_side: int) -> bytes:
    """One stored image (uint8 C,H,W) as a PNG at most `max_side` pixels a side."""
    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    picture.thumbnail((max_side, max_side))  # only ever shrinks, keeping the aspect ratio
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()

"""Hostile requests and the answer each must get: shared by the in-process test, the
end-to-end test and bench/hostile_inputs.py (which prints them as a table).

Sizes follow the service's limits, so a bomb is just over them and cheap to build.
"""

import gzip
import io
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from tests.conftest import image_zip, png_bytes

MiB = 1 << 20


@dataclass
class Hostile:
    name: str
    status: int
    detail: str  # a fragment the answer's detail must hold
    path: str = "/datasets"
    files: list = field(default_factory=list)
    data: dict = field(default_factory=dict)
    json: object = None
    content: bytes | None = None
    headers: dict = field(default_factory=dict)

    def refusal(self, response) -> str:
        """The answer's words: its detail, or under /v2 the KServe protocol's error."""
        body = response.json()
        return str(body["error"] if self.path.startswith("/v2/") else body["detail"])

    def request_kwargs(self) -> dict:
        kwargs: dict = {"headers": self.headers}
        if self.content is not None:
            kwargs["content"] = self.content
        elif self.json is not None:
            kwargs["json"] = self.json
        else:
            kwargs |= {"files": self.files, "data": self.data}
        return kwargs


def upload(title: str, status: int, detail: str, filename: str, data: bytes, **form) -> Hostile:
    return Hostile(title, status, detail, files=[("file", (filename, data))], data=form)


def valid_png(size: int = 8) -> bytes:
    return png_bytes(np.full((size, size, 3), 128, np.uint8))


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def with_class_b(entries: dict[str, bytes]) -> bytes:
    """A zip with the given entries and one valid image of a second class."""
    return image_zip({**entries, "b/ok.png": valid_png()})


def symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("a/passwd.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("b/ok.png", valid_png())
    return buffer.getvalue()


def encrypted_flag_zip() -> bytes:
    """A zip whose central directory marks an entry as encrypted."""
    return _patch_central_directory(with_class_b({"a/secret.png": valid_png()}), {}, "a/secret.png")


def ratio_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/zeros.png", bytes(20 * MiB))  # about 20 KiB compressed
        archive.writestr("b/ok.png", valid_png())
    return buffer.getvalue()


def _patch_central_directory(
    archive: bytes, sizes: dict[str, tuple[int, int]], encrypted: str = ""
) -> bytes:
    """Rewrite the (compressed, uncompressed) sizes the central directory declares, and mark
    the entry named `encrypted` as encrypted (zipfile writes no encrypted entries itself)."""
    data = bytearray(archive)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length = int.from_bytes(data[at + 28 : at + 30], "little")
        name = bytes(data[at + 46 : at + 46 + name_length]).decode()
        if name == encrypted:
            data[at + 8] |= 0x1
        if name in sizes:
            compressed, uncompressed = sizes[name]
            data[at + 20 : at + 28] = struct.pack("<II", compressed, uncompressed)
        at = data.find(b"PK\x01\x02", at + 46)
    return bytes(data)


def declared_size_bomb(limit: int) -> bytes:
    """Three entries that each claim half the limit, at a ratio under the ratio cap."""
    names = [f"a/{i}.png" for i in range(3)]
    archive = with_class_b(dict.fromkeys(names, valid_png()))
    half = min(limit // 2 + 1, 0xFFFFFFFE)
    return _patch_central_directory(archive, {n: (half // 90, half) for n in names})


def lying_entry_zip() -> bytes:
    """An entry that declares 1000 bytes but inflates to 2 MiB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/liar.png", bytes(2 * MiB))
        archive.writestr("b/ok.png", valid_png())
    info = zipfile.ZipFile(io.BytesIO(buffer.getvalue())).getinfo("a/liar.png")
    return _patch_central_directory(buffer.getvalue(), {"a/liar.png": (info.compress_size, 1000)})


def pixel_bomb(limit: int) -> bytes:
    """Blank 2000x2000 PNGs of a few KiB each that decode past the limit together."""
    blank = png_bytes(np.zeros((2000, 2000), np.uint8))
    count = limit // (2000 * 2000) + 2
    return image_zip({f"{'ab'[i % 2]}/{i}.png": blank for i in range(count)})


def gzip_bomb(limit: int, content: bytes = bytes(16 * MiB)) -> bytes:
    """gzip members of 16 MiB (of zeros), one after another: more than limit once unzipped."""
    member = gzip.compress(content, compresslevel=1)
    return member * (limit // len(content) + 1)


def gzip_rows_bomb(limit: int) -> bytes:
    """A gzipped table of valid rows, a million of them decoding to the limit: the decoded
    size, not the row count, refuses it."""
    row = b"x" * max(8, limit // 1_000_000 - 5) + b",pos\n"
    rows = row * (16 * MiB // len(row))
    return gzip.compress(b"text,label\n") + gzip_bomb(limit, rows)


def csv(*rows: str) -> bytes:
    return ("\n".join(rows) + "\n").encode()


NO_KEY = {"authorization": ""}  # replaces the client's own key
UNKNOWN_KEY = {"authorization": "Bearer ts_not-a-key-of-this-service"}
DEFAULT_PREDICT_BYTES = 8 * MiB  # TRAINSERVE_MAX_PREDICT_BYTES's default
DEFAULT_PREDICT_PIXELS = 2048 * 2048  # TRAINSERVE_MAX_PREDICT_IMAGE_PIXELS's default


def hostile_inputs(
    max_upload_bytes: int, max_decoded_bytes: int, max_predict_bytes: int = DEFAULT_PREDICT_BYTES
) -> list[Hostile]:
    return [
        *upload_attacks(max_upload_bytes, max_decoded_bytes),
        *predict_attacks(max_predict_bytes),
        *keyless_attacks(max_upload_bytes),
    ]


def predict_attacks(max_predict_bytes: int) -> list[Hostile]:
    """Requests that could hold a model's batch thread or the event loop: each refused."""
    tiny = valid_png(4)
    return [
        Hostile(
            "/predict: body over the predict limit",
            413,
            "TRAINSERVE_MAX_PREDICT_BYTES",
            "/predict",
            files=[("file", ("x.png", bytes(max_predict_bytes)))],
        ),
        Hostile(
            "/predict: 1100 multipart parts",
            422,
            "more than 1026 multipart fields",
            "/predict",
            files=[("files", (f"{i}.png", tiny)) for i in range(1100)],
        ),
        Hostile(
            "/predict: 1025 images",
            422,
            "at most 1024 images",
            "/predict",
            files=[("files", (f"{i}.png", tiny)) for i in range(1025)],
        ),
        Hostile(
            "/predict: image header of 2049x2048",
            422,
            f"the limit is {DEFAULT_PREDICT_PIXELS} pixels",
            "/predict",
            files=[("file", ("x.png", png_header(2049, 2048)))],
        ),
        Hostile(
            "/v2 infer: body over the predict limit",
            413,
            "TRAINSERVE_MAX_PREDICT_BYTES",
            "/v2/models/anything/infer",
            content=bytes(max_predict_bytes + 1),
            headers={"content-type": "application/json"},
        ),
        Hostile(
            "/jobs: body over the JSON limit",
            413,
            "TRAINSERVE_MAX_JSON_BYTES",
            "/jobs",
            json={"task": "text_sentiment", "name": "x" * (1 * MiB)},
        ),
    ]


def keyless_attacks(max_upload_bytes: int) -> list[Hostile]:
    """Bodies the size of the upload limit sent without a valid key, to each kind of route
    that takes a body: refused before they are read."""
    body = bytes(max_upload_bytes)  # one copy for all

    def keyless(path: str, key: dict, detail: str) -> Hostile:
        title = f"no key: {max_upload_bytes // MiB} MiB to {path}"
        headers = {"content-type": "application/json", **key}
        return Hostile(title, 401, detail, path, content=body, headers=headers)

    return [
        keyless("/datasets", NO_KEY, "send an API key"),
        keyless("/jobs", NO_KEY, "send an API key"),
        keyless("/keys", UNKNOWN_KEY, "unknown or revoked"),
        keyless("/predict", UNKNOWN_KEY, "unknown or revoked"),
    ]


def wrong_scope_attacks(max_upload_bytes: int, predict_key: str) -> list[Hostile]:
    """Bodies the size of the upload limit sent with a valid predict key to routes of other
    scopes: refused (403) before they are read, as a stranger's are."""
    body = bytes(max_upload_bytes)
    headers = {"content-type": "application/json", "authorization": f"Bearer {predict_key}"}
    return [
        Hostile(
            f"predict key: {max_upload_bytes // MiB} MiB to {path}",
            403,
            f"this route needs {needs} or 'admin'",
            path,
            content=body,
            headers=headers,
        )
        for path, needs in (("/datasets", "'train'"), ("/keys", "'admin'"))
    ]


def upload_attacks(max_upload_bytes: int, max_decoded_bytes: int) -> list[Hostile]:
    two_rows = ("hello there,pos", "general kenobi,neg")
    truncated_png = valid_png(32)[:60]
    deep_json = b"[" * 100_000 + b"]" * 100_000
    idx_liar = bytes([0, 0, 8, 3]) + struct.pack(">III", 60000, 28, 28) + bytes(100)
    latin1 = "text,label\ncafé crème,pos\nthé,neg\n".encode("latin-1")
    broken_multipart = {"content-type": "multipart/form-data; boundary=x"}
    return [
        upload(
            "body over the upload limit",
            413,
            "over the limit",
            "big.zip",
            bytes(max_upload_bytes + 1),
        ),
        Hostile("not multipart", 415, "multipart", json={"file": "x"}),
        upload(
            "binary data, no known format",
            415,
            "none of the accepted",
            "blob",
            bytes(range(256)) * 8,
        ),
        upload(
            "zip bomb: one entry 1000x its size",
            422,
            "times; the limit is",
            "bomb.zip",
            ratio_bomb(),
        ),
        upload(
            "zip bomb: declared total over the cap",
            422,
            "the zip expands to",
            "big.zip",
            declared_size_bomb(max_decoded_bytes),
        ),
        upload(
            "zip entry inflating past its declared size",
            422,
            "cannot be read",
            "liar.zip",
            lying_entry_zip(),
        ),
        upload(
            "zip path traversal '../'",
            422,
            "unsafe path",
            "t.zip",
            with_class_b({"../../etc/a/x.png": valid_png()}),
        ),
        upload(
            "zip absolute path",
            422,
            "unsafe path",
            "t.zip",
            with_class_b({"/etc/a/x.png": valid_png()}),
        ),
        upload("zip symbolic link", 422, "symbolic link", "t.zip", symlink_zip()),
        upload("zip encrypted entry", 422, "encrypted", "t.zip", encrypted_flag_zip()),
        upload(
            "image bomb: 60000x60000 header",
            422,
            "pixels",
            "t.zip",
            with_class_b({"a/huge.png": png_header(60000, 60000)}),
        ),
        upload(
            "pixel bomb: blank PNGs decoding past the cap",
            422,
            "decoded bytes",
            "t.zip",
            pixel_bomb(max_decoded_bytes),
        ),
        upload(
            "truncated PNG",
            422,
            "not a decodable image",
            "t.zip",
            with_class_b({"a/cut.png": truncated_png}),
        ),
        upload(
            "corrupt JPEG",
            422,
            "not a decodable image",
            "t.zip",
            with_class_b({"a/bad.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4}),
        ),
        upload(
            "gzip bomb of zeros named .csv",
            422,
            "line 1: over 1000000 characters",
            "bomb.csv",
            gzip_bomb(max_decoded_bytes),
        ),
        upload(
            "gzip bomb of newlines named .csv",
            422,
            "over 1000 blank lines",
            "bomb.csv",
            gzip_bomb(max_decoded_bytes, b"\n" * (16 * MiB)),
        ),
        upload(
            "gzip bomb of valid rows named .csv",
            422,
            "decodes to more than",
            "bomb.csv",
            gzip_rows_bomb(max_decoded_bytes),
        ),
        upload(
            "CSV row of 2000 columns across quoted newlines",
            422,
            "over 1000 columns",
            "t.csv",
            csv("text,label", "a,pos", ",".join(['"x\ny"'] * 2000) + ",neg"),
        ),
        upload(
            "IDX header claiming 60000x28x28", 422, "truncated", "train-images-idx3-ubyte", idx_liar
        ),
        upload(
            "IDX resized to 9999x9999",
            422,
            "TRAINSERVE_MAX_RESIZE_SIDE",
            "train-images-idx3-ubyte",
            idx_liar,
            resize="9999x9999",
        ),
        upload("non-UTF-8 text (latin-1)", 422, "not UTF-8", "t.csv", latin1),
        upload(
            "NUL bytes in a CSV",
            422,
            "NUL",
            "t.csv",
            csv("text,label", "hello\0there,pos", "x,neg"),
        ),
        upload(
            "CSV with 100000 columns",
            422,
            "over 1000 columns",
            "wide.csv",
            (",".join(["c"] * 100_000) + "\n").encode(),
        ),
        upload(
            "CSV field of 200000 characters",
            422,
            "field larger than field limit",
            "t.csv",
            csv("text,label", f"{'a' * 200_000},pos", "b,neg"),
        ),
        upload("empty label", 422, "not 0", "t.csv", csv("text,label", *two_rows, "orphan,")),
        upload(
            "label of 5000 characters",
            422,
            "not 5000",
            "t.csv",
            csv("text,label", *two_rows, f"x,{'L' * 5000}"),
        ),
        upload(
            "label with control characters",
            422,
            "control characters",
            "t.csv",
            csv("text,label", *two_rows, "x,a\x07b"),
        ),
        upload(
            "10001 classes",
            422,
            "10001 classes",
            "t.csv",
            csv("text,label", *(f"t{i},c{i}" for i in range(10_001))),
        ),
        upload(
            "JSONL nested 100000 deep",
            422,
            "nested too deeply",
            "t.jsonl",
            b'{"text": ' + deep_json + b', "label": "a"}\n',
        ),
        upload(
            "JSONL integer of 5000 digits",
            422,
            "not valid JSON",
            "t.jsonl",
            b'{"text": "a", "label": 1' + b"0" * 5000 + b"}\n",
        ),
        upload(
            "dataset name with NUL",
            422,
            "name",
            "t.csv",
            csv("text,label", *two_rows),
            name="evil\0name",
        ),
        Hostile(
            "malformed multipart body",
            400,
            "Invalid multipart",
            content=b"--x\r\nnot a part",
            headers=broken_multipart,
        ),
        Hostile(
            "/predict: image header of 60000x60000",
            422,
            "pixels",
            "/predict",
            files=[("file", ("x.png", png_header(60000, 60000)))],
        ),
        Hostile(
            "/predict: truncated PNG",
            422,
            "not a decodable image",
            "/predict",
            files=[("file", ("x.png", truncated_png))],
        ),
        Hostile(
            "/predict: JSON nested 100000 deep",
            422,
            "recursion limit",
            "/predict",
            content=b'{"text": ' + deep_json + b"}",
            headers={"content-type": "application/json"},
        ),
        Hostile("/predict: 2000 texts", 422, "texts", "/predict", json={"texts": ["a"] * 2000}),
        Hostile(
            "/predict: text of 200000 characters",
            422,
            "text",
            "/predict",
            json={"text": "a" * 200_000},
        ),
    ]

"""A lean multipart/form-data reader for /predict, whose body is small and read whole.

Starlette's form parser streams into spooled temporary files, which is right for
uploads of datasets but cost more than the network itself for a 32x32 PNG.
"""

import functools
import re

# One `; name=value` parameter of a header value; the value a token or a quoted string.
PARAMETER = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
QUOTED_PAIR = re.compile(rb"\\(.)")
REMEMBERED_LENGTH = 200


class MultipartError(ValueError):
    pass


class TooManyParts(MultipartError):
    pass


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[tuple[str, bytes]]:
    """(field name, bytes) for each part, in order. Raises MultipartError, TooManyParts
    (without splitting the body further) past max_parts."""
    boundary = parameters(content_type.encode("latin-1")).get(b"boundary")
    if not boundary:
        raise MultipartError("multipart/form-data without a boundary")
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("multipart body without its boundary")
    # max_parts and the closing boundary's segment, and one more to tell there are too many
    segments = body[start + len(delimiter) :].split(b"\r\n" + delimiter, max_parts + 1)
    if len(segments) > max_parts + 1:
        raise TooManyParts(f"more than {max_parts} multipart fields")
    if not segments[-1].startswith(b"--"):
        raise MultipartError("multipart body cut short: no closing boundary")
    return [_part(segment) for segment in segments[:-1]]


def parameters(value: bytes) -> dict[bytes, bytes]:
    """The parameters of a header value (`form-data; name="file"` gives {b"name": b"file"}):
    names in lower case, quoted values unquoted. Do not change the dict: short values are
    remembered, as a client sends the same few again and again (parsing them each time
    was a sixth of the event loop's time per image request)."""
    return _remembered(value) if len(value) <= REMEMBERED_LENGTH else _parameters(value)


@functools.lru_cache(maxsize=256)
def _remembered(value: bytes) -> dict[bytes, bytes]:
    return _parameters(value)


def _parameters(value: bytes) -> dict[bytes, bytes]:
    params: dict[bytes, bytes] = {}
    for name, raw in PARAMETER.findall(value):
        raw = raw.strip()
        if raw.startswith(b'"') and raw.endswith(b'"') and len(raw) > 1:
            raw = QUOTED_PAIR.sub(rb"\1", raw[1:-1])
        params.setdefault(name.lower(), raw)
    return params


def _part(segment: bytes) -> tuple[str, bytes]:
    head, separator, data = segment.partition(b"\r\n\r\n")
    if not separator:
        raise MultipartError("a multipart part without its blank line after the headers")
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            params = parameters(value)
            if b"name" in params:
                return params[b"name"].decode("utf-8", "replace"), data
    raise MultipartError("a multipart part without a field name")

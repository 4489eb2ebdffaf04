"""A lean multipart/form-data reader for /predict, whose body is small and read whole.

Starlette's form parser streams into spooled temporary files, which is right for
uploads of datasets but cost more than the network itself for a 32x32 PNG.
"""

from python_multipart.multipart import parse_options_header

MAX_PARTS = 1100


class MultipartError(ValueError):
    pass


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(field name, bytes) for each part, in order. Raises MultipartError."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("multipart/form-data without a boundary")
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("multipart body without its boundary")
    segments = body[start + len(delimiter) :].split(b"\r\n" + delimiter)
    if not segments[-1].startswith(b"--"):
        raise MultipartError("multipart body cut short: no closing boundary")
    if len(segments) > MAX_PARTS:
        raise MultipartError(f"more than {MAX_PARTS - 1} multipart fields")
    return [_part(segment) for segment in segments[:-1]]


def _part(segment: bytes) -> tuple[str, bytes]:
    head, separator, data = segment.partition(b"\r\n\r\n")
    if not separator:
        raise MultipartError("a multipart part without its blank line after the headers")
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            _, params = parse_options_header(value.strip())
            if b"name" in params:
                return params[b"name"].decode("utf-8", "replace"), data
    raise MultipartError("a multipart part without a field name")

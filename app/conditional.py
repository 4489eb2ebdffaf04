"""Conditional requests (RFC 9110 section 13): a 304 for a client whose copy is current."""

from fastapi import Request, Response


def not_modified(request: Request, etag: str) -> Response | None:
    """304 when If-None-Match names the ETag (or is `*`), compared weakly (RFC 9110 13.1.2):
    the client's copy is current."""
    asked = request.headers.get("if-none-match")
    if asked is None:
        return None
    tags = {tag.strip().removeprefix("W/") for tag in asked.split(",")}
    if "*" in tags or etag in tags:
        return Response(status_code=304, headers={"ETag": etag})
    return None

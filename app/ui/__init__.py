"""The dashboard: static pages under /ui that call the public API with the user's own key.

The pages hold no data, so they are served without a key. The browser keeps the key in
sessionStorage and sends it as `Authorization: Bearer` on every fetch, the event stream
included (read with fetch, not EventSource, which cannot send the header): nothing the
browser sends by itself authenticates, so there is no cookie to forge across sites and no
CSRF token to check, and the key never goes into a URL.

The page's files (scripts, styles, uPlot) live under /ui/assets/<version>/, the version a
hash of all of them: a release with other files has other URLs, so each file is cached for
good and a load asks the server for the page alone (it was eight revalidations, 304s behind
each other on one busy server). Only /ui/ itself is revalidated on each load, and names
the current version.
"""

import hashlib
from functools import cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from app.conditional import not_modified

STATIC = Path(__file__).parent / "static"
ASSETS = "assets"  # index.html names its files as assets/<path under static>
# A key in sessionStorage is as safe as the pages are from injected script: only the
# pages' own files may run, no inline script, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; img-src 'self' blob: data:; "
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page: revalidated on each load (a 304 by ETag), so an upgrade's pages are seen at once.
PAGE_HEADERS = SECURITY_HEADERS | {"Cache-Control": "no-cache"}
# Its files: their URL changes with their content.
ASSET_HEADERS = SECURITY_HEADERS | {"Cache-Control": "public, max-age=31536000, immutable"}


@cache
def assets_version() -> str:
    """A hash of every file the pages load, and of their paths."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@cache
def index_page() -> bytes:
    """index.html with its files' URLs at the current version."""
    html = (STATIC / "index.html").read_text()
    return html.replace(f'="{ASSETS}/', f'="{ASSETS}/{assets_version()}/').encode()


class DashboardFiles(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(ASSET_HEADERS)
        return response


def _to_dashboard() -> RedirectResponse:
    return RedirectResponse("/ui/")


def _page(request: Request) -> Response:
    etag = f'"{assets_version()}"'
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        unchanged.headers.update(PAGE_HEADERS)
        return unchanged
    return HTMLResponse(index_page(), headers=PAGE_HEADERS | {"ETag": etag})


def mount_dashboard(app: FastAPI) -> None:
    """/ui/ serves the page, /ui/assets/<version>/ its files; / and /ui redirect to /ui/.
    A file at another version (a page loaded before an upgrade) is a 404: reloading the page
    gets the files that go with each other."""
    for path in ("/", "/ui"):
        app.add_api_route(path, _to_dashboard, include_in_schema=False)
    app.add_api_route("/ui/", _page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(f"/ui/{ASSETS}/{assets_version()}", DashboardFiles(directory=STATIC), name="ui")

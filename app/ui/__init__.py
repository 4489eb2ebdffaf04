"""The dashboard: static pages under /ui that call the public API with the user's own key.

The pages hold no data, so they are served without a key. The browser keeps the key in
sessionStorage and sends it as `Authorization: Bearer` on every fetch, the event stream
included (read with fetch, not EventSource, which cannot send the header): nothing the
browser sends by itself authenticates, so there is no cookie to forge across sites and no
CSRF token to check, and the key never goes into a URL.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
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
    # Revalidated on each load (a 304 by ETag): an upgrade's pages are seen at once.
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        return response


def _to_dashboard() -> RedirectResponse:
    return RedirectResponse("/ui/")


def mount_dashboard(app: FastAPI) -> None:
    """/ui serves the pages (index.html at /ui/); / redirects there."""
    app.mount("/ui", DashboardFiles(directory=STATIC, html=True), name="ui")
    app.add_api_route("/", _to_dashboard, include_in_schema=False)

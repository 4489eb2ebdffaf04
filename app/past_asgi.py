"""POST /predict answered past ASGI, inside uvicorn's HTTP protocol, where that is safe.

    uvicorn app.main:app --http app.past_asgi:PredictProtocol

On the uvicorn release it was written for (LANE_UVICORN, pyproject.toml's floor),
`PredictProtocol` is app/past_asgi_uvicorn.py's subclass of uvicorn's httptools protocol,
which answers a plain prediction from the parser's callbacks, skipping the ASGI layer
(bench/serving.py compares it with PredictPastRouter on plain uvicorn and on Granian, with
the access log on). It reaches into uvicorn's private classes, so on any other
release, or where they cannot be imported, `PredictProtocol` is uvicorn's stock protocol
and a warning says so: every request then goes through the app, answered the same, slower.
"""

import importlib.metadata
import logging

from uvicorn.protocols.http.auto import AutoHTTPProtocol  # what `--http auto` serves

log = logging.getLogger("trainserve.past_asgi")
LANE_UVICORN = "0.54"  # the release whose private protocol the lane extends


def protocol_for(uvicorn_version: str) -> type:
    """The lane's protocol on LANE_UVICORN.x, else uvicorn's stock one, with a warning."""
    if uvicorn_version.split(".")[:2] != LANE_UVICORN.split("."):
        _warn(f"uvicorn {uvicorn_version} is not the {LANE_UVICORN}.x the lane is written for")
        return AutoHTTPProtocol
    try:
        from app.past_asgi_uvicorn import LaneProtocol
    except ImportError as exc:  # httptools missing, or uvicorn's internals moved
        _warn(f"the lane cannot use uvicorn's protocol: {exc}")
        return AutoHTTPProtocol
    return LaneProtocol


def _warn(why: str) -> None:
    log.warning(
        "%s; POST /predict is served through uvicorn's stock protocol and the app "
        "(the same answers, fewer a second)",
        why,
    )


PredictProtocol = protocol_for(importlib.metadata.version("uvicorn"))

"""The docs against the code: every setting and every route documented, every link alive.

No services: the app is built, not started, and its routes are read from its OpenAPI
document and from the routes FastAPI adds outside it (/docs, /redoc, /openapi.json).
"""

import re
from functools import cache
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined
from starlette.routing import Route

from app.config import Settings
from app.main import create_app

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs"
SETTINGS_DOC = DOCS / "settings.md"
API_DOC = DOCS / "api.md"
PAGES = [PROJECT / "README.md", PROJECT / "ARCHITECTURE.md", *sorted(DOCS.glob("*.md"))]

# The part of settings.md after this heading lists variables that are not Settings fields.
NOT_SETTINGS = "## Read by others"
SETTING_ROW = re.compile(r"^\| `(TRAINSERVE_[A-Z0-9_]+)` \|(.*)$", re.M)
DOCUMENTED_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)[^`]*`")
FENCED = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)


def prose(path: Path) -> str:
    """A page without its fenced code blocks: `# comment` lines there are not headings."""
    return FENCED.sub("", path.read_text())


def documented_settings() -> dict[str, str]:
    """Each TRAINSERVE_ variable of settings.md's tables, with the rest of its row."""
    text = SETTINGS_DOC.read_text().split(NOT_SETTINGS)[0]
    return dict(SETTING_ROW.findall(text))


def default_text(default) -> str | None:
    """How a default is written in the docs' tables; None for a field without one."""
    if default is None or default is PydanticUndefined:
        return None
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


@cache  # building the app imports torch and the routes: once per session
def served_routes() -> set[tuple[str, str]]:
    app = create_app()
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    # FastAPI's own pages, outside the OpenAPI document.
    routes |= {
        ("GET", route.path)
        for route in app.router.routes
        if isinstance(route, Route) and not route.include_in_schema
    }
    return routes


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(prose(path))}


def relative_links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for target in LINK.findall(prose(page))
        if not re.match(r"^[a-z]+:", target)  # http:, https:, mailto:
    ]


def test_every_setting_is_documented_with_its_default():
    documented = documented_settings()
    problems = []
    for name, field in Settings.model_fields.items():
        variable = f"TRAINSERVE_{name.upper()}"
        default = default_text(field.default)
        if variable not in documented:
            problems.append(f"{variable} is missing")
        elif default is not None and f"`{default}`" not in documented[variable]:
            problems.append(f"{variable}: its default `{default}` is not in its row")
    assert not problems, f"docs/settings.md: {problems}"


def test_settings_doc_names_no_setting_that_is_gone():
    fields = {f"TRAINSERVE_{name.upper()}" for name in Settings.model_fields}
    gone = sorted(set(documented_settings()) - fields)
    assert not gone, f"docs/settings.md documents settings that do not exist: {gone}"


def test_every_served_route_is_documented():
    text = API_DOC.read_text()
    missing = sorted(f"{m} {p}" for m, p in served_routes() if f"`{m} {p}`" not in text)
    assert not missing, f"docs/api.md does not name these routes: {missing}"


def test_api_doc_names_no_route_that_is_not_served():
    documented = set(DOCUMENTED_ROUTE.findall(API_DOC.read_text()))
    assert documented, "docs/api.md names no route at all"
    stale = sorted(f"{m} {p}" for m, p in documented - served_routes())
    assert not stale, f"docs/api.md names routes the app does not serve: {stale}"


@pytest.mark.parametrize(
    ("page", "target"),
    relative_links(),
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_relative_link_leads_to_a_file_and_heading(page: Path, target: str):
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    assert destination.exists(), f"{page.name} links to {target}, which does not exist"
    if anchor:
        assert anchor in anchors(destination), f"{page.name}: no heading for #{anchor}"


def test_links_are_found():
    # The link test above passes vacuously if the pattern finds nothing.
    assert len(relative_links()) > 10

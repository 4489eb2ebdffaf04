"""The dashboard's files as the API serves them, and as the package ships them."""

import tomllib
from fnmatch import fnmatch

from app.ui import STATIC
from tests.conftest import PROJECT


def test_the_root_redirects_to_the_dashboard(client):
    answer = client.get("/", follow_redirects=False, headers={"Authorization": ""})
    assert answer.status_code == 307 and answer.headers["location"] == "/ui/"


def test_the_pages_need_no_key_and_may_run_only_their_own_scripts(client):
    anonymous = {"Authorization": ""}  # the pages hold no data: signing in is theirs
    page = client.get("/ui/", headers=anonymous)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    script = client.get("/ui/js/main.js", headers=anonymous)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/ui/js/nope.js", headers=anonymous).status_code == 404
    assert client.get("/jobs", headers=anonymous).status_code == 401  # the data does


def test_the_package_ships_every_file_of_the_dashboard():
    """pyproject's package data covers each file under app/ui/static: a wheel (the
    Dockerfile's `pip install .`) would otherwise serve a page without it."""
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app.ui"]
    files = [path.relative_to(STATIC.parent).as_posix() for path in STATIC.rglob("*")]
    shipped = [f for f in files if any(fnmatch(f, pattern) for pattern in patterns)]
    left_out = [f for f in files if (STATIC.parent / f).is_file() and f not in shipped]
    assert not left_out and "static/index.html" in shipped, left_out

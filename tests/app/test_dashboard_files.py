"""The dashboard's files as the API serves them, and as the package ships them."""

import re
import shutil
import tomllib
from fnmatch import fnmatch

from app.ui import STATIC, assets_version
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
    assert client.get("/jobs", headers=anonymous).status_code == 401  # the data does


def test_the_pages_files_are_cached_for_good_under_their_version(client):
    """The page names its files at the version of their content; they never change there,
    so a load revalidates the page alone."""
    anonymous = {"Authorization": ""}
    page = client.get("/ui/", headers=anonymous)
    assert page.headers["cache-control"] == "no-cache"
    names = re.findall(r'(?:href|src)="(assets/[^"]+)"', page.text)
    assert "assets/" + assets_version() + "/js/main.js" in names and len(names) == 7, names
    for name in names:
        file = client.get(f"/ui/{name}", headers=anonymous)
        assert file.status_code == 200, name
        assert file.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert file.headers["x-content-type-options"] == "nosniff"
    script = client.get(f"/ui/assets/{assets_version()}/js/main.js", headers=anonymous)
    assert "javascript" in script.headers["content-type"]
    assert 'import("./runs.js")' in script.text  # relative: at the same version
    etag = page.headers["etag"]
    again = client.get("/ui/", headers=anonymous | {"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
    for stale in ("/ui/js/main.js", "/ui/assets/0123456789abcdef/js/main.js"):
        assert client.get(stale, headers=anonymous).status_code == 404, stale


def test_the_version_changes_with_any_file(tmp_path, monkeypatch):
    copy = tmp_path / "static"
    shutil.copytree(STATIC, copy)
    monkeypatch.setattr("app.ui.STATIC", copy)
    assets_version.cache_clear()
    try:
        before = assets_version()
        (copy / "css" / "app.css").write_text((copy / "css" / "app.css").read_text() + " ")
        assets_version.cache_clear()
        assert assets_version() != before
    finally:
        assets_version.cache_clear()


def test_the_package_ships_every_file_of_the_dashboard():
    """pyproject's package data covers each file under app/ui/static: a wheel (the
    Dockerfile's `pip install .`) would otherwise serve a page without it."""
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app.ui"]
    files = [path.relative_to(STATIC.parent).as_posix() for path in STATIC.rglob("*")]
    shipped = [f for f in files if any(fnmatch(f, pattern) for pattern in patterns)]
    left_out = [f for f in files if (STATIC.parent / f).is_file() and f not in shipped]
    assert not left_out and "static/index.html" in shipped, left_out

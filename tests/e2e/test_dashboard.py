"""The dashboard in a real browser (Debian's chromium, driven by playwright-python) against
the real stack: API, worker, PostgreSQL and Redis. Every page is opened signed in with a
key, and fails its test on any JavaScript error or console error. Screenshots of each
page go to var/screenshots/."""

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.conftest import ADMIN_KEY, PROJECT, bearer, png_bytes
from tests.e2e.conftest import SENTIMENT_JOB, mnist_upload, wait_for_job
from tests.utils.waiting import wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = PROJECT / "var" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
DIGITS = "ui-digits"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"the dashboard's tests need chromium at {CHROMIUM}: apt-get install chromium")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # Playwright's own browser download cannot run offline: Debian's chromium instead.
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


# How chromium reports a response of 4xx or 5xx on its console, a fetch's included.
REFUSED = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class Console:
    """What a tab wrote to its console: errors, and the HTTP refusals the browser reports
    there, which a test may expect (a wrong key's 401)."""

    errors: list[str] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)

    def heard(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if refused := REFUSED.match(message.text):
            self.refused.append(int(refused[1]))
        else:
            self.errors.append(f"{message.text} at {message.location['url']}")

    def check(self) -> None:
        assert not self.errors, "the dashboard logged errors:\n" + "\n".join(self.errors)
        unexpected = [status for status in self.refused if status not in self.expected]
        assert not unexpected, f"the API refused the dashboard's requests: {unexpected}"


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage: signed out) that fails the test on any
    JavaScript error, console error or refused request it did not expect."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.on("console", console.heard)
    tab.on("pageerror", lambda error: console.errors.append(f"uncaught: {error}"))
    yield tab
    context.close()
    console.check()


def sign_in(page: Page, url: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{url}/")
    page.fill("#key", key)
    page.click("button[type=submit]")


def open_page(page: Page, url: str, fragment: str) -> None:
    """Signed in, then the page the fragment names (#/run?id=…), as a shared link opens."""
    sign_in(page, url)
    page.wait_for_selector("table.runs")
    page.goto(f"{url}/ui/#/{fragment}")


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.fixture(scope="module")
def digits_dataset(api, mnist) -> str:
    uploaded = api.post("/datasets", files=mnist_upload(mnist, 3000, 300), data={"name": "ui"})
    assert uploaded.status_code in (200, 201), uploaded.text
    return uploaded.json()["id"]


def digits_job(dataset_id: str, epochs: int, seed: int = 0) -> dict:
    return {
        "task": "image_classification",
        "dataset_id": dataset_id,
        "name": DIGITS,
        "seed": seed,
        "model": {"arch": "tutorial_cnn"},
        "hyperparameters": {"epochs": epochs, "batch_size": 16, "optimizer": "adam", "lr": 0.002},
        "validation": {"source": "test_split"},
    }


@pytest.fixture(scope="module")
def versions(api, stack, digits_dataset) -> list[dict]:
    """Two versions of ui-digits, trained by the worker, oldest first."""
    trained = []
    for seed in (1, 2):
        created = api.post("/jobs", json=digits_job(digits_dataset, epochs=1, seed=seed)).json()
        job = wait_for_job(api, stack, created["id"])
        assert job["status"] == "succeeded", job["error"]
        trained.append(api.get(f"/models/{job['model_id']}").json())
    return trained


def test_without_a_valid_key_the_dashboard_shows_only_the_sign_in_page(page, console, stack):
    console.expected.add(401)
    page.goto(f"{stack.url}/")
    assert page.url == f"{stack.url}/ui/"
    page.wait_for_selector("form.sign-in")
    screenshot(page, "sign-in")
    page.fill("#key", "ts_not-a-key")
    page.click("button[type=submit]")
    page.wait_for_selector("form.sign-in .error")
    assert "unknown or revoked" in page.inner_text("form.sign-in .error")
    assert page.locator("table").count() == 0 and page.is_hidden("#nav")
    page.goto(f"{stack.url}/ui/#/run?id=0123456789abcdef0123456789abcdef")  # a shared link
    page.wait_for_selector("form.sign-in")
    assert page.evaluate("sessionStorage.length") == 0
    assert console.refused == [401]  # the key was tried once, and nothing was fetched after


def test_a_running_jobs_curve_grows_keeps_its_zoom_and_is_cancelled(
    page, api, stack, digits_dataset
):
    sign_in(page, stack.url)
    page.wait_for_selector("table.runs")
    job = api.post("/jobs", json=digits_job(digits_dataset, epochs=30)).json()
    page.wait_for_selector(f"tr[data-job='{job['id']}']")  # listed with no reload
    wait_until(lambda: api.get(f"/jobs/{job['id']}").json()["status"] == "running", timeout=120)
    page.wait_for_selector(f"tr[data-job='{job['id']}'][data-status=running]")
    screenshot(page, "runs")

    page.click(f"tr[data-job='{job['id']}'] td.col-name a")
    chart = page.locator("#chart-loss")
    first = wait_until(lambda: points(page), timeout=60, what="the loss curve's first points")
    second = wait_until(lambda: (n := points(page)) > first and n, timeout=30, what="more points")
    wait_until(lambda: points(page) > second, timeout=30, what="still more points")
    # The worker's CPU and memory, refetched while the run is live; no GPU chart on a CPU.
    memory = wait_until(lambda: points(page, "memory-mib"), timeout=30, what="memory points")
    wait_until(lambda: points(page, "memory-mib") > memory, timeout=30, what="more memory points")
    assert points(page, "cpu-percent") > 0 and page.locator("#chart-gpu-percent").count() == 0

    over = page.locator("#chart-loss .u-over").bounding_box()
    assert over is not None
    page.mouse.move(over["x"] + over["width"] * 0.2, over["y"] + over["height"] / 2)
    page.mouse.down()
    page.mouse.move(over["x"] + over["width"] * 0.6, over["y"] + over["height"] / 2, steps=5)
    page.mouse.up()
    zoom = wait_until(lambda: chart.get_attribute("data-zoomed") == "true" and x_range(page))
    zoomed_at = points(page)
    wait_until(lambda: points(page) > zoomed_at, timeout=30, what="points after the zoom")
    assert x_range(page) == zoom, "a live update moved the zoom"
    assert "zoom=" in page.url  # the view is in the link
    screenshot(page, "run")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("#run-facts[data-status=cancelled]", timeout=60_000)
    page.wait_for_selector(".timeline li[data-status=cancelled]", timeout=30_000)
    shown = page.locator(".timeline li[data-status]").evaluate_all(
        "items => items.map(i => i.dataset.status)"
    )
    assert shown[:2] == ["queued", "running"] and shown[-1] == "cancelled", shown
    assert api.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"


def points(page: Page, chart: str = "loss") -> int:
    return int(page.get_attribute(f"#chart-{chart}", "data-points") or 0)


def x_range(page: Page) -> tuple[str | None, str | None]:
    chart = page.locator("#chart-loss")
    return chart.get_attribute("data-x-min"), chart.get_attribute("data-x-max")


def test_upload_a_dataset_with_its_progress_and_the_servers_error(
    page, console, api, stack, tmp_path
):
    console.expected.add(415)
    open_page(page, stack.url, "datasets")
    table = tmp_path / "reviews.csv"
    table.write_text(
        "text,label\n"
        + "".join(f"great film {i},positive\nawful film {i},negative\n" for i in range(20))
    )
    page.fill("input[name=name]", "ui-reviews")
    page.set_input_files("#dataset-drop input[type=file]", table)
    page.wait_for_selector("#upload-outcome a")
    assert page.get_attribute("#upload-progress", "value") == "1"
    stored = [d for d in api.get("/datasets").json()["items"] if d["name"] == "ui-reviews"]
    assert len(stored) == 1 and stored[0]["counts"]["train"] == {"negative": 20, "positive": 20}
    page.wait_for_selector("#dataset-detail section[data-split=train] .bar")
    positive = page.locator("#dataset-examples section[data-class=positive] .example-text")
    assert positive.count() == 6 and "great film" in positive.first.inner_text()
    checks = page.locator("#data-checks li").all_inner_texts()
    assert "train: 0 exact duplicates" in checks, checks
    screenshot(page, "datasets")

    notes = tmp_path / "notes.txt"
    notes.write_text("not data")
    page.set_input_files("#dataset-drop input[type=file]", notes)
    refused = page.wait_for_selector("#upload-outcome .error").inner_text()
    answer = api.post("/datasets", files={"file": ("notes.txt", b"not data")})
    assert answer.status_code == 415 and refused == answer.json()["detail"]


def test_predict_an_image_in_try_it(page, stack, versions, mnist, tmp_path):
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(mnist["t10k-images-idx3"][0]))  # a 7
    open_page(page, stack.url, f"try?model={DIGITS}")
    page.set_input_files("#image-drop input[type=file]", digit)
    page.wait_for_selector("#top-k .bar")
    answer = page.locator("#answer")
    assert answer.get_attribute("data-label") == "7"
    assert answer.get_attribute("data-version") == versions[-1]["id"]  # latest answers
    assert page.locator("#top-k .label").count() == 3
    page.click("#explain")
    overlay = page.wait_for_selector("#explanation img.attribution")
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert page.locator("#explanation h3").inner_text().startswith("Why 7")
    screenshot(page, "try")


def test_move_and_roll_back_an_alias(page, api, stack, versions):
    first, second = (version["id"] for version in versions)
    open_page(page, stack.url, f"models?name={DIGITS}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.fill("tr.new-alias input[name=alias]", "production")
    page.select_option("tr.new-alias select", first)
    page.click("tr.new-alias button")
    wait_until(lambda: production(api) == first, what="production on the first version")

    row = page.locator("tr[data-alias=production]")
    row.locator("select").select_option(second)
    row.locator("button.move").click()
    wait_until(lambda: production(api) == second, what="production on the second version")
    page.wait_for_selector(f"tr[data-alias=production] td.points-at[title='{second}']")
    page.locator("tr[data-alias=production] button.rollback").click()
    wait_until(lambda: production(api) == first, what="production rolled back")
    page.wait_for_selector(f"tr[data-alias=production] td.points-at[title='{first}']")
    moves = api.get(f"/models/{DIGITS}/aliases/production/history").json()
    assert [move["action"] for move in moves] == ["rolled_back", "moved", "moved"]
    assert page.locator("table.history[data-alias=production] tbody tr").count() == 3
    screenshot(page, "models")


@pytest.fixture(scope="module")
def sweep(api, stack, sentiment_csv) -> dict:
    """A sweep of three text trials, run to its end by the worker."""
    dataset = api.post("/datasets", files={"file": ("ui.csv", sentiment_csv)}).json()
    body = {
        "base": SENTIMENT_JOB | {"dataset_id": dataset["id"], "name": "ui-sweep"},
        "space": {
            "hyperparameters.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
            "model.embedding_dim": {"type": "categorical", "choices": [16, 32]},
        },
        "max_trials": 3,
    }
    created = api.post("/sweeps", json=body)
    assert created.status_code == 201, created.text

    def ended() -> dict | None:
        found = api.get(f"/sweeps/{created.json()['id']}").json()
        return found if found["status"] != "running" else None

    return wait_until(ended, timeout=300, what=lambda: f"the sweep to end:\n{stack.logs()}")


def test_a_sweeps_page_shows_its_trials_and_the_objective_per_field(page, stack, sweep):
    assert sweep["status"] == "succeeded", sweep
    open_page(page, stack.url, "sweeps")
    page.click(f"#sweeps tr[data-sweep='{sweep['id']}'] a")
    page.wait_for_selector("#trials tbody tr[data-trial='2']")
    assert page.locator("#trials tbody tr").count() == 3
    charts = page.locator("#sweep-charts svg.sweep-chart")
    assert charts.count() == 3  # one per searched field, and the best so far
    assert charts.nth(0).locator("circle").count() == 3  # a point per trial
    best = sweep["best_trial"]["number"]
    assert "★" in page.locator(f"#trials tr[data-trial='{best}'] td").first.inner_text()
    screenshot(page, "sweep")


def test_the_run_and_model_pages_show_the_served_epochs_evaluation(page, stack, versions):
    """The confusion matrix as a heat map (a row per true class) and a bar per class."""
    newest = versions[-1]
    open_page(page, stack.url, f"run?id={newest['job_id']}")
    page.wait_for_selector("#confusion-matrix tbody tr")
    assert page.locator("#confusion-matrix tbody tr").count() == 10
    assert page.locator(".per-class .bar").count() == 10
    cells = page.locator("#confusion-matrix tbody td").all_inner_texts()
    assert sum(map(int, cells)) == newest["evaluation"]["examples"]
    page.goto(f"{stack.url}/ui/#/models?name={DIGITS}")
    page.wait_for_selector(".model-detail #confusion-matrix tbody tr")
    assert page.locator(".model-detail .per-class .bar").count() == 10


def production(api) -> str | None:
    aliases = api.get(f"/models/{DIGITS}/aliases").json()
    return next((a["version_id"] for a in aliases if a["alias"] == "production"), None)


def test_compare_overlays_runs_and_marks_their_differences(page, stack, versions):
    ids = ",".join(version["job_id"] for version in versions)
    open_page(page, stack.url, f"compare?ids={ids}")
    page.wait_for_selector("#chart-compare[data-points='1']")
    differing = page.locator("#compare-specs tr.differs td:first-child").all_inner_texts()
    assert differing == ["seed"]
    screenshot(page, "compare")


def test_keys_are_created_shown_once_and_revoked(page, stack):
    open_page(page, stack.url, "keys")
    page.select_option("select[name=scope]", "predict")
    page.fill("input[name=name]", "ui test")
    page.click("#create-key")
    token = page.wait_for_selector("#new-token .token").inner_text()
    with stack.client(token) as client:
        assert client.get("/jobs").status_code == 403  # a predict key
    screenshot(page, "keys")
    page.on("dialog", lambda dialog: dialog.accept())
    row = page.locator("#keys tr", has_text="ui test")
    row.locator("button").click()
    page.wait_for_selector("#keys tr:has-text('ui test') td:nth-child(7):empty")
    with stack.client(token) as client:
        assert client.get("/jobs").status_code == 401
    page.goto(f"{stack.url}/ui/#/runs")  # nothing shows a key twice
    assert token not in page.content()


def test_a_revoked_key_mid_session_returns_to_the_sign_in_page(page, console, api, stack):
    console.expected.add(401)
    key = api.post("/keys", json={"scope": "train", "name": "short-lived"}).json()
    sign_in(page, stack.url, key["key"])
    page.wait_for_selector("table.runs")
    assert api.post(f"/keys/{key['id']}/revoke").status_code == 200
    with stack.client(key["key"]) as client:  # once this process's key cache has heard
        wait_until(lambda: client.get("/jobs").status_code == 401, timeout=30)
    page.wait_for_selector("form.sign-in .error", timeout=30_000)  # the runs page's next poll
    assert page.locator("table").count() == 0 and page.is_hidden("#nav")


PHONE = {"width": 390, "height": 844}


def test_every_page_fits_a_phone_in_the_dark(browser, console, api, stack, versions, sweep):
    """At a phone's width, with the system's dark theme, no page is wider than the screen
    (wide tables scroll in their own box) and none logs an error."""
    context = browser.new_context(viewport=PHONE, color_scheme="dark")
    tab = context.new_page()
    tab.on("console", console.heard)
    tab.on("pageerror", lambda error: console.errors.append(f"uncaught: {error}"))
    open_page(tab, stack.url, "runs")
    background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"  # the dark theme's
    # Each row's sparkline: its job's loss, as GET /jobs/{id}/metrics buckets it.
    for version in versions:
        spark = f"tr[data-job='{version['job_id']}'] td.spark svg"
        loss = api.get(f"/jobs/{version['job_id']}/metrics", params={"max_points": 40}).json()
        drawn = tab.wait_for_selector(f"{spark}[data-points='{len(loss['points'])}'] polyline")
        assert drawn is not None and len(loss["points"]) > 1
    digits = api.get(f"/jobs/{versions[0]['job_id']}").json()["dataset_id"]
    fragments = {
        "runs": "table.runs tbody tr",
        f"run?id={versions[0]['job_id']}": "#chart-loss[data-points]",
        f"compare?ids={versions[0]['job_id']}": "#chart-compare[data-points]",
        f"models?name={DIGITS}": "#versions tbody tr",
        "try": "#image-drop",
        "datasets": "#datasets tbody tr",
        # the digits' thumbnails, fetched with the key
        f"datasets?id={digits}": "#dataset-examples section[data-class='7'] img[data-loaded=true]",
        "keys": "#keys tbody tr",
        f"sweeps?id={sweep['id']}": "#trials tbody tr",
    }
    for fragment, shown in fragments.items():
        tab.goto(f"{stack.url}/ui/#/{fragment}")
        tab.wait_for_selector(shown)
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"#/{fragment} is {width} px wide"
    context.close()
    console.check()


# The browser's own EventSource on a job's stream: it resolves once the source is closed
# for good (or after 20 s, to fail rather than hang).
FOLLOW_WITH_EVENTSOURCE = """(path) => new Promise((resolve) => {
  const source = new EventSource(path);
  let events = 0;
  for (const kind of ["status", "step", "epoch"]) source.addEventListener(kind, () => events++);
  const done = () => resolve({ events, state: source.readyState });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) done(); };
  setTimeout(done, 20000);
})"""


def test_an_eventsource_stops_once_a_finished_jobs_stream_has_ended(browser, stack, versions):
    """A browser's EventSource (the key in a header the context adds to every request: an
    EventSource cannot send one itself) reads a finished job's events, reconnects once with
    Last-Event-ID when the stream ends, is answered 204 and stops for good."""
    context = browser.new_context(extra_http_headers=bearer(ADMIN_KEY))
    tab = context.new_page()
    answers: list[int] = []
    tab.on("response", lambda r: answers.append(r.status) if r.url.endswith("/events") else None)
    tab.goto(f"{stack.url}/healthz")  # the API's origin
    followed = tab.evaluate(FOLLOW_WITH_EVENTSOURCE, f"/jobs/{versions[0]['job_id']}/events")
    tab.wait_for_timeout(5000)  # longer than EventSource's 3 s before a reconnect
    context.close()
    assert followed["state"] == 2 and followed["events"] > 0, followed  # 2: CLOSED
    assert answers == [200, 204]

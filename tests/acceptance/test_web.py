"""The web dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

With FLOWDECK_SCREENSHOTS=1 the tests also save screenshots into docs/images/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings

pytest.importorskip("playwright")
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = os.environ.get("FLOWDECK_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).parents[2]
IMAGES = ROOT / "docs" / "images"
SHOTS = os.environ.get("FLOWDECK_SCREENSHOTS") == "1"
SLEEPY = 'name: sleepy\nversion: "1"\ndescription: Sleep for a while.\nsteps:\n'
SLEEPY += '  nap:\n    run: [sleep, "30"]\n  after:\n    run: [echo, done]\n    needs: [nap]\n'
WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)",
)


def shot(page: Page, name: str) -> None:
    if SHOTS:
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=True)


# Each module gets a fresh server, so the users' names can be plain (they show in the
# screenshots).
@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("web"), stop_grace_s=1, login_max_failures_per_address=10**6
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


# Each violation of the pages' Content-Security-Policy, reported by the page itself.
REPORT_CSP = """document.addEventListener("securitypolicyviolation", (e) => console.error(
  "CSP violation: " + e.violatedDirective + " blocked " + e.blockedURI + " at " +
  e.sourceFile + ":" + e.lineNumber));"""


def watch_csp(context: BrowserContext, page: Page) -> list[str]:
    """The Content-Security-Policy violations of the context's pages, as they happen."""
    context.add_init_script(REPORT_CSP)
    seen: list[str] = []
    page.on(
        "console",
        lambda m: (
            seen.append(m.text)
            if "CSP violation" in m.text or "Content Security Policy" in m.text
            else None
        ),
    )
    return seen


@pytest.fixture
def page(browser: Browser, srv: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    p.on("dialog", lambda dialog: dialog.accept())  # the confirmation of control buttons
    violations = watch_csp(context, p)
    yield p
    context.close()
    assert violations == [], violations


def register(page: Page, name: str) -> None:
    page.goto("/register")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(STRONG)
    page.get_by_role("button", name="Register").click()
    page.wait_for_url("**/")


def sign_in_with_keyboard(page: Page, name: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").focus()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(STRONG)
    page.keyboard.press("Enter")
    page.wait_for_url("**/")


def upload_workflow(page: Page, path: Path) -> None:
    page.goto("/workflows")
    page.get_by_label(
        "Spec (.yaml, .json), CWL document (.cwl) or archive (.zip, .tar.gz)"
    ).set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/workflows?pushed=*")


def test_register_sign_in_upload_run_with_file_watch_live_and_download(
    page: Page, tmp_path: Path
) -> None:
    name = "alice"
    register(page, name)
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    shot(page, "sign-in")
    sign_in_with_keyboard(page, name)

    upload_workflow(page, ROOT / "examples" / "files" / "flowdeck.yaml")
    expect(page.get_by_role("cell", name=f"{name}/sort-lines@1.0", exact=True)).to_be_visible()
    shot(page, "workflows")
    page.get_by_role("link", name=f"New run of {name}/sort-lines@1.0").click()

    text = tmp_path / "fruit.txt"
    text.write_text("pear\napple\nfig\n")
    page.get_by_label("text (file), required").set_input_files(str(text))
    page.get_by_label("reverse").check()
    page.get_by_label("Tags").fill("browser")
    shot(page, "new-run")
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url("**/runs/run_*")
    run_id = page.url.rsplit("/", 1)[1]

    # No reload from here on: the page follows the run's event stream.
    expect(page.locator("#run-state")).to_have_text("succeeded")
    expect(page.locator('#dag .node[data-step="sort"]')).to_have_class("node state-succeeded")
    expect(page.locator('#dag .node[data-step="reverse"]')).to_have_class("node state-succeeded")
    expect(page.locator("#timeline")).to_contain_text("run.succeeded")
    expect(page.locator("#files")).to_contain_text("text: fruit.txt")
    expect(page.locator("#steps")).to_contain_text("stats")
    shot(page, "run")

    with page.expect_download() as info:
        page.get_by_role("link", name="sort.sorted").click()
    saved = tmp_path / "downloaded.txt"
    info.value.save_as(saved)
    assert saved.read_text() == "apple\nfig\npear\n"

    page.goto("/")
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row).to_contain_text("browser")


def test_pause_and_resume_from_the_buttons(page: Page, tmp_path: Path) -> None:
    register(page, "paula")
    spec = tmp_path / "sleepy.yaml"
    spec.write_text(SLEEPY)
    upload_workflow(page, spec)
    page.goto("/runs/new")
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url("**/runs/run_*")
    expect(page.locator("#run-state")).to_have_text("running")
    nap = page.locator('#dag .node[data-step="nap"]')
    expect(nap).to_have_class("node state-running")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#run-state")).to_have_text("paused")
    expect(nap).to_have_class("node state-paused")
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()
    shot(page, "run-paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#run-state")).to_have_text("running")
    expect(nap).to_have_class("node state-running")
    expect(page.locator("#timeline")).to_contain_text("run.paused")
    page.get_by_role("button", name="Kill").click()
    expect(page.locator("#run-state")).to_have_text("killed")


def test_runs_list_updates_live_and_other_users_see_nothing(
    page: Page, browser: Browser, srv: LiveServer
) -> None:
    name = "carol"
    register(page, name)
    with Client(srv.url) as sdk:
        sdk.login(name, STRONG)
        sdk.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
        page.goto("/")
        expect(page.locator("#live-status")).to_have_text("Live updates: on")
        run = sdk.create_run("chain@1.0", start=True, tags=["live"])
        # the new row appears and reaches succeeded without a reload
        expect(page.locator(f'tr[data-run="{run.id}"] .badge')).to_have_text("succeeded")
    shot(page, "runs")

    context = browser.new_context(base_url=srv.url, viewport={"width": 390, "height": 844})
    other = context.new_page()
    other.set_default_timeout(WAIT_MS)
    try:
        register(other, "dave")
        expect(other.locator("#runs")).to_contain_text("No runs yet")
        assert other.locator(f'tr[data-run="{run.id}"]').count() == 0
        response = other.goto(f"/runs/{run.id}")
        assert response is not None and response.status == 404
        expect(other.get_by_role("heading", name="Not found")).to_be_visible()
        response = other.goto("/admin")
        assert response is not None and response.status == 404
    finally:
        context.close()


def test_narrow_screen_has_no_page_wide_scrolling(browser: Browser, srv: LiveServer) -> None:
    """At 390 px wide, wide tables and the graph scroll inside their boxes, not the page."""
    context = browser.new_context(base_url=srv.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    violations = watch_csp(context, page)
    try:
        name = "erin"
        register(page, name)
        with Client(srv.url) as sdk:
            sdk.login(name, STRONG)
            sdk.push_workflow(ROOT / "examples" / "fanout" / "flowdeck.yaml")
            wf = sdk.workflows()[0]["ref"]
            run = sdk.create_run(wf, start=True)
            run.wait(timeout=60)
        for path in ("/", f"/runs/{run.id}", "/workflows", "/runs/new"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        page.goto(f"/runs/{run.id}")
        expect(page.locator("#run-state")).to_have_text("succeeded")
        shot(page, "run-mobile")
    finally:
        context.close()
    assert violations == [], violations

"""The dashboard for daily use in a real browser (Debian's Chromium driven by Playwright):
sign-in errors, the runs list (state counts, several states, dates, search, sort, pages in
the URL, progress and errors, cards on a phone), local times, the run page's details, a
step's log viewer, the new-run form's bounds and a failed start.  One server and one
browser for the module; FLOWDECK_SCREENSHOTS=1 saves screenshots."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.acceptance.browser_checks import ConsoleErrors, axe_violations
from tests.acceptance.test_web import CHROMIUM, ROOT, WAIT_MS, shot, watch_csp

# live updates on a loaded machine (two cores shared with other suites) can take longer
# than expect()'s default 5 s: wait as long as page actions do
expect.set_options(timeout=WAIT_MS)
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
USER = "dana"
FLAKY = """name: flaky
version: "1"
description: Says something on both streams, then fails (twice).
steps:
  talk:
    run: [sh, -c, 'echo "out of attempt"; echo "err of attempt" >&2; exit 3']
    retries: {count: 1, backoff: 0}
"""
TICKS = """name: ticks
version: "1"
description: Prints a line a second, then waits to be stopped.
steps:
  ticks:
    run: [sh, -c, 'for i in 1 2 3 4 5 6; do echo tick$i; sleep 1; done; sleep 60']
"""
RETRIED = """name: retried
version: "1"
steps:
  twice:
    run: [sh, -c, 'echo "attempt $FLOWDECK_ATTEMPT"; sleep 3; test "$FLOWDECK_ATTEMPT" = 2']
    retries: {count: 1, backoff: 0}
"""
BOUNDED = """name: bounded
version: "1"
inputs:
  n: {type: int, minimum: 1, maximum: 10, default: 3}
  label: {type: string, max_length: 20}
steps:
  say:
    run: [echo, "${{ inputs.label }}", "${{ inputs.n }}"]
"""


@dataclass
class Data:
    ok: list[str]  # succeeded chain runs, newest last
    failed: str  # a flaky run: failed after two attempts
    staged: list[str]  # staged chain runs tagged beta


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("web-daily"), stop_grace_s=1, login_max_failures_per_address=10**6
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


@pytest.fixture(scope="module")
def sdk(srv: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    folder = tmp_path_factory.mktemp("specs")
    with Client(srv.url) as client:
        client.register(USER, STRONG)
        client.login(USER, STRONG)
        client.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
        specs = (("flaky", FLAKY), ("ticks", TICKS), ("bounded", BOUNDED), ("retried", RETRIED))
        for name, text in specs:
            (folder / f"{name}.yaml").write_text(text)
            client.push_workflow(folder / f"{name}.yaml")
        yield client


@pytest.fixture(scope="module")
def data(sdk: Client) -> Data:
    ok = []
    for tag in ("alpha", "nightly"):
        run = sdk.create_run("chain@1.0", start=True, tags=[tag])
        run.wait(timeout=60)
        ok.append(run.id)
    flaky = sdk.create_run("flaky@1", start=True, tags=["Flaky-One"])
    flaky.wait(timeout=60)
    staged = [sdk.create_run("chain@1.0", tags=["beta"]).id for _ in range(3)]
    return Data(ok, flaky.id, staged)


@contextmanager
def browsing(
    browser: Browser,
    srv: LiveServer,
    width: int = 1280,
    refused: tuple[str, ...] = (),
    **options: object,
) -> Iterator[Page]:
    """A signed-in page at ``width`` px; no console error nor CSP violation on the way."""
    context = browser.new_context(
        base_url=srv.url, viewport={"width": width, "height": 900}, **options
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    csp = watch_csp(context, page)
    errors = ConsoleErrors(page)
    for part in refused:
        errors.expect_refusal(part)
    page.goto("/login")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(STRONG)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    try:
        yield page
    finally:
        context.close()
    assert csp == [], csp
    assert errors.seen == [], errors.seen


def clean(page: Page) -> None:
    assert axe_violations(page) == [], page.url


def test_a_wrong_password_says_so_and_keeps_the_user_name(
    browser: Browser, srv: LiveServer, sdk: Client
) -> None:
    context = browser.new_context(base_url=srv.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = ConsoleErrors(page)
    errors.expect_refusal("/api/v1/auth/login")
    try:
        page.goto("/login")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill("not the password at all")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#flash")).to_be_visible()
        expect(page.locator("#flash")).to_contain_text(re.compile("password", re.I))
        assert page.url == srv.url + "/login"  # no /login?next=%2Flogin
        expect(page.get_by_label("Username")).to_have_value(USER)
        expect(page.get_by_label("Password")).to_have_value("")
        expect(page.get_by_label("Password")).to_be_focused()
        clean(page)
        shot(page, "sign-in-error")
        page.get_by_label("Password").fill(STRONG)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/")
        expect(page.get_by_text(f"Signed in as {USER}")).to_be_visible()
    finally:
        context.close()
    assert errors.seen == [], errors.seen


def test_state_counts_filter_on_click_and_several_states_search_and_dates(
    browser: Browser, srv: LiveServer, data: Data
) -> None:
    with browsing(browser, srv) as page:
        counts = page.locator("#state-counts")
        expect(counts.locator('a[data-state="succeeded"] .count')).to_have_text("2")
        expect(counts.locator('a[data-state="staged"] .count')).to_have_text("3")
        expect(counts.locator('a[data-state="failed"] .count')).to_have_text("1")
        counts.locator('a[data-state="failed"]').click()
        page.wait_for_url("**/?state=failed")
        rows = page.locator("#runs tbody tr[data-run]")
        expect(rows).to_have_count(1)
        # a row says how far the run got and why it ended
        row = page.locator(f'tr[data-run="{data.failed}"]')
        expect(row.locator(".c-progress")).to_have_text("1/1")
        expect(row.locator(".c-error")).to_contain_text("talk")
        clean(page)

        page.goto("/")
        page.get_by_role("checkbox", name="failed").check()
        page.get_by_role("checkbox", name="succeeded").check()
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url(
            re.compile(r"state=succeeded.*state=failed|state=failed.*state=succeeded")
        )
        expect(rows).to_have_count(3)
        expect(page.locator(f'tr[data-run="{data.ok[0]}"] .c-progress')).to_contain_text("3/3")
        shot(page, "runs-filtered")

        # search: a tag, any case, the run id, the workflow
        page.goto("/?search=flaky-one")
        expect(rows).to_have_count(1)
        page.goto(f"/?search={data.ok[1][-6:]}")
        expect(rows).to_have_count(1)
        page.get_by_label("Search").fill("chain@1")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(5)

        # dates: UTC days, the last one included
        today = datetime.now(UTC).date()
        page.goto(f"/?since={today + timedelta(days=1)}")
        expect(page.locator("#runs")).to_contain_text("No run matches these filters")
        page.goto(f"/?since={today}&until={today}")
        expect(rows).to_have_count(6)
        page.goto("/?since=yesterday")
        expect(page.locator(".problems")).to_contain_text("since: 'yesterday' is not a date")


def test_sorting_and_pages_by_cursor_live_in_the_url(
    browser: Browser, srv: LiveServer, data: Data
) -> None:
    with browsing(browser, srv) as page:
        page.get_by_role("link", name="State (sort)").click()
        page.wait_for_url("**/?sort=-state")
        head = page.locator("#runs thead th", has_text="State")
        expect(head).to_have_attribute("aria-sort", "descending")
        badges = page.locator("#runs tbody .c-state .badge")
        expect(badges).to_have_count(6)
        shown = badges.all_inner_texts()
        assert shown == sorted(shown, reverse=True)
        page.get_by_role("link", name="State (sort)").click()
        page.wait_for_url("**/?sort=state")
        expect(head).to_have_attribute("aria-sort", "ascending")
        expect(badges.first).to_have_text("failed")

        page.goto("/?limit=4")
        first = page.locator("#runs tbody tr[data-run]").evaluate_all(
            "rows => rows.map(r => r.dataset.run)"
        )
        assert len(first) == 4
        page.get_by_role("link", name="Next page").click()
        page.wait_for_url(re.compile(r"limit=4&cursor=run_"))
        second = page.locator("#runs tbody tr[data-run]").evaluate_all(
            "rows => rows.map(r => r.dataset.run)"
        )
        assert len(second) == 2 and not set(first) & set(second)
        assert sorted(first + second, reverse=True) == first + second
        shared = page.url
        page.goto("/")
        page.goto(shared)  # the same page again, from its URL alone
        expect(page.locator("#runs tbody tr[data-run]")).to_have_count(2)
        expect(page.get_by_role("link", name="First page")).to_be_visible()


def test_times_are_local_with_utc_on_hover_and_relative_in_the_list(
    browser: Browser, srv: LiveServer, sdk: Client, data: Data
) -> None:
    with browsing(browser, srv, timezone_id="America/New_York") as page:
        created = page.locator(f'tr[data-run="{data.ok[0]}"] time')
        expect(created).to_have_text(re.compile(r"^(just now|\d+ min ago)$"))
        expect(created).to_have_attribute("title", re.compile(r"America/New_York.* UTC$"))
        expect(page.locator("#tz-note")).to_have_text("Times in America/New_York (UTC on hover).")

        at = datetime.fromisoformat(sdk.run(data.ok[0]).data["created_at"])
        local = at.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M:%S")
        page.goto(f"/runs/{data.ok[0]}")
        fact = page.locator("dl.facts time").first
        expect(fact).to_have_text(local)
        expect(fact).to_have_attribute("title", at.strftime("%Y-%m-%d %H:%M:%S UTC"))
        # an event's time has its date, in one line
        first_event = page.locator("#timeline time").first
        expect(first_event).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
        assert first_event.evaluate("t => t.getClientRects().length") == 1


def test_on_a_phone_each_run_is_a_card_with_its_state_first(
    browser: Browser, srv: LiveServer, data: Data
) -> None:
    with browsing(browser, srv, width=390) as page:
        card = page.locator(f'tr[data-run="{data.failed}"]')
        badge = card.locator(".badge")
        badge.scroll_into_view_if_needed()
        expect(badge).to_be_in_viewport()
        box, link = badge.bounding_box(), card.locator(".c-id a").bounding_box()
        assert box is not None and link is not None
        assert box["x"] + box["width"] <= 390 and box["x"] <= link["x"]  # the state comes first
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # a created date stays on one line
        assert card.locator("time").evaluate("t => t.getClientRects().length") == 1
        clean(page)
        shot(page, "runs-mobile")


def test_an_ended_run_hides_what_it_no_longer_takes_and_its_graph_opens_steps(
    browser: Browser, srv: LiveServer, sdk: Client, data: Data
) -> None:
    with browsing(browser, srv) as page:
        page.goto(f"/runs/{data.failed}")
        expect(page.locator("#run-state")).to_have_text("failed")
        # nothing to zip: no zip link
        expect(page.locator("#products")).to_contain_text("None yet")
        expect(page.locator("#products-zip")).to_be_hidden()
        # Stop and Kill are disabled and look it (grey, not their warning colours)
        stop, kill = (
            page.get_by_role("button", name="Stop"),
            page.get_by_role("button", name="Kill"),
        )
        expect(stop).to_be_disabled()
        expect(kill).to_be_disabled()
        grey = stop.evaluate("b => getComputedStyle(b).backgroundColor")
        assert kill.evaluate("b => getComputedStyle(b).backgroundColor") == grey
        enabled = page.get_by_role("button", name="Rerun").evaluate(
            "b => getComputedStyle(b).backgroundColor"
        )
        assert grey != enabled
        # the events box scrolls from the keyboard
        timeline = page.get_by_role("list", name="Events of this run (scrollable)")
        expect(timeline).to_contain_text("run.failed")
        assert timeline.get_attribute("tabindex") == "0"
        # a graph node is a link, reached with Tab and opened with Enter
        node = page.locator('a[data-step-link="talk"]')
        node.focus()
        expect(node).to_be_focused()
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/runs/{data.failed}/steps/talk")
        expect(page.get_by_role("heading", name="Step talk")).to_be_visible()

        running = sdk.create_run("ticks@1", start=True)
        page.goto(f"/runs/{running.id}")
        expect(page.locator("#run-state")).to_have_text("running")
        expect(page.get_by_role("button", name="Stop")).to_be_enabled()
        running.kill()


def test_the_log_viewer_follows_switches_streams_and_attempts_and_downloads(
    browser: Browser, srv: LiveServer, sdk: Client, data: Data, tmp_path: Path
) -> None:
    with browsing(browser, srv) as page:
        page.goto(f"/runs/{data.failed}")
        page.get_by_role("link", name="talk", exact=True).click()
        page.wait_for_url(re.compile(rf"/runs/{data.failed}/steps/talk$"))
        log = page.get_by_role("log")
        expect(log).to_have_text("out of attempt\n")
        expect(page.locator("#step-attempts")).to_have_text("2")
        page.get_by_role("radio", name="stderr").check()  # (the log is labelled too)
        page.wait_for_url(re.compile(r"stream=stderr"))
        expect(log).to_have_text("err of attempt\n")
        page.get_by_label("Attempt", exact=True).select_option("1")
        page.wait_for_url(re.compile(r"attempt=1"))
        expect(log).to_have_text("err of attempt\n")
        expect(page.get_by_label("Attempt", exact=True)).to_have_value("1")
        clean(page)
        with page.expect_download() as info:
            page.get_by_role("link", name="Download").click()
        saved = tmp_path / "log.txt"
        info.value.save_as(saved)
        assert saved.read_text() == "err of attempt\n"
        assert info.value.suggested_filename == f"{data.failed}-talk-stderr.log"
        page.get_by_role("link", name="Full log (plain text)").click()
        expect(page.locator("body")).to_have_text("err of attempt")

        run = sdk.create_run("ticks@1", start=True)
        page.goto(f"/runs/{run.id}")
        expect(page.locator('#dag .node[data-step="ticks"]')).to_have_class("node state-running")
        page.locator('a[data-step-link="ticks"]').click()
        log = page.get_by_role("log")
        expect(page.get_by_label("Follow live")).to_be_checked()
        # no reload: the lines come as the step prints them
        expect(log).to_contain_text("tick6", timeout=WAIT_MS)
        expect(page.locator("#step-state")).to_have_text("running")
        shot(page, "step-log")
        run.kill()
        expect(page.locator("#step-state")).to_have_text("killed")


def test_the_new_run_form_shows_bounds_and_a_failed_start_links_the_staged_run(
    browser: Browser, srv: LiveServer, sdk: Client
) -> None:
    with browsing(browser, srv, width=390, refused=("/start",)) as page:
        page.goto("/runs/new?workflow=dana/bounded@1")
        expect(page.locator("#bounds-n")).to_have_text("From 1 to 10.")
        expect(page.get_by_label("n (int)")).to_have_attribute("aria-describedby", "bounds-n")
        expect(page.locator("#bounds-label")).to_have_text("At most 20 characters.")
        clean(page)
        # the browser's own checks off, the server refuses the start: the staged run stays,
        # and the message links it
        page.locator("#run-form").evaluate("f => { f.noValidate = true; }")
        page.get_by_label("label (string), required").fill("")
        page.get_by_role("button", name="Create and start").click()
        link = page.locator("#flash a")
        expect(link).to_have_text(re.compile(r"^open run run_"))
        expect(page.locator("#flash")).to_contain_text("the run stays staged")
        run_id = link.inner_text().split()[-1]
        assert sdk.run(run_id).state == "staged"
        link.click()
        page.wait_for_url(f"**/runs/{run_id}")
        expect(page.locator("#run-state")).to_have_text("staged")


def test_following_the_latest_attempt_moves_on_to_a_retry(
    browser: Browser, srv: LiveServer, sdk: Client
) -> None:
    with browsing(browser, srv) as page:
        run = sdk.create_run("retried@1", start=True)
        page.goto(f"/runs/{run.id}")
        expect(page.locator("#run-state")).to_have_text("running")
        expect(page.locator('#dag .node[data-step="twice"]')).to_have_class("node state-running")
        page.locator('a[data-step-link="twice"]').click()
        log = page.get_by_role("log")
        expect(log).to_have_text("attempt 1\n")
        # no click: the first attempt fails, the viewer follows the second
        page.wait_for_url(re.compile(r"attempt=2"), timeout=WAIT_MS)
        expect(log).to_have_text("attempt 2\n")
        expect(page.get_by_label("Attempt", exact=True)).to_have_value("2")
        expect(page.locator("#step-state")).to_have_text("succeeded", timeout=WAIT_MS)

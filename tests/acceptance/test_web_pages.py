"""The dashboard's workflow, API token, events and audit log pages in a real browser
(Debian's Chromium driven by Playwright), and every page of the dashboard checked by
axe-core at 1280 and 390 px and in dark mode, with no console error.  One server and one
browser for the module; FLOWDECK_SCREENSHOTS=1 saves screenshots."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings

pytest.importorskip("playwright")
from playwright.sync_api import Browser, expect, sync_playwright

from flowdeck.web import pages_more
from tests.acceptance.browser_checks import ConsoleErrors, axe_violations
from tests.acceptance.test_web import CHROMIUM, ROOT, WAIT_MS, shot
from tests.acceptance.test_web_daily import browsing

# live updates on a loaded machine (two cores shared with other suites) can take longer
# than expect()'s default 5 s: wait as long as page actions do
expect.set_options(timeout=WAIT_MS)
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
USER = "dana"  # browsing() signs this user in
ADMIN = "root-admin"
LONG_NAMES = """name: long-names
version: "1"
steps:
  prepare_the_reference_genome_index_for_alignment:
    run: [echo, one]
  align_every_sample_against_the_reference:
    run: [echo, two]
    needs: [prepare_the_reference_genome_index_for_alignment]
"""


@dataclass
class Data:
    run: str  # a succeeded chain@1.0 run
    stream_run: str  # a killed run of the streams example
    graph: str
    step_page: str


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("web-pages"),
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
    )
    with live_server(settings) as server:
        server.ctx.accounts.create_user(ADMIN, STRONG, admin=True)
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
def sdk(srv: LiveServer) -> Iterator[Client]:
    with Client(srv.url) as client:
        client.register(USER, STRONG)
        client.login(USER, STRONG)
        yield client


@pytest.fixture(scope="module")
def data(sdk: Client, tmp_path_factory: pytest.TempPathFactory) -> Data:
    chain = ROOT / "examples" / "chain" / "flowdeck.yaml"
    sdk.push_workflow(chain)
    newer = tmp_path_factory.mktemp("chain") / "flowdeck.yaml"
    newer.write_text(chain.read_text().replace('version: "1.0"', 'version: "1.1"'))
    sdk.push_workflow(newer)
    sdk.push_workflow(ROOT / "examples" / "streams" / "flowdeck.yaml")
    long = tmp_path_factory.mktemp("long") / "flowdeck.yaml"
    long.write_text(LONG_NAMES)
    sdk.push_workflow(long)
    run = sdk.create_run("chain@1.0", start=True, tags=["pages"])
    run.wait(timeout=60)
    stream = sdk.create_run("double@1.0", start=True)
    stream.kill()
    stream.wait(timeout=60)
    graph = sdk.submit_graph({"only": {"workflow": "chain@1.0"}}, name="single")
    sdk.add_webhook("http://127.0.0.1:9/hook", ["run.succeeded"])
    sdk.set_secret("API_KEY", "s3cret")
    return Data(run.id, stream.id, graph.id, f"/runs/{run.id}/steps/shout")


def test_a_workflow_page_has_versions_source_inputs_graph_recent_runs_and_a_start(
    browser: Browser, srv: LiveServer, data: Data
) -> None:
    with browsing(browser, srv, refused=("/workflows/nobody",)) as page:
        page.goto("/workflows")
        page.get_by_role("link", name=f"{USER}/chain@1.0", exact=True).click()
        page.wait_for_url(f"**/workflows/{USER}/chain@1.0")
        expect(page.get_by_role("heading", name=f"Workflow {USER}/chain@1.0")).to_be_visible()
        expect(page.locator("#versions")).to_contain_text("1.0 (this one)")
        expect(page.locator("#versions").get_by_role("link", name="1.1")).to_be_visible()
        who = page.locator("#wf-inputs tr", has_text="who")
        expect(who).to_contain_text("string")
        expect(who).to_contain_text("At most 100 characters.")
        expect(who).to_contain_text("world")
        for step in ("greet", "shout", "count"):
            expect(page.locator(f'#dag .node[data-step="{step}"]')).to_be_visible()
        expect(page.locator("#wf-runs")).to_contain_text(data.run)
        expect(page.locator("#wf-source")).to_contain_text("name: chain")
        shot(page, "workflow")
        page.get_by_role("link", name="Start a run").click()
        page.wait_for_url(re.compile(r"/runs/new\?workflow="))
        expect(page.get_by_role("heading", name=f"{USER}/chain@1.0")).to_be_visible()
        # another version, from the list
        page.go_back()
        page.get_by_role("link", name="1.1").click()
        expect(page.get_by_role("heading", name=f"Workflow {USER}/chain@1.1")).to_be_visible()
        expect(page.locator("#wf-runs")).to_contain_text("No runs of this version yet")
        # a long step name is cut to fit its box (the whole name on hover)
        page.goto(f"/workflows/{USER}/long-names@1")
        for node in page.locator("#dag .node").all():
            text, box = node.locator("text.name"), node.locator("rect")
            assert text.evaluate("t => t.getBBox().x + t.getBBox().width") <= box.evaluate(
                "r => r.getBBox().width"
            )
            expect(text).to_have_text(re.compile("…$"))
        expect(page.locator("#dag title").first).to_have_text(
            "prepare_the_reference_genome_index_for_alignment"
        )
        response = page.goto("/workflows/nobody/nothing@1")
        assert response is not None and response.status == 404


def test_api_tokens_are_made_shown_once_listed_and_revoked(
    browser: Browser, srv: LiveServer, sdk: Client
) -> None:
    with browsing(browser, srv, width=390) as page:
        page.get_by_role("link", name="API tokens").click()
        page.wait_for_url("**/tokens")
        expect(page.locator("#tokens")).to_contain_text("this session")
        page.get_by_label("Name").fill("nightly-script")
        page.get_by_label("Expires after (days)").fill("30")
        page.get_by_role("button", name="Create token").click()
        secret = page.locator("#new-token-value")
        expect(secret).not_to_be_empty()
        value = secret.inner_text()
        row = page.locator("#tokens tr", has_text="nightly-script")
        expect(row).to_contain_text("api")
        expect(row).to_contain_text("active")
        shot(page, "tokens")
        with httpx.Client(base_url=srv.url) as plain:
            me = plain.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {value}"})
            assert me.status_code == 200 and me.json()["username"] == USER
            page.reload()
            expect(page.locator("#new-token")).to_be_hidden()  # shown once
            assert value not in page.content()
            row.get_by_role("button", name=re.compile("^Revoke")).click()
            expect(row).to_contain_text("revoked")
            me = plain.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {value}"})
            assert me.status_code == 401
        # this session cannot be revoked from its own page
        current = page.locator("#tokens tr", has_text="this session")
        expect(current.get_by_role("button")).to_have_count(0)


def test_the_events_page_filters_and_follows_live(
    browser: Browser, srv: LiveServer, sdk: Client, data: Data
) -> None:
    with browsing(browser, srv) as page:
        page.get_by_role("link", name="Events").click()
        page.get_by_label("Type").fill("run.*")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/events?type=run.*&run=")
        events = page.get_by_role("list", name=re.compile("^Events"))
        expect(page.locator("#live-status")).to_have_text("Live updates: on")
        expect(events).to_contain_text("run.succeeded")
        expect(events.locator("li", has_text="step.")).to_have_count(0)
        run = sdk.create_run("chain@1.0", start=True, tags=["live-event"])
        # no reload: the new run's events arrive, each with a date and a link to its run
        item = events.locator("li", has_text=run.id).filter(has_text="run.succeeded")
        expect(item).to_have_count(1)
        expect(item.locator("time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
        expect(item.get_by_role("link", name=run.id)).to_have_attribute("href", f"/runs/{run.id}")
        shot(page, "events")
        page.goto(f"/events?run={data.run}")
        expect(events).to_contain_text("step.")
        expect(events.locator("li", has_text=run.id)).to_have_count(0)


def test_the_events_page_starts_with_recent_events_unless_asked_for_all(
    browser: Browser, srv: LiveServer, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages_more, "EVENT_HISTORY", 3)  # the server runs in this process
    with browsing(browser, srv) as page:
        page.goto(f"/events?run={data.run}")
        events = page.get_by_role("list", name=re.compile("^Events"))
        expect(page.locator("#live-status")).to_have_text("Live updates: on")
        expect(events.locator("li", has_text="run.staged")).to_have_count(0)
        page.get_by_role("link", name="from the first event").click()
        page.wait_for_url(re.compile(r"history=all"))
        expect(events.locator("li").first).to_contain_text("run.staged")


def test_the_audit_log_is_for_admins(browser: Browser, srv: LiveServer, sdk: Client) -> None:
    with httpx.Client(base_url=srv.url) as plain:
        plain.post("/api/v1/auth/login", json={"username": "mallory", "password": "guess"})
    with browsing(browser, srv, refused=("/admin/audit",)) as page:
        response = page.goto("/admin/audit")
        assert response is not None and response.status == 404
        expect(page.get_by_role("link", name="Audit log")).to_have_count(0)
    context = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = ConsoleErrors(page)
    try:
        page.goto("/login?next=/admin/audit")
        page.get_by_label("Username").fill(ADMIN)
        page.get_by_label("Password").fill(STRONG)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/admin/audit")
        table = page.locator("#audit")
        expect(table.locator("tr", has_text="login.failed").first).to_contain_text("mallory")
        expect(table.locator("tr", has_text="register").first).to_be_visible()
        page.get_by_label("Action").fill("login.failed")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/admin/audit?action=login.failed")
        rows = table.locator("tbody tr")
        assert set(rows.locator("td:nth-child(3)").all_inner_texts()) == {"login.failed"}
        assert axe_violations(page) == []
        shot(page, "audit")
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            for path in ("/admin", "/admin/audit"):
                page.goto(path)
                assert axe_violations(page) == [], (path, width)
                assert page.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        context.close()
    assert errors.seen == [], errors.seen


def test_an_ended_stream_run_shows_no_push_form(
    browser: Browser, srv: LiveServer, data: Data
) -> None:
    with browsing(browser, srv) as page:
        page.goto(f"/runs/{data.stream_run}")
        expect(page.locator("#run-state")).to_have_text("killed")
        expect(page.locator("#ports")).to_contain_text("records")
        expect(page.locator(".push-form")).to_be_hidden()
        expect(page.get_by_role("button", name=re.compile("^Push records"))).to_be_hidden()


PAGES = [
    "/",
    "/?state=succeeded&state=killed&sort=state",
    "/runs/new",
    "/workflows",
    "/graphs",
    "/webhooks",
    "/secrets",
    "/events",
    "/tokens",
    "/no/such/page/at/all",
]


@pytest.mark.parametrize(("width", "scheme"), [(1280, "light"), (390, "light"), (1280, "dark")])
def test_every_page_passes_axe_with_no_console_error(
    browser: Browser, srv: LiveServer, data: Data, width: int, scheme: str
) -> None:
    pages = [
        *PAGES,
        f"/runs/{data.run}",
        f"/runs/{data.stream_run}",
        data.step_page,
        f"/workflows/{USER}/chain@1.0",
        f"/graphs/{data.graph}",
    ]
    refused = ("/no/such/page",)
    with browsing(browser, srv, width=width, refused=refused, color_scheme=scheme) as page:
        for path in pages:
            page.goto(path)
            page.wait_for_load_state("load")
            if path.startswith("/runs/run_") and "/steps/" not in path:
                expect(page.locator("#steps tbody tr").first).not_to_contain_text("Loading")
            assert axe_violations(page) == [], path
            if width == 390:
                wide = page.evaluate("document.documentElement.scrollWidth")
                assert wide <= 390, (path, wide)
        # every page names its icon, and the icon is there
        icon = page.locator('link[rel="icon"]').get_attribute("href")
        assert icon == "/static/favicon.svg"
        for where in (icon, "/favicon.ico"):
            got = page.request.get(where)
            assert got.status == 200 and got.headers["content-type"] == "image/svg+xml"
        if scheme == "dark" and width == 1280:
            page.goto(f"/runs/{data.run}")
            shot(page, "run-dark")
    # the sign-in and register pages, signed out
    context = browser.new_context(
        base_url=srv.url, viewport={"width": width, "height": 900}, color_scheme=scheme
    )
    page = context.new_page()
    errors = ConsoleErrors(page)
    try:
        for path in ("/login", "/register"):
            page.goto(path)
            assert axe_violations(page) == [], path
    finally:
        context.close()
    assert errors.seen == [], errors.seen

"""The dashboard's webhooks, graphs, stream ports and rerun in a real browser (Debian's
Chromium, headless, driven by Playwright).  FLOWDECK_SCREENSHOTS=1 saves screenshots."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings
from tests.receiver import eventually, receiver

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.acceptance.test_web import CHROMIUM, ROOT, WAIT_MS, register, shot, watch_csp

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("web-areas"),
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
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


@pytest.fixture
def page(browser: Browser, srv: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    p.on("dialog", lambda dialog: dialog.accept())
    violations = watch_csp(context, p)
    yield p
    context.close()
    assert violations == [], violations


def sdk(srv: LiveServer, name: str) -> Client:
    client = Client(srv.url)
    client.login(name, STRONG)
    return client


def test_a_webhook_shows_its_secret_once_then_its_deliveries(page: Page, srv: LiveServer) -> None:
    register(page, "wendy")
    with receiver() as rec, sdk(srv, "wendy") as fd:
        page.get_by_role("link", name="Webhooks").click()
        page.get_by_label("URL").fill(rec.url)
        page.get_by_label("Events").fill("run.succeeded")
        page.get_by_role("button", name="Add webhook").click()
        secret = page.locator("#new-secret-value")
        expect(secret).to_contain_text("whsec_")
        value = secret.inner_text()
        expect(page.locator("#webhooks")).to_contain_text(rec.url)
        shot(page, "webhooks")
        page.reload()
        expect(page.locator("#new-secret")).to_be_hidden()
        assert value not in page.content()  # shown only once

        fd.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
        assert fd.create_run("chain@1.0", start=True).wait(timeout=60)["state"] == "succeeded"
        eventually(lambda: rec.received(), what="the delivery")
        deliveries = page.get_by_role("button", name=f"Deliveries of {rec.url}")

        def delivered() -> bool:
            deliveries.click()
            return "HTTP 204" in page.locator("#deliveries").inner_text()

        eventually(delivered, timeout=30, what="the delivery's attempt")
        expect(deliveries).to_have_attribute("aria-expanded", "true")
        expect(page.locator("#deliveries")).to_contain_text("run.succeeded")
        page.get_by_role("button", name="Redeliver run.succeeded").first.click()
        eventually(lambda: len(rec.received()) == 2, what="the redelivery")

        page.get_by_role("button", name=f"Disable {rec.url}").click()
        expect(page.locator("#webhooks .hook-state")).to_contain_text("disabled")
        assert fd.webhooks()[0]["enabled"] is False
        page.get_by_role("button", name=f"Enable {rec.url}").click()
        expect(page.locator("#webhooks .hook-state")).to_have_text("enabled")
        page.get_by_role("button", name=f"Delete {rec.url}").click()
        expect(page.locator("#webhooks")).not_to_contain_text(rec.url)
        assert fd.webhooks() == []


def test_a_secret_is_set_listed_and_deleted_never_shown(page: Page, srv: LiveServer) -> None:
    register(page, "sally")
    value = "s3cret-from-the-form-" + "x" * 8
    with sdk(srv, "sally") as fd:
        page.get_by_role("link", name="Secrets").click()
        page.get_by_label("Name").fill("grid_token")
        page.get_by_label("Value").fill(value)
        page.get_by_role("button", name="Save secret").click()
        expect(page.locator("#secret-status")).to_contain_text("grid_token saved")
        expect(page.locator("#secrets")).to_contain_text("grid_token")
        expect(page.get_by_label("Value")).to_have_value("")  # the form forgets it
        assert [s["name"] for s in fd.secrets()] == ["grid_token"]
        shot(page, "secrets")
        page.reload()
        expect(page.locator("#secrets")).to_contain_text("grid_token")
        assert value not in page.content()
        page.get_by_label("Name").fill("bad-name")
        page.get_by_label("Value").fill("x")
        page.get_by_role("button", name="Save secret").click()  # the browser refuses it
        assert [s["name"] for s in fd.secrets()] == ["grid_token"]
        page.get_by_role("button", name="Delete grid_token").click()
        expect(page.locator("#secrets")).not_to_contain_text("grid_token")
        assert fd.secrets() == []


def test_records_pushed_from_the_run_page_come_out_live_and_rerun(
    page: Page, srv: LiveServer
) -> None:
    register(page, "sam")
    with sdk(srv, "sam") as fd:
        fd.push_workflow(ROOT / "examples" / "streams" / "flowdeck.yaml")
        run = fd.create_run("double@1.0", start=True)
        page.goto(f"/runs/{run.id}")
        expect(page.locator("#run-state")).to_have_text("running")
        box = page.get_by_label("Records for records (NDJSON: one JSON value a line)")
        box.fill('{"n": 1}\n{"n": 2}')
        page.get_by_role("button", name="Push records into records").click()
        outputs = page.locator('ol[data-output="results"] li')
        # no reload: the output records arrive over the port's event stream
        expect(outputs).to_have_count(2)
        expect(outputs.nth(1)).to_contain_text('{"n":2,"double":4}')
        expect(page.locator('#ports tr[data-port="records"] .port-records')).to_have_text("2")
        box.fill('{"n": 21}')
        box.press("Enter")  # a new line in the text area, not a submit
        page.get_by_role("button", name="Push records into records").click()
        expect(outputs).to_have_count(3)
        expect(outputs.nth(2)).to_contain_text('"double":42')
        shot(page, "run-streams")
        page.get_by_role("button", name="Close input records").click()
        expect(page.locator("#run-state")).to_have_text("succeeded")
        expect(page.locator('[data-output-status="results"]')).to_have_text("closed")
        expect(page.locator('#ports tr[data-port="results"] .port-closed')).to_have_text("yes")
        assert [r.data["double"] for r in run.output("results").read()] == [2, 4, 42]

        fd.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
        chain = fd.create_run("chain@1.0", start=True)
        chain.wait(timeout=60)
        page.goto(f"/runs/{chain.id}")
        page.get_by_role("button", name="Rerun").click()
        page.wait_for_url(lambda url: "/runs/run_" in url and chain.id not in url)
        expect(page.locator("#run-state")).to_have_text("succeeded")
        assert page.get_by_role("button", name="Rerun").is_enabled()


def test_a_graph_submitted_from_its_page_reaches_succeeded_live(
    page: Page, srv: LiveServer, browser: Browser
) -> None:
    register(page, "gina")
    with sdk(srv, "gina") as fd:
        fd.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
    page.get_by_role("link", name="Graphs").click()
    spec = {
        "name": "pair",
        "nodes": {"first": {"workflow": "chain@1.0"}, "second": {"workflow": "chain@1.0"}},
        "edges": [{"from": "first", "to": "second"}],
    }
    page.get_by_label("Graph (JSON: name, nodes, edges, bindings)").fill(json.dumps(spec))
    page.get_by_role("button", name="Submit graph").click()
    page.wait_for_url("**/graphs/graph_*")
    graph_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#graph-state")).to_have_text("succeeded")
    expect(page.locator('#dag .node[data-node="second"]')).to_have_class("node state-succeeded")
    expect(page.locator("#timeline")).to_contain_text("graph.succeeded")
    expect(page.get_by_role("button", name="Kill")).to_be_disabled()
    shot(page, "graph")
    page.goto("/graphs")
    expect(page.locator(f'tr[data-graph="{graph_id}"] .badge')).to_have_text("succeeded")
    page.get_by_label("Graph (JSON: name, nodes, edges, bindings)").fill(
        '{"nodes": {"a": {"workflow": "chain@1.0"}}, "edges": [{"from": "a", "to": "zzz"}]}'
    )
    page.get_by_role("button", name="Submit graph").click()
    expect(page.locator("#flash")).to_contain_text("zzz")

    narrow = browser.new_context(
        base_url=page.url.split("/graphs")[0], viewport={"width": 390, "height": 844}
    )
    phone = narrow.new_page()
    phone.set_default_timeout(WAIT_MS)
    violations = watch_csp(narrow, phone)
    try:
        phone.goto("/login")
        phone.get_by_label("Username").fill("gina")
        phone.get_by_label("Password").fill(STRONG)
        phone.get_by_role("button", name="Sign in").click()
        phone.wait_for_url("**/")
        for path in ("/webhooks", "/secrets", "/graphs", f"/graphs/{graph_id}"):
            phone.goto(path)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        other = browser.new_context(base_url=page.url.split("/graphs")[0])
        stranger = other.new_page()
        register(stranger, "hank")
        response = stranger.goto(f"/graphs/{graph_id}")
        assert response is not None and response.status == 404
        other.close()
    finally:
        narrow.close()
    assert violations == [], violations


def test_a_cwl_document_is_uploaded_from_the_workflows_page(page: Page) -> None:
    register(page, "cora")
    page.goto("/workflows")
    label = "Spec (.yaml, .json), CWL document (.cwl) or archive (.zip, .tar.gz)"
    page.get_by_label(label).set_input_files(str(ROOT / "tests" / "data" / "cwl" / "greet.cwl"))
    page.get_by_label("Type").select_option("CWL")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/workflows?pushed=*")
    expect(page.get_by_role("cell", name="cora/greet@cwl-").first).to_have_text(
        re.compile(r"^cora/greet@cwl-[0-9a-f]{12}$")
    )
    page.get_by_role("link", name="New run of cora/greet@cwl-").click()
    expect(page.get_by_label("name (string), required")).to_be_visible()

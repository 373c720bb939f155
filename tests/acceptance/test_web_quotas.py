"""The dashboard's users page: an admin sees each user's usage and quotas and changes them
in a real browser (Debian's Chromium, headless, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.acceptance.test_web import CHROMIUM, WAIT_MS, shot, sign_in_with_keyboard, watch_csp

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
KEEP = 'name: keep\nversion: "1"\ninputs:\n  data: {type: file}\nsteps:\n  main:\n    run: [true]\n'


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("web-quotas"),
        login_max_failures_per_address=10**6,
        quota_max_active_runs=5,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture
def page(srv: LiveServer) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser: Browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 900})
        p = context.new_page()
        p.set_default_timeout(WAIT_MS)
        violations = watch_csp(context, p)
        try:
            yield p
        finally:
            context.close()
            browser.close()
        assert violations == [], violations


def test_an_admin_sees_usage_and_sets_a_users_quotas(page: Page, srv: LiveServer) -> None:
    srv.ctx.accounts.create_user("root", STRONG, admin=True)
    srv.ctx.accounts.create_user("gus", STRONG)
    source = srv.ctx.settings.data_dir.parent / "in.txt"
    source.write_text("z" * 2000)
    with Client(srv.url) as gus:
        gus.login("gus", STRONG)
        spec = srv.ctx.settings.data_dir.parent / "keep.yaml"
        spec.write_text(KEEP)
        gus.push_workflow(spec)
        gus.create_run("keep@1").upload("data", source)
    sign_in_with_keyboard(page, "root")
    page.goto("/admin")
    usage = page.locator('td.usage[data-user="gus"]')
    expect(usage).to_contain_text("0 active runs of 5")  # the server's default
    expect(usage).to_contain_text("2.0 kB stored of no limit")
    form = page.get_by_role("form", name="Quotas of gus")
    expect(form.get_by_label("Active runs")).to_have_attribute("placeholder", "5")
    form.get_by_label("Active runs").fill("2")
    form.get_by_label("Stored").fill("10M")
    form.get_by_role("button", name="Save quotas").click()
    expect(usage).to_contain_text("0 active runs of 2")
    expect(usage).to_contain_text("2.0 kB stored of 10.5 MB")
    shot(page, "admin-quotas")
    q = srv.ctx.quotas.show(None, "gus")
    assert (q.override.max_active_runs, q.override.max_stored_bytes) == (2, 10 * 1024**2)
    # a value that is not a size is said, and nothing changes
    form = page.get_by_role("form", name="Quotas of gus")
    form.get_by_label("Stored").fill("lots")
    form.get_by_role("button", name="Save quotas").click()
    expect(page.locator("#flash")).to_contain_text("max stored bytes: not a number: lots")
    assert srv.ctx.quotas.show(None, "gus").override.max_stored_bytes == 10 * 1024**2
    # emptied fields go back to the defaults
    form.get_by_label("Active runs").fill("")
    form.get_by_label("Stored").fill("")
    form.get_by_role("button", name="Save quotas").click()
    expect(usage).to_contain_text("0 active runs of 5")
    assert srv.ctx.quotas.show(None, "gus").override.empty

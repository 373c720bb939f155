"""The dashboard shows a CWL run's inputs as its job document, as sent, with links to the
files staged for it (Debian's Chromium, headless, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flowdeck.client import Client
from tests.acceptance.test_cwl_jobs import JOB
from tests.acceptance.test_cwl_runs import CWL
from tests.acceptance.test_web import browser, page, pytestmark, sign_in_with_keyboard
from tests.helpers import FLOWDECK_CODE, LiveServer, live_server, make_settings, register_and_login

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect

__all__ = ["browser", "page", "pytestmark"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("webcwl")
    settings = make_settings(
        root / "data", stop_grace_s=1, login_max_failures_per_address=10**6, **FLOWDECK_CODE
    )
    with live_server(settings) as server:
        yield server


def test_a_cwl_run_shows_its_job_document_with_links_to_its_files(
    page: Page, srv: LiveServer, tmp_path: Path
) -> None:
    token = register_and_login(srv, "carol")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reads.txt").write_text("ACGT\n")
    (tmp_path / "job.yml").write_text(yaml.safe_dump(JOB))
    with Client(srv.url, token=token) as sdk:
        wf = sdk.push_workflow(CWL / "sample-report.cwl", name="report")
        run = sdk.create_run(f"report@{wf['version']}", cwl_job=tmp_path / "job.yml", start=True)
    sign_in_with_keyboard(page, "carol")
    page.goto(f"/runs/{run.id}")
    expect(page.locator("#run-state")).to_have_text("succeeded")
    job = page.locator("#cwl-job")
    expect(page.get_by_role("heading", name="CWL job document (as sent)")).to_be_visible()
    expect(job).to_contain_text('"label": "S1"')
    expect(job).to_contain_text('"matrix": [')
    expect(page.locator("#params")).not_to_contain_text("cwl_request")
    with page.expect_download() as info:
        job.get_by_role("link", name="data/reads.txt").click()
    saved = tmp_path / "downloaded.txt"
    info.value.save_as(saved)
    assert saved.read_text() == "ACGT\n"
    # on a phone the document scrolls in its box, not the page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/runs/{run.id}")
    expect(job).to_contain_text('"label": "S1"')
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 800})
    # the new-run form takes a job document, and keeps the server's copy of it to itself
    page.goto(f"/runs/new?workflow=carol/report@{wf['version']}")
    expect(page.get_by_label("cwl_job (string)")).to_be_visible()
    expect(page.locator("#run-form")).not_to_contain_text("cwl_request")

"""Shared fixtures.  Under CI=true a skipped test is a failure: CI must run everything."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faces import FACES, Connect, connect
from tests.helpers import LiveServer, fresh_pg_database, live_server, make_settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


# The developer's own flowdeck settings must not steer the tests (the tests' own switches
# stay: FLOWDECK_TEST_*, and FLOWDECK_SCREENSHOTS for the browser tests).
for _name in list(os.environ):
    if (
        _name.startswith("FLOWDECK_")
        and not _name.startswith("FLOWDECK_TEST_")
        and _name != "FLOWDECK_SCREENSHOTS"
    ):
        del os.environ[_name]


@pytest.fixture(autouse=True)
def _isolated_config_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never read or write the developer's real flowdeck credentials."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One open-registration server for the session (users made once, argon2 is slow).

    Every test speaks from 127.0.0.1, so the per-address login throttle is set out of
    reach here; the tests of that throttle start servers of their own."""
    settings = make_settings(
        tmp_path_factory.mktemp("srv"), login_max_failures_per_address=1_000_000
    )
    with live_server(settings) as srv:
        yield srv


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module", params=FACES)
def face(request: pytest.FixtureRequest) -> Connect:
    """How a test makes a client of the SDK face under test (``Client`` or
    ``AsyncClient``, tests/faces.py): a test that takes it runs once for each."""
    return connect(request.param)

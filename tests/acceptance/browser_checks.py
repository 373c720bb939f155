"""What every dashboard page must pass in the browser tests: axe-core (from npm, locked in
tests/acceptance/axe/package-lock.json) finds no violation, and the page logs no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Error, Page

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => v.id + ": " + v.help + " at " +
    v.nodes.map((n) => n.target.join(" ")).join(", "));
}"""


def axe_source() -> str:
    if not AXE.is_file():
        pytest.skip(f"no {AXE} (npm ci --prefix tests/acceptance/axe; .ci/run does it)")
    return AXE.read_text()


def axe_violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it is now (the script is evaluated through
    the DevTools protocol, which the page's Content-Security-Policy does not block)."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(axe_source())
    found: list[str] = page.evaluate(RUN_AXE)
    return found


class ConsoleErrors:
    """The errors a page logs or throws, as they happen."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        self.expected: list[str] = []  # URLs whose refusal (4xx) the test itself causes
        page.on("console", self._console)
        page.on("pageerror", self._thrown)

    def expect_refusal(self, url_part: str) -> None:
        """A request to a URL containing ``url_part`` is refused on purpose: the browser's
        "Failed to load resource" line about it is not an error of the page."""
        self.expected.append(url_part)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url") or "")
        if message.text.startswith("Failed to load resource") and any(
            part in url for part in self.expected
        ):
            return
        self.seen.append(f"{message.text} ({url})")

    def _thrown(self, error: Error) -> None:
        self.seen.append(f"uncaught: {error}")

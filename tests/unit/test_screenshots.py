"""The README's and the docs' screenshots come from the browser tests: every image they
show is one a test saves with ``shot(page, NAME)`` (``make screenshots`` refreshes them
all), docs/images holds no image that no test makes any more, and none is older than the
last change to the dashboard's templates, style or scripts (git history)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
IMAGES = ROOT / "docs" / "images"
SHOT = re.compile(r"""\bshot\(\s*\w+\s*,\s*["']([a-z0-9-]+)["']""")
SHOWN = re.compile(r"images/([A-Za-z0-9_.-]+)")


def made_by_tests() -> set[str]:
    names: set[str] = set()
    for test in (ROOT / "tests" / "acceptance").glob("test_*.py"):
        names.update(f"{name}.png" for name in SHOT.findall(test.read_text()))
    return names


def shown_in_docs() -> dict[str, set[str]]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return {page.name: set(SHOWN.findall(page.read_text())) for page in pages}


def test_every_image_the_docs_show_is_made_by_a_test_and_stored() -> None:
    made = made_by_tests()
    assert made, "no shot(page, NAME) found in tests/acceptance"
    for page, images in shown_in_docs().items():
        assert images <= made, (page, sorted(images - made))
        missing = sorted(i for i in images if not (IMAGES / i).is_file())
        assert missing == [], (page, missing)


def test_docs_images_holds_only_images_a_test_makes() -> None:
    stored = {p.name for p in IMAGES.glob("*.png")}
    assert stored - made_by_tests() == set()
    assert made_by_tests() - stored == set()  # a new shot: run its test with FLOWDECK_SCREENSHOTS=1


DASHBOARD = ("src/flowdeck/web/templates", "src/flowdeck/web/static")


def committed_at(*paths: str) -> int:
    """When the last commit that changed ``paths`` was made (0: none did)."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct", "--", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"no git history of this checkout: {done.stderr.strip()}")
    return int(done.stdout.strip() or 0)


def test_no_screenshot_is_older_than_the_dashboard() -> None:
    """A change to the dashboard comes with its screenshots made again (``make
    screenshots``), in the same commit or a later one."""
    dashboard = committed_at(*DASHBOARD)
    assert dashboard, "no commit of the dashboard's files: a shallow clone?"
    stale = sorted(
        p.name for p in IMAGES.glob("*.png") if committed_at(str(p.relative_to(ROOT))) < dashboard
    )
    assert stale == [], f"made before the dashboard's last change: {stale} (make screenshots)"

"""The README's and the docs' screenshots come from the browser tests: every image they
show is one a test saves with ``shot(page, NAME)`` (``make screenshots`` refreshes them
all), docs/images holds no image that no test makes any more, and they show the
dashboard as it is (tests/shots.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.shots import STAMP, digest

ROOT = Path(__file__).parents[2]
IMAGES = ROOT / "docs" / "images"
SHOT = re.compile(r"""\bshot\(\s*\w+\s*,\s*["']([a-z0-9-]+)["']""")
SHOWN = re.compile(r"images/([A-Za-z0-9_.-]+\.(?:png|jpe?g|gif|svg|webp))")


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


def test_the_screenshots_show_the_dashboard_as_it_is() -> None:
    """``make screenshots`` notes which dashboard it photographed (a digest of its
    templates, style and scripts): a change to them comes with the screenshots made again."""
    assert STAMP.is_file(), "no docs/images/dashboard.sha256: run make screenshots"
    assert STAMP.read_text().strip() == digest(), (
        "the dashboard changed since its screenshots were made: run make screenshots"
    )

"""Which dashboard the screenshots under docs/images show: a digest of its templates,
style and scripts, written beside the images by ``make screenshots`` and checked by
tests/unit/test_screenshots.py.

    python -m tests.shots    # after the browser tests made the screenshots again
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).parents[1]
DASHBOARD = [
    ROOT / "src" / "flowdeck" / "web" / "templates",
    ROOT / "src" / "flowdeck" / "web" / "static",
]
STAMP = ROOT / "docs" / "images" / "dashboard.sha256"


def digest() -> str:
    """The SHA-256 of the dashboard's files (their paths and contents, in order)."""
    h = hashlib.sha256()
    for folder in DASHBOARD:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def main() -> None:
    part = STAMP.with_suffix(".part")
    part.write_text(digest() + "\n")
    part.replace(STAMP)
    print(f"{STAMP.relative_to(ROOT)}: {digest()}")


if __name__ == "__main__":
    main()

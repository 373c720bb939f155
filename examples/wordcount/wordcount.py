"""Code shipped inside the wordcount workflow archive."""

from __future__ import annotations

import collections
import re
from pathlib import Path


def count_words(path: str, top: int) -> dict[str, object]:
    """Called by flowdeck with the step's inputs; returns its outputs."""
    words = re.findall(r"[\w']+", Path(path).read_text(encoding="utf-8").lower())
    common = collections.Counter(words).most_common(top)
    return {"total": len(words), "common": [{"word": w, "count": n} for w, n in common]}

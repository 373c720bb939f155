"""Event type patterns, as subscribers write them: ``run.*``, ``step.failed``, ``*``.

``*`` matches any run of characters (dots included); everything else is literal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from flowdeck.errors import InvalidInput

PATTERN = re.compile(r"[a-z0-9_.*]{1,64}")
MAX_PATTERNS = 20


def check_patterns(patterns: Iterable[str], field: str = "type") -> list[str]:
    """The patterns, or :class:`InvalidInput` naming the first bad one."""
    found = list(patterns)
    if len(found) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} event type patterns", field=field)
    for p in found:
        if not PATTERN.fullmatch(p):
            raise InvalidInput(
                f"bad event type pattern {p!r}: use lower-case letters, digits, '_', '.' "
                "and '*' (any characters), at most 64",
                field=field,
            )
    return found


@lru_cache(maxsize=4096)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(".*".join(map(re.escape, p.split("*"))) for p in patterns))


def matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test of event types against the patterns; no pattern matches everything."""
    found = tuple(patterns)
    if not found:
        return lambda _type: True
    regex = _compiled(found)
    return lambda type_: regex.fullmatch(type_) is not None


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an event type matches one of the patterns (none: no match)."""
    found = tuple(patterns)
    return bool(found) and _compiled(found).fullmatch(event_type) is not None

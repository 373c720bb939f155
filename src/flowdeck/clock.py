"""The one seam through which flowdeck reads the time.

Code calls :func:`now` (an aware UTC datetime) or :func:`monotonic`; tests replace the
source with :func:`use` (for example a :class:`FrozenClock` they advance by hand).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_source: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return _source()


def monotonic() -> float:
    """Seconds from a monotonic clock, for measuring durations."""
    return time.monotonic()


class FrozenClock:
    """A clock that stands still until advanced; for tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@contextmanager
def use(source: Callable[[], datetime]) -> Iterator[None]:
    """Read the time from ``source`` inside the block."""
    global _source
    previous = _source
    _source = source
    try:
        yield
    finally:
        _source = previous

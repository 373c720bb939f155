"""Fair share: which user's queued run starts next when a slot frees.

Each user's recent usage is the CPU-slot-seconds of their steps, decayed with a half-life
``H`` (setting ``fairshare_half_life_s``): a step that used ``c`` slots for ``d`` seconds
and ended ``a`` seconds ago counts ``c * d * 2^(-a/H)``; steps still running count
``c * (seconds so far)``.  Among the ``N`` users with queued or running runs, with usage
``U_u`` and all of theirs ``U``, a user's fair-share factor is (as Slurm's)

    F_u = 2 ** (-(U_u / U) / (1 / N))        (1 when nobody used anything yet)

The next run is the first in the order: the admin priority of each user's next run
(higher first), then ``F_u`` (higher first), then the slots the user holds now (fewer
first), then the age of that run.  Within a user's own runs, their own priority orders.
Everything here is pure: the scheduler keeps a :class:`UsageBook` and asks :func:`pick`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def decay(value: float, seconds: float, half_life_s: float) -> float:
    """``value`` after ``seconds`` of decay with the half-life ``half_life_s``."""
    if seconds <= 0 or value == 0:
        return value
    return float(value * 2.0 ** (-seconds / half_life_s))


@dataclass
class UsageBook:
    """Each user's decayed usage of ended steps: one number and its time per user, so
    adding and reading cost O(1), whatever the history."""

    half_life_s: float
    _usage: dict[str, tuple[float, datetime]] = field(default_factory=dict)

    def add(self, user: str, slot_seconds: float, now: datetime) -> None:
        if slot_seconds <= 0:
            return
        self._usage[user] = (self.of(user, now) + slot_seconds, now)

    def of(self, user: str, now: datetime) -> float:
        value, at = self._usage.get(user, (0.0, now))
        return decay(value, (now - at).total_seconds(), self.half_life_s)

    def load(self, stored: dict[str, tuple[float, datetime]]) -> None:
        """Take the usage stored for every user (each server adds what its steps used)."""
        self._usage = dict(stored)

    def forget_below(self, threshold: float, now: datetime) -> None:
        """Drop users whose usage decayed to nearly nothing (keeps the book small)."""
        for user in [u for u in self._usage if self.of(u, now) < threshold]:
            del self._usage[user]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A user with queued runs, as the choice needs them."""

    user: str
    admin_priority: int  # of the user's next run
    queued_at: datetime  # of the user's next run
    usage: float  # decayed slot-seconds, running steps included
    holding: float  # slots the user's steps hold now


def factor(usage: float, total: float, users: int) -> float:
    """The fair-share factor of a user with ``usage`` among ``users`` users whose usage
    adds up to ``total``: 1 for no usage, 0.5 at exactly a fair share, towards 0 above."""
    if total <= 0 or users <= 0:
        return 1.0
    return float(2.0 ** (-(usage / total) * users))


def _order(total: float, users: int) -> Callable[[Candidate], tuple[Any, ...]]:
    def key(c: Candidate) -> tuple[Any, ...]:
        return (-c.admin_priority, -factor(c.usage, total, users), c.holding, c.queued_at, c.user)

    return key


def ranked(candidates: Iterable[Candidate], active_users: int | None = None) -> list[Candidate]:
    """``candidates`` in the order their next runs should start.  ``active_users``: users
    with queued or running runs (default: the candidates)."""
    found = list(candidates)
    users = active_users if active_users is not None else len(found)
    return sorted(found, key=_order(sum(c.usage for c in found), users))


def pick(candidates: Iterable[Candidate], active_users: int | None = None) -> Candidate | None:
    """The candidate whose next run starts first (None: no candidate); O(candidates)."""
    found = list(candidates)
    if not found:
        return None
    users = active_users if active_users is not None else len(found)
    return min(found, key=_order(sum(c.usage for c in found), users))

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowdeck import clock, ids
from flowdeck.domain.accounts import (
    AccountStatus,
    Role,
    Throttle,
    check_username,
    count_failure,
    next_status,
    retry_after,
)
from flowdeck.domain.privilege import Access, Actor, allowed
from flowdeck.errors import Conflict, InvalidInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Actor("u_a", "alice", Role.USER)
BOB = Actor("u_b", "bob", Role.USER)
ROOT = Actor("u_r", "root", Role.ADMIN)


def fail(cur: Throttle | None, at: datetime, limit: int = 3) -> Throttle:
    return count_failure(cur, "k", at, window_s=60, max_failures=limit, lockout_s=300)


def test_lock_after_max_failures_within_window() -> None:
    t = fail(None, T0)
    t = fail(t, T0 + timedelta(seconds=10))
    assert t.failures == 2 and t.locked_until is None
    t = fail(t, T0 + timedelta(seconds=20))
    assert t.locked_until == T0 + timedelta(seconds=320)
    assert retry_after([t], T0 + timedelta(seconds=20)) == 300
    assert retry_after([t], T0 + timedelta(seconds=320)) is None


def test_window_expiry_restarts_the_count() -> None:
    t = fail(fail(None, T0), T0 + timedelta(seconds=5))
    t = fail(t, T0 + timedelta(seconds=61))
    assert (t.failures, t.window_started_at, t.locked_until) == (
        1,
        T0 + timedelta(seconds=61),
        None,
    )


def test_retry_after_takes_the_longest_lock() -> None:
    a = Throttle("a", 5, T0, T0 + timedelta(seconds=10))
    b = Throttle("b", 5, T0, T0 + timedelta(seconds=100))
    assert retry_after([a, b], T0) == 100
    assert retry_after([], T0) is None


def test_account_status_rules() -> None:
    assert next_status("approve", AccountStatus.PENDING) is AccountStatus.ACTIVE
    assert next_status("disable", AccountStatus.ACTIVE) is AccountStatus.DISABLED
    assert next_status("enable", AccountStatus.DISABLED) is AccountStatus.ACTIVE
    with pytest.raises(Conflict, match="cannot approve an account that is active"):
        next_status("approve", AccountStatus.ACTIVE)


@pytest.mark.parametrize("name", ["al", "-alice", "a b", "x" * 65, "al/ice", ""])
def test_bad_usernames(name: str) -> None:
    with pytest.raises(InvalidInput, match="username must be"):
        check_username(name)


def test_privilege_rule() -> None:
    assert allowed(ALICE, "u_a", Access.WRITE)
    assert not allowed(BOB, "u_a", Access.READ)
    assert allowed(BOB, "u_a", Access.READ, shared_with={"u_b"})
    assert not allowed(BOB, "u_a", Access.WRITE, shared_with={"u_b"})  # shares are read-only
    assert allowed(BOB, "u_a", Access.READ, public=True)
    assert allowed(ROOT, "u_a", Access.WRITE)


def test_ids_sort_by_creation_time() -> None:
    fc = clock.FrozenClock(T0)
    with clock.use(fc):
        first = ids.new_id("u")
        fc.advance(0.001)
        second = ids.new_id("u")
    assert first.startswith("u_") and len(first) == 28
    assert first < second

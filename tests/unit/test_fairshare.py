"""Fair share: the user who used least recently starts next; admin priority comes first;
each user's own priority orders only their own runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowdeck.domain.fairshare import Candidate, UsageBook, decay, factor, pick, ranked
from flowdeck.domain.quotas import Quota, parse_bytes
from flowdeck.domain.runs import Run, RunState
from flowdeck.runtime.run_queue import RunQueue

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def cand(user: str, usage: float, minute: int = 0, admin: int = 0, holding: float = 0) -> Candidate:
    return Candidate(user, admin, T0 + timedelta(minutes=minute), usage, holding)


def test_usage_halves_every_half_life_and_adds_up() -> None:
    book = UsageBook(half_life_s=60)
    book.add("a", 100, T0)
    assert book.of("a", T0 + timedelta(seconds=60)) == pytest.approx(50)
    book.add("a", 50, T0 + timedelta(seconds=60))
    assert book.of("a", T0 + timedelta(seconds=120)) == pytest.approx(50)
    assert book.of("nobody", T0) == 0
    book.forget_below(1, T0 + timedelta(hours=1))
    assert book.of("a", T0 + timedelta(hours=1)) == 0
    assert decay(8, 30, 10) == pytest.approx(1)


def test_the_factor_is_one_without_usage_and_a_half_at_a_fair_share() -> None:
    assert factor(0, 0, 3) == 1.0
    assert factor(10, 30, 3) == pytest.approx(0.5)
    assert factor(30, 30, 3) < factor(10, 30, 3) < factor(0, 30, 3) == 1.0


def test_the_user_who_used_least_goes_first_whatever_the_age_of_their_run() -> None:
    heavy = cand("a", usage=1000, minute=0)  # queued long ago
    light = cand("b", usage=10, minute=50)
    assert pick([heavy, light]) == light
    assert [c.user for c in ranked([heavy, cand("c", 0, 99), light])] == ["c", "b", "a"]
    assert pick([]) is None


def test_with_equal_usage_fewer_held_slots_then_age_decide() -> None:
    assert pick([cand("a", 0, minute=0, holding=1), cand("b", 0, minute=5)]).user == "b"
    assert pick([cand("a", 0, minute=0), cand("b", 0, minute=5)]).user == "a"


def test_an_admin_priority_overrides_fair_share() -> None:
    urgent = cand("a", usage=1e9, admin=10)
    assert pick([cand("b", 0), urgent]) == urgent


def run(run_id: str, owner: str, minute: int, priority: int = 0, admin: int = 0) -> Run:
    at = T0 + timedelta(minutes=minute)
    return Run(
        run_id,
        owner,
        "wf",
        f"{owner}/wf@1",
        RunState.QUEUED,
        at,
        at,
        priority=priority,
        queued_at=at,
        admin_priority=admin,
    )


def test_a_users_own_priority_orders_only_their_runs() -> None:
    q = RunQueue()
    for r in [
        run("a1", "a", 0),
        run("a2", "a", 1, priority=100),
        run("b1", "b", 2),
        run("b2", "b", 3, admin=5),
    ]:
        q[r.id] = r
    assert {r.id for r in q.heads()} == {"a2", "b2"}  # each user's next run
    assert q.take("a") is not None and q.head("a") == q["a1"]
    del q["a1"]
    assert q.head("a") is None
    assert [r.id for r in q.take_first(5)] == ["b2", "b1"]
    assert q.of("b") == [] and not q


def test_quota_overrides_and_sizes() -> None:
    defaults = Quota(max_active_runs=5, max_cpus=None, max_stored_bytes=1000)
    assert Quota(max_cpus=2).over(defaults) == Quota(5, 2, 1000)
    assert Quota().empty and not defaults.empty
    assert parse_bytes("10G") == 10 * 1024**3
    assert parse_bytes("1.5k") == 1536
    assert parse_bytes("4096") == 4096
    assert parse_bytes("2MiB") == 2 * 1024**2
    with pytest.raises(ValueError, match="could not convert"):
        parse_bytes("lots")


def test_the_book_takes_the_stored_usage_of_every_server() -> None:
    book = UsageBook(half_life_s=60)
    book.add("a", 10, T0)
    book.load({"b": (40.0, T0)})
    assert book.of("a", T0) == 0
    assert book.of("b", T0 + timedelta(seconds=60)) == pytest.approx(20)

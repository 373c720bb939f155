"""Retention's store operations, one contract for every backend (fake, SQLite,
PostgreSQL), and the purge over them: only ended, unkept, old enough runs go."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowdeck import clock
from flowdeck.domain.accounts import AccountStatus, Role, User
from flowdeck.domain.runs import Product, Run, RunState
from flowdeck.services.retention import Retention
from flowdeck.store import Store, open_store
from tests.helpers import clean_sql_store, make_settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "fake":
        yield open_store("memory://")
        return
    s = clean_sql_store(request, tmp_path)
    yield s
    s.close()


def run(run_id: str, state: RunState, ended: datetime | None, keep: bool = False) -> Run:
    return Run(
        id=run_id,
        owner_id="u1",
        workflow_id=None,
        workflow_ref="u/w@1",
        state=state,
        created_at=OLD - timedelta(days=1),
        state_since=ended or OLD,
        finished_at=ended,
        keep=keep,
    )


def fill(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(User("u1", "ada", Role.USER, AccountStatus.ACTIVE, "$x", OLD, OLD))
        tx.add_runs(
            [
                run("r_old2", RunState.FAILED, OLD + timedelta(hours=1)),
                run("r_old1", RunState.SUCCEEDED, OLD),
                run("r_kept", RunState.SUCCEEDED, OLD, keep=True),
                run("r_running", RunState.RUNNING, None),
                run("r_new", RunState.SUCCEEDED, NOW - timedelta(days=1)),
            ]
        )
        for run_id in ("r_old1", "r_kept", "r_running"):
            tx.add_event("run", run_id, "run.created", OLD, "ada", {})
        tx.add_event("workflow", "w_gone", "workflow.deleted", OLD, "ada", {})
        tx.add_event("workflow", "w_new", "workflow.pushed", NOW, "ada", {})
        tx.add_product(Product("p1", "r_old1", "s.out", "out.txt", 1, "0" * 64, "text/plain", OLD))
        tx.add_audit(OLD, "login", actor_id="u1", actor_name="ada")
        tx.add_audit(NOW, "login", actor_id="u1", actor_name="ada")


def test_expired_runs_are_ended_unkept_and_old_enough_oldest_first(store: Store) -> None:
    fill(store)
    before = NOW - timedelta(days=30)
    with store.read() as tx:
        assert [r.id for r in tx.expired_runs(before, files_only=False)] == ["r_old1", "r_old2"]
        assert [r.id for r in tx.expired_runs(before, files_only=False, limit=1)] == ["r_old1"]
    with store.write() as tx:  # (an active run given by mistake is not claimed)
        assert tx.mark_files_purged(["r_old1", "r_running"], NOW) == ["r_old1"]
        assert tx.mark_files_purged(["r_old1"], NOW) == []  # claimed once
    with store.read() as tx:
        assert [r.id for r in tx.expired_runs(before, files_only=True)] == ["r_old2"]
        purged = tx.get_run("r_old1")
        assert purged is not None and purged.files_purged_at == NOW
        assert tx.list_products("r_old1") == []
    with store.write() as tx:  # an active run given by mistake stays
        assert tx.delete_runs(["r_old1", "r_running"]) == ["r_old1"]
    with store.read() as tx:
        assert tx.get_run("r_old1") is None and tx.get_run("r_running") is not None
        assert tx.list_events(subject_kind="run", subject_id="r_old1") == []


def test_a_run_kept_after_it_was_found_is_neither_claimed_nor_deleted(store: Store) -> None:
    """A purge reads its batch, then a user keeps one of those runs: the claim (before any
    folder goes) and the delete both leave the kept run alone."""
    fill(store)
    before = NOW - timedelta(days=30)
    with store.read() as tx:
        found = [r.id for r in tx.expired_runs(before, files_only=False)]
    assert found == ["r_old1", "r_old2"]
    with store.write() as tx:
        tx.set_run("r_old2", keep=True)
    with store.write() as tx:
        assert tx.mark_files_purged(found, NOW) == ["r_old1"]
        assert tx.delete_runs(found) == ["r_old1"]
    with store.read() as tx:
        kept = tx.get_run("r_old2")
        assert kept is not None and kept.keep and kept.files_purged_at is None


def test_old_rows_spare_the_events_of_stored_runs(store: Store) -> None:
    fill(store)
    before = NOW - timedelta(days=30)
    with store.write() as tx:
        tx.delete_runs(["r_old1"])
        events = tx.old_rows("events", before)
        found = {
            (e.subject_kind, e.subject_id) for e in tx.list_events(limit=100) if e.id in events
        }
        assert found == {("workflow", "w_gone")}
        assert tx.delete_rows("events", events) == 1
        audit = tx.old_rows("audit", before)
        assert len(audit) == 1 and tx.delete_rows("audit", audit) == 1
        assert [a.at for a in tx.list_audit()] == [NOW]
        assert tx.old_rows("deliveries", before) == []


def test_a_purge_deletes_only_what_has_expired(store: Store, tmp_path: Path) -> None:
    fill(store)
    settings = make_settings(
        tmp_path / "data", retention_runs_days=30, retention_events_days=30, retention_batch=1
    )
    kept_dir = tmp_path / "data" / "runs" / "r_running"
    kept_dir.mkdir(parents=True)
    (kept_dir / "work.txt").write_text("busy")
    retention = Retention(store, settings)
    with clock.use(lambda: NOW):
        plan = retention.plan()
        assert (plan.runs, plan.events) == (2, 1)
        report = retention.purge()
    assert report is not None and report.runs == 2 and report.events == 1
    with store.read() as tx:
        left = {r.id for r in tx.list_runs(None, limit=10)}
    assert left == {"r_kept", "r_running", "r_new"}
    assert (kept_dir / "work.txt").read_text() == "busy"  # an active run's files stay


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_one_server_of_a_postgresql_database_purges_at_a_time(
    store: Store, tmp_path: Path, pg_url: str
) -> None:
    from flowdeck.store.sql import SqlStore

    fill(store)
    settings = make_settings(tmp_path / "data", retention_runs_days=30)
    other = SqlStore(pg_url)  # another server's connection pool
    try:
        first, second = Retention(store, settings), Retention(other, settings)
        with clock.use(lambda: NOW):
            with first._sole() as alone:  # the first server's round under way
                assert alone
                assert second.purge() is None  # the other skips its round
            report = second.purge()  # the first is done: its turn
        assert report is not None and report.runs == 2
    finally:
        other.close()

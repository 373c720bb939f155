"""One contract for every store backend: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdeck.domain.accounts import AccountStatus, Role, Throttle, Token, TokenKind, User
from flowdeck.domain.runs import Run, RunState
from flowdeck.domain.workflows import Visibility, Workflow
from flowdeck.errors import AlreadyExists
from flowdeck.store import Store, open_store
from flowdeck.store.sql import SqlStore
from tests.helpers import clean_sql_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "fake":
        yield open_store("memory://")
        return
    s = clean_sql_store(request, tmp_path)
    yield s
    s.close()


def user(name: str = "alice", role: Role = Role.USER, uid: str | None = None) -> User:
    return User(uid or f"u_{name}", name, role, AccountStatus.ACTIVE, "$argon2id$x", T0, T0)


def token(tid: str, user_id: str, name: str | None = None, at: datetime = T0) -> Token:
    return Token(
        tid,
        user_id,
        TokenKind.API if name else TokenKind.SESSION,
        name,
        f"hash-{tid}",
        "fdk_abcd",
        at,
        at + timedelta(hours=1),
    )


def test_users_round_trip_with_aware_utc_times(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user())
    with store.read() as tx:
        got = tx.get_user("u_alice")
    assert got == user()
    assert got is not None and got.created_at.tzinfo is not None


def test_usernames_are_unique_regardless_of_case(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("Alice"))
    with pytest.raises(AlreadyExists), store.write() as tx:
        tx.add_user(user("alice", uid="u_other"))
    with store.read() as tx:
        assert tx.get_user_by_name("ALICE") is not None
        assert [u.username for u in tx.list_users()] == ["Alice"]


def test_a_failed_transaction_changes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.add_user(user("carol"))
        tx.add_audit(T0, "register", actor_id=None, actor_name=None, target="carol")
        raise RuntimeError("boom")
    with store.read() as tx:
        assert tx.get_user_by_name("carol") is None
        assert tx.list_audit() == []


def test_update_user_and_count_admins(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("root", Role.ADMIN))
        tx.add_user(user("bob"))
        assert tx.count_admins() == 1
        later = T0 + timedelta(minutes=5)
        bob = tx.update_user("u_bob", later, role=Role.ADMIN, password_hash="$argon2id$new")
        assert bob is not None and bob.role is Role.ADMIN and bob.updated_at == later
        assert bob.password_hash == "$argon2id$new"
        tx.update_user("u_root", later, status=AccountStatus.DISABLED)
        assert tx.count_admins() == 1  # only active admins count
        assert tx.update_user("u_missing", later, role=Role.USER) is None


def test_tokens_find_list_revoke(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user())
        tx.add_token(token("t1", "u_alice"))
        tx.add_token(token("t2", "u_alice", "ci", T0 + timedelta(seconds=1)))
        tx.add_token(token("t3", "u_alice", "laptop", T0 + timedelta(seconds=2)))
    with store.read() as tx:
        found = tx.find_token("hash-t2")
        assert found is not None and found[0].name == "ci" and found[1].username == "alice"
        assert tx.find_token("nope") is None
        assert [t.id for t in tx.list_tokens("u_alice")] == ["t3", "t2", "t1"]
    with store.write() as tx:
        assert tx.revoke_token("t1", T0)
        assert not tx.revoke_token("t1", T0)  # already revoked
        assert tx.revoke_user_tokens("u_alice", T0, keep_token_id="t3") == 1
        tx.touch_token("t3", T0 + timedelta(minutes=1))
    with store.read() as tx:
        states = {t.id: (t.revoked_at is not None) for t in tx.list_tokens("u_alice")}
        assert states == {"t1": True, "t2": True, "t3": False}
        t3 = tx.get_token("t3")
        assert t3 is not None and t3.last_used_at == T0 + timedelta(minutes=1)


def test_token_names_are_unique_per_user(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user())
        tx.add_user(user("bob"))
        tx.add_token(token("t1", "u_alice", "ci"))
        tx.add_token(token("t2", "u_bob", "ci"))  # another user may reuse the name
    with pytest.raises(AlreadyExists), store.write() as tx:
        tx.add_token(token("t3", "u_alice", "ci"))


def test_deleting_a_user_removes_tokens_and_shares_but_keeps_audit(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user())
        tx.add_user(user("bob"))
        tx.add_token(token("t1", "u_alice"))
        tx.share("workflow", "wf_1", "u_alice")
        tx.add_audit(T0, "login", actor_id="u_alice", actor_name="alice")
    with store.write() as tx:
        assert tx.delete_user("u_alice")
        assert not tx.delete_user("u_alice")
    with store.read() as tx:
        assert tx.find_token("hash-t1") is None
        assert tx.shared_with("workflow", "wf_1") == set()
        assert [e.actor_name for e in tx.list_audit()] == ["alice"]


def test_throttle_update_is_read_modify_write(store: Store) -> None:
    def bump(cur: Throttle | None) -> Throttle:
        n = cur.failures + 1 if cur else 1
        return Throttle("user:alice", n, T0, None)

    with store.write() as tx:
        tx.update_throttle("user:alice", bump)
        tx.update_throttle("user:alice", bump)
    with store.read() as tx:
        assert [t.failures for t in tx.get_throttles(["user:alice", "addr:x"])] == [2]
    with store.write() as tx:
        assert tx.update_throttle("user:alice", lambda _c: None) is None
    with store.read() as tx:
        assert tx.get_throttles(["user:alice"]) == []


def test_shares(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user())
        tx.add_user(user("bob"))
        tx.share("workflow", "wf_1", "u_bob")
        tx.share("workflow", "wf_1", "u_bob")  # idempotent
        tx.share("workflow", "wf_1", "u_alice")
    with store.write() as tx:
        assert tx.unshare("workflow", "wf_1", "u_alice")
        assert not tx.unshare("workflow", "wf_1", "u_alice")
    with store.read() as tx:
        assert tx.shared_with("workflow", "wf_1") == {"u_bob"}
        assert tx.shared_with("run", "wf_1") == set()


def test_audit_pages_newest_first_and_filters(store: Store) -> None:
    with store.write() as tx:
        for i in range(5):
            action = "login.failed" if i % 2 else "login"
            tx.add_audit(
                T0 + timedelta(seconds=i),
                action,
                actor_id=None,
                actor_name=None,
                target=f"t{i}",
                address="10.0.0.1",
                details={"i": i},
            )
    with store.read() as tx:
        first = tx.list_audit(limit=2)
        assert [e.target for e in first] == ["t4", "t3"]
        rest = tx.list_audit(limit=10, before_id=first[-1].id)
        assert [e.target for e in rest] == ["t2", "t1", "t0"]
        assert [e.details["i"] for e in tx.list_audit(action="login.failed")] == [3, 1]


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    s = SqlStore(f"sqlite:///{tmp_path / 'p.db'}", sqlite_synchronous="FULL")
    with s.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    s.close()
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 30000,
        "synchronous": 2,
    }


def test_postgres_store_is_really_postgres(pg_url: str) -> None:
    s = SqlStore(pg_url)
    with s.engine.connect() as conn:
        version = conn.execute(sa.text("select version()")).scalar_one()
    s.close()
    assert "PostgreSQL" in version


def workflow(
    wid: str,
    owner: str,
    name: str = "wf",
    version: str = "1",
    visibility: Visibility = Visibility.PRIVATE,
) -> Workflow:
    return Workflow(
        wid,
        f"u_{owner}",
        owner,
        name,
        version,
        "d",
        "h" * 64,
        {"name": name, "steps": {"a": {"run": ["true"]}}},
        "src",
        False,
        visibility,
        False,
        T0,
    )


def test_workflows_visibility_and_versions(store: Store) -> None:
    with store.write() as tx:
        for name in ("alice", "bob", "carol"):
            tx.add_user(user(name))
        tx.add_workflow(workflow("wf_1", "alice", version="1"))
        tx.add_workflow(workflow("wf_2", "alice", version="2", visibility=Visibility.SHARED))
        tx.add_workflow(workflow("wf_3", "alice", "other", visibility=Visibility.PUBLIC))
        tx.share("workflow", "wf_2", "u_bob")
    with pytest.raises(AlreadyExists), store.write() as tx:
        tx.add_workflow(workflow("wf_4", "alice", version="1"))
    with store.read() as tx:
        got = tx.get_workflow("wf_1")
        assert got is not None and got.owner_name == "alice" and got.spec["name"] == "wf"
        latest = tx.find_workflow("u_alice", "wf", None)
        assert latest is not None and latest.version == "2"
        assert [w.id for w in tx.list_workflows("u_alice")] == ["wf_3", "wf_2", "wf_1"]
        assert [w.id for w in tx.list_workflows("u_bob")] == ["wf_3", "wf_2"]
        assert [w.id for w in tx.list_workflows("u_carol")] == ["wf_3"]
        assert [w.id for w in tx.list_workflows(None, name="wf", limit=1)] == ["wf_2"]
        assert [w.id for w in tx.list_workflows(None, before_id="wf_2")] == ["wf_1"]
    with store.write() as tx:
        updated = tx.update_workflow("wf_1", visibility=Visibility.PUBLIC, trusted=True)
        assert updated is not None and updated.trusted and updated.visibility is Visibility.PUBLIC
        assert tx.delete_workflow("wf_2")
    with store.read() as tx:
        assert tx.shared_with("workflow", "wf_2") == set()


def test_active_runs_are_counted_and_finished_runs_outlive_their_workflow(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run("run_1", "u_alice", "wf_1", "alice/wf@1", RunState.RUNNING, T0, T0))
        tx.add_run(Run("run_2", "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        tx.add_run(Run("run_3", "u_alice", "wf_1", "alice/wf@1", RunState.SUCCEEDED, T0, T0))
    with store.read() as tx:
        assert tx.count_active_runs(workflow_id="wf_1") == 2
        assert tx.count_active_runs(owner_id="u_alice") == 2
        assert tx.count_active_runs(owner_id="u_nobody") == 0
    with store.write() as tx:
        assert tx.delete_workflow("wf_1")  # the service checks for active runs first
        assert tx.count_active_runs(owner_id="u_alice") == 2
        assert tx.delete_user("u_alice")  # its runs go with it
        assert tx.count_active_runs(owner_id="u_alice") == 0


def test_runs_update_list_filter_and_page(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        tx.add_workflow(workflow("wf_1", "alice", "align", "2"))
        for i in range(5):
            owner = "alice" if i < 3 else "bob"
            tx.add_run(
                Run(
                    f"run_{i}",
                    f"u_{owner}",
                    "wf_1",
                    "alice/align@2",
                    RunState.STAGED,
                    T0 + timedelta(minutes=i),
                    T0,
                    tags=["nightly"] if i % 2 == 0 else [],
                )
            )
        done = tx.update_run(
            "run_1",
            state=RunState.SUCCEEDED,
            outputs={"n": 1},
            error={"step": "a", "message": "m"},
            tags=["x"],
        )
        assert done.state is RunState.SUCCEEDED and done.outputs == {"n": 1}
        assert done.tags == ["x"]
    with store.read() as tx:
        assert [r.id for r in tx.list_runs("u_alice")] == ["run_2", "run_1", "run_0"]
        assert [r.id for r in tx.list_runs(None, states=[RunState.STAGED])] == [
            "run_4",
            "run_3",
            "run_2",
            "run_0",
        ]
        assert [r.id for r in tx.list_runs(None, tag="nightly")] == ["run_4", "run_2", "run_0"]
        assert [r.id for r in tx.list_runs(None, tag="x")] == ["run_1"]
        assert len(tx.list_runs(None, workflow="align")) == 5
        assert len(tx.list_runs(None, workflow="align@2")) == 5
        assert tx.list_runs(None, workflow="align@3") == []
        page = tx.list_runs(None, limit=2)
        nxt = tx.list_runs(None, limit=2, after_id=page[-1].id)
        assert [r.id for r in page + nxt] == ["run_4", "run_3", "run_2", "run_1"]
        oldest = tx.list_runs(None, newest_first=False, limit=2)
        assert [r.id for r in oldest] == ["run_0", "run_1"]
        window = tx.list_runs(
            None, created_after=T0 + timedelta(minutes=1), created_before=T0 + timedelta(minutes=3)
        )
        assert [r.id for r in window] == ["run_2", "run_1"]
        # search: the run id, the workflow reference or a tag, any case
        assert [r.id for r in tx.list_runs(None, search="UN_3")] == ["run_3"]
        assert len(tx.list_runs(None, search="Align@2")) == 5
        assert [r.id for r in tx.list_runs(None, search="ightl")] == ["run_4", "run_2", "run_0"]
        assert tx.list_runs(None, search="%") == [] and tx.list_runs(None, search="_x") == []
        # another order, paged by its key then the id
        by_state = tx.list_runs(None, order_by="state", newest_first=False, limit=2)
        rest = tx.list_runs(
            None, order_by="state", newest_first=False, after_id=by_state[-1].id, limit=10
        )
        assert [r.id for r in by_state + rest] == ["run_0", "run_2", "run_3", "run_4", "run_1"]
        down = tx.list_runs(None, order_by="state", limit=1)
        more = tx.list_runs(None, order_by="state", after_id=down[-1].id, limit=10)
        assert [r.id for r in down + more] == ["run_1", "run_4", "run_3", "run_2", "run_0"]


def test_events_are_numbered_per_subject_without_gaps(store: Store) -> None:
    from flowdeck.domain.runs import StepRecord, StepState

    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run("run_a", "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        tx.add_run(Run("run_b", "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        a1 = tx.add_event("run", "run_a", "run.staged", T0, "alice", {})
        b1 = tx.add_event("run", "run_b", "run.staged", T0, "alice", {})
        a2 = tx.add_event("run", "run_a", "run.queued", T0, None, {"k": 1})
        tx.save_step(StepRecord("run_a", "s", -1, StepState.PENDING, T0))
        tx.save_step(
            StepRecord(
                "run_a",
                "s",
                -1,
                StepState.SUCCEEDED,
                T0,
                attempts=1,
                outputs={"o": [1]},
                exit_code=0,
            )
        )
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.add_event("run", "run_a", "run.lost", T0, None, {})
        raise RuntimeError("rolled back: the seq must not be used up")
    with store.write() as tx:
        a3 = tx.add_event("run", "run_a", "run.running", T0, None, {})
    assert (a1.seq, a2.seq, b1.seq, a3.seq) == (1, 2, 1, 3)
    assert a1.id < b1.id < a2.id < a3.id
    with store.read() as tx:
        evs = tx.list_events(subject_kind="run", subject_id="run_a")
        assert [(e.seq, e.type) for e in evs] == [
            (1, "run.staged"),
            (2, "run.queued"),
            (3, "run.running"),
        ]
        assert evs[1].data == {"k": 1}
        assert [e.id for e in tx.list_events(after_id=b1.id)] == [a2.id, a3.id]
        (step,) = tx.list_steps("run_a")
        assert step.state is StepState.SUCCEEDED and step.outputs == {"o": [1]}
    with store.write() as tx:
        assert tx.delete_run("run_a")
    with store.read() as tx:
        assert tx.list_events(subject_id="run_a") == [] and tx.list_steps("run_a") == []


def test_events_carry_owner_filter_by_type_and_reach_hooks_and_listeners(store: Store) -> None:
    from flowdeck.domain.runs import Event
    from flowdeck.store.base import Tx

    seen_in_tx: list[list[str]] = []
    published: list[list[int]] = []

    def hook(tx: Tx, events: list[Event]) -> None:
        seen_in_tx.append([e.type for e in events])

    store.add_event_hook(hook)
    store.add_commit_listener(lambda events: published.append([e.id for e in events]))
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run("run_a", "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        tx.add_run(Run("run_b", "u_bob", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        a1, b1 = tx.add_events(
            [
                ("run", "run_a", "run.queued", T0, "alice", {}),
                ("run", "run_b", "step_x.failed", T0, "bob", {}),
            ]
        )
        a2 = tx.add_event("run", "run_a", "step.failed", T0, None, {})
    assert (a1.owner_id, b1.owner_id, a2.owner_id) == ("u_alice", "u_bob", "u_alice")
    assert seen_in_tx == [["run.queued", "step_x.failed"], ["step.failed"]]
    assert published == [[a1.id, b1.id, a2.id]]  # once, after the commit, in id order
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.add_event("run", "run_a", "run.lost", T0, None, {})
        raise RuntimeError("rolled back: nothing is published")
    assert len(published) == 1 and len(seen_in_tx) == 3
    with store.read() as tx:
        assert [e.id for e in tx.list_events(owner_id="u_alice")] == [a1.id, a2.id]
        assert [e.id for e in tx.list_events(types=["step.*"])] == [a2.id]
        # '_' is a literal, not LIKE's any-character
        assert [e.id for e in tx.list_events(types=["step_*"])] == [b1.id]
        assert [e.id for e in tx.list_events(types=["run.queued", "*.failed"])] == [
            a1.id,
            b1.id,
            a2.id,
        ]
        assert [e.id for e in tx.list_events(subject_ids=["run_b"])] == [b1.id]
        assert tx.list_events(owner_id="u_carol") == []
        assert tx.last_event_id() == a2.id


def test_products_and_staged_files(store: Store) -> None:
    from flowdeck.domain.runs import Product, StagedFile

    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run("run_a", "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        tx.add_product(
            Product("prod_1", "run_a", "s.out", "work/s/out", 3, "h" * 64, "text/plain", T0)
        )
        tx.put_staged_file(StagedFile("run_a", "reads", "a.fa", "/x/a.fa", 10, None, "upload", T0))
        tx.put_staged_file(
            StagedFile("run_a", "reads", "a.fa", "/x/a.fa", 12, "h" * 64, "upload", T0)
        )
    with store.read() as tx:
        assert [p.name for p in tx.list_products("run_a")] == ["s.out"]
        got = tx.get_product("prod_1")
        assert got is not None and got.size == 3
        (staged,) = tx.list_staged_files("run_a")
        assert staged.size == 12
    with store.write() as tx:
        assert tx.delete_staged_file("run_a", "reads", "a.fa")
        assert not tx.delete_staged_file("run_a", "reads", "a.fa")


def test_a_step_keeps_its_job_id_and_why_it_waits(store: Store) -> None:
    """A step on Slurm: its job id and the reason its job waits are stored with it, and
    cleared when a new record says so."""
    from flowdeck.domain.runs import StepRecord, StepState

    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(Run("run_j", "u_alice", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0))
        waits = StepRecord(
            "run_j", "s", 2, StepState.PENDING, T0, attempts=1, job_id="4711", waiting="Priority"
        )
        tx.save_step(waits)
    with store.read() as tx:
        [step] = tx.list_steps("run_j")
    assert step == waits and step.in_queue
    with store.write() as tx:
        tx.save_step(StepRecord("run_j", "s", 2, StepState.RUNNING, T0, attempts=1, job_id="4711"))
    with store.read() as tx:
        [step] = tx.list_steps("run_j")
    assert (step.job_id, step.waiting, step.in_queue) == ("4711", None, False)


def test_step_counts_of_several_runs_in_one_read(store: Store) -> None:
    """The runs page's progress: each run's steps by state; a run without steps is absent,
    a run not asked for is not counted."""
    from flowdeck.domain.runs import StepRecord, StepState

    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        for rid in ("run_a", "run_b", "run_c", "run_d"):
            tx.add_run(Run(rid, "u_alice", "wf_1", "alice/wf@1", RunState.RUNNING, T0, T0))
        for i, state in enumerate([StepState.SUCCEEDED, StepState.SUCCEEDED, StepState.RUNNING]):
            tx.save_step(StepRecord("run_a", "scatter", i, state, T0, attempts=1))
        tx.save_step(StepRecord("run_b", "only", -1, StepState.FAILED, T0, attempts=2))
        tx.save_step(StepRecord("run_d", "other", -1, StepState.RUNNING, T0, attempts=1))
    with store.read() as tx:
        got = tx.step_counts(["run_a", "run_b", "run_c"])
        assert got == {"run_a": {"succeeded": 2, "running": 1}, "run_b": {"failed": 1}}
        assert got["run_a"] == tx.step_summary("run_a")[0]
        assert tx.step_counts([]) == {}

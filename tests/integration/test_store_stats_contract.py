"""The operators' summaries (metrics, ``flowdeck admin status``) on every store backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import Product, Run, RunState, StagedFile, StepRecord, StepState
from flowdeck.store import Store, open_store
from tests.helpers import clean_sql_store
from tests.integration.test_store_contract import T0, user, workflow


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "fake":
        yield open_store("memory://")
        return
    s = clean_sql_store(request, tmp_path)
    yield s
    s.close()


def _run(run_id: str, state: RunState, queued_min: int | None = None) -> Run:
    queued = T0 + timedelta(minutes=queued_min) if queued_min is not None else None
    return Run(run_id, "u_alice", "wf_1", "alice/wf@1", state, T0, T0, queued_at=queued)


def test_runs_counted_in_states_running_steps_and_the_oldest_queued(store: Store) -> None:
    with store.read() as tx:
        assert tx.count_runs_in([RunState.QUEUED]) == {}
        assert tx.count_running_steps() == 0
        assert tx.oldest_queued_at() is None
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(_run("run_q1", RunState.QUEUED, queued_min=5))
        tx.add_run(_run("run_q2", RunState.QUEUED, queued_min=2))
        tx.add_run(_run("run_r", RunState.RUNNING, queued_min=0))
        tx.add_run(_run("run_s", RunState.SUCCEEDED, queued_min=0))
        tx.save_steps(
            [
                StepRecord("run_r", "a", -1, StepState.RUNNING, T0),
                StepRecord("run_r", "b", 0, StepState.RUNNING, T0),
                StepRecord("run_r", "b", 1, StepState.SUCCEEDED, T0),
                # a finished run's stale record does not count
                StepRecord("run_s", "a", -1, StepState.RUNNING, T0),
            ]
        )
    with store.read() as tx:
        assert tx.count_runs_in([RunState.QUEUED, RunState.RUNNING, RunState.PAUSED]) == {
            RunState.QUEUED: 2,
            RunState.RUNNING: 1,
        }
        assert tx.count_runs_in([RunState.SUCCEEDED]) == {RunState.SUCCEEDED: 1}
        assert tx.count_running_steps() == 2
        assert tx.oldest_queued_at() == T0 + timedelta(minutes=2)
        assert tx.load_by_instance() == {None: (3, 2)}  # no instance owns them yet
    with store.write() as tx:
        tx.add_instance(ServerInstance("inst_a", "host-a", 100, None, T0, T0))
        assert tx.claim_run("run_r", "inst_a", 0) == 1
        assert tx.claim_run("run_q1", "inst_a", 0) == 1
    with store.read() as tx:
        assert tx.load_by_instance() == {None: (1, 0), "inst_a": (2, 2)}


def test_quota_overrides_are_set_replaced_and_removed_with_their_user(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        assert tx.get_quota("u_alice") is None
        tx.set_quota("u_alice", Quota(max_active_runs=2, max_stored_bytes=10**12), T0)
        tx.set_quota("u_bob", Quota(max_cpus=1.5), T0)
    with store.read() as tx:
        assert tx.get_quota("u_alice") == Quota(2, None, 10**12)
        assert tx.list_quotas() == {"u_alice": Quota(2, None, 10**12), "u_bob": Quota(None, 1.5)}
    with store.write() as tx:
        tx.set_quota("u_alice", Quota(max_cpus=4), T0)  # replaces the whole override
        tx.set_quota("u_bob", Quota(), T0)  # an empty one removes it
        tx.delete_user("u_alice")
    with store.read() as tx:
        assert tx.list_quotas() == {}


def test_stored_bytes_add_uploads_and_products_per_owner_not_files_read_in_place(
    store: Store,
) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        tx.add_workflow(workflow("wf_1", "alice"))
        tx.add_run(_run("run_a", RunState.SUCCEEDED))
        bob_run = Run("run_b", "u_bob", "wf_1", "alice/wf@1", RunState.STAGED, T0, T0)
        tx.add_run(bob_run)
        tx.add_product(Product("p1", "run_a", "s.out", "s/out", 1000, "0" * 64, "text/plain", T0))
        tx.add_product(Product("p2", "run_a", "s.log", "s/log", 24, "0" * 64, "text/plain", T0))
        tx.put_staged_file(StagedFile("run_a", "x", "f.txt", "/p/f", 500, None, "upload", T0))
        tx.put_staged_file(StagedFile("run_b", "x", "g.txt", "/p/g", 7, None, "upload", T0))
        tx.put_staged_file(
            StagedFile("run_b", "x", "big", "/data/big", 10**9, None, "data_root", T0)
        )
    with store.read() as tx:
        assert tx.stored_bytes_by_owner() == {"u_alice": 1524, "u_bob": 7}
        assert tx.stored_bytes_by_owner("u_bob") == {"u_bob": 7}
    with store.write() as tx:
        tx.delete_run("run_b")
    with store.read() as tx:
        assert tx.stored_bytes_by_owner("u_bob") == {}


def test_stored_bytes_add_workflow_archives_per_owner(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(dataclasses.replace(workflow("wf_1", "alice"), archive_bytes=300))
        tx.add_workflow(dataclasses.replace(workflow("wf_2", "alice"), version="2"))  # no archive
    with store.read() as tx:
        assert tx.stored_bytes_by_owner("u_alice") == {"u_alice": 300}
        got = tx.get_workflow("wf_1")
        assert got is not None and got.archive_bytes == 300
    with store.write() as tx:  # measured again (an archive pushed before sizes were kept)
        tx.update_workflow("wf_2", archive_bytes=50)
    with store.read() as tx:
        assert tx.stored_bytes_by_owner() == {"u_alice": 350}


def test_a_runs_admin_priority_and_why_it_waits_are_kept(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_workflow(workflow("wf_1", "alice"))
        run = _run("run_q", RunState.QUEUED, queued_min=1)
        tx.add_run(dataclasses.replace(run, priority=-3, admin_priority=7))
        tx.set_runs({"run_q": {"waiting": "quota: 2 of 2 active runs"}})
    with store.read() as tx:
        got = tx.get_run("run_q")
        assert got is not None
        assert (got.priority, got.admin_priority, got.waiting) == (
            -3,
            7,
            "quota: 2 of 2 active runs",
        )
        assert [r.admin_priority for r in tx.queued_runs(exclude_owners=[], unowned=True)] == [7]
    with store.write() as tx:
        tx.set_runs({"run_q": {"waiting": None, "state": RunState.RUNNING}})
    with store.read() as tx:
        got = tx.get_run("run_q")
        assert got is not None and got.waiting is None


def test_usage_adds_up_decayed_per_user_and_goes_with_the_user(store: Store) -> None:
    hour = 3600.0
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        tx.add_usage({"u_alice": 100.0, "u_bob": 8.0, "u_gone": 5.0}, T0, hour)
    later = T0 + timedelta(hours=1)
    with store.write() as tx:
        tx.add_usage({"u_alice": 50.0}, later, hour)  # 100 halved, plus 50
    with store.read() as tx:
        found = tx.list_usage()
    assert set(found) == {"u_alice", "u_bob"}  # no usage for a user that is not there
    assert found["u_alice"][0] == pytest.approx(100.0) and found["u_alice"][1] == later
    assert found["u_bob"] == (pytest.approx(8.0), T0)
    with store.write() as tx:
        tx.delete_user("u_bob")
    with store.read() as tx:
        assert set(tx.list_usage()) == {"u_alice"}

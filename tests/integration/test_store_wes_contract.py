"""The store queries of the WES API, on every backend (fake, SQLite, PostgreSQL)."""

from __future__ import annotations

from flowdeck.domain.runs import Run, RunState
from flowdeck.store import Store
from tests.integration.test_store_contract import T0, store, user, workflow

__all__ = ["store"]  # the fixture, parametrised over the backends


def test_runs_are_counted_by_state_per_owner(store: Store) -> None:
    with store.write() as tx:
        tx.add_user(user("alice"))
        tx.add_user(user("bob"))
        tx.add_workflow(workflow("wf_1", "alice"))
        for rid, owner, state in [
            ("run_1", "u_alice", RunState.RUNNING),
            ("run_2", "u_alice", RunState.SUCCEEDED),
            ("run_3", "u_alice", RunState.SUCCEEDED),
            ("run_4", "u_bob", RunState.FAILED),
        ]:
            tx.add_run(Run(rid, owner, "wf_1", "alice/wf@1", state, T0, T0))
    with store.read() as tx:
        assert tx.count_runs_by_state("u_alice") == {
            RunState.RUNNING: 1,
            RunState.SUCCEEDED: 2,
        }
        assert tx.count_runs_by_state("u_bob") == {RunState.FAILED: 1}
        assert tx.count_runs_by_state("u_nobody") == {}
        assert sum(tx.count_runs_by_state(None).values()) == 4

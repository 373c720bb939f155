"""The operators' summaries (metrics, ``flowdeck admin status``) on every store backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.runs import Run, RunState, StepRecord, StepState
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

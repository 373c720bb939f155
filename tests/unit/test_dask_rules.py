"""The Dask executor's rules that need no cluster: its settings, who may use it, secrets
only over TLS, why a step waits, and how an exit record reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowdeck.config import Settings
from flowdeck.domain.spec import WorkflowSpec
from flowdeck.errors import PermissionDenied
from flowdeck.executors.dask import outcome_of, waiting_reason
from flowdeck.services.run_resources import (
    check_dask_user,
    check_resources,
    dask_secret_problems,
)


def settings(tmp_path: Path, **more: object) -> Settings:
    return Settings(data_dir=tmp_path, **more)  # type: ignore[arg-type]


def test_dask_needs_a_scheduler_and_tls_files_need_tls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dask = true needs dask_scheduler"):
        settings(tmp_path, dask=True)
    with pytest.raises(ValueError, match="default_executor = dask needs dask = true"):
        settings(tmp_path, default_executor="dask")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ValueError, match="dask_tls_\\* are for a tls:// dask_scheduler"):
        settings(tmp_path, dask=True, dask_scheduler="tcp://h:8786", dask_tls_ca_file=ca)
    with pytest.raises(ValueError, match="dask_worker_user must not be root"):
        settings(tmp_path, dask=True, dask_scheduler="tcp://h:8786", dask_worker_user="root")
    with pytest.raises(ValueError, match="dask_scheduler"):
        settings(tmp_path, dask=True, dask_scheduler="h:8786")  # no scheme
    ok = settings(tmp_path, dask=True, dask_scheduler="tls://h:8786", dask_tls_ca_file=ca)
    assert check_resources(ok, {"executor": "dask"})["executor"] == "dask"


def test_the_executor_is_offered_only_where_enabled(tmp_path: Path) -> None:
    from flowdeck.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"executor must be one of local, inprocess$"):
        check_resources(settings(tmp_path), {"executor": "dask"})


def test_dask_users_enable_it_per_user(tmp_path: Path) -> None:
    s = settings(tmp_path, dask=True, dask_scheduler="tcp://h:1", dask_users="ann, bob")
    assert s.dask_users == ["ann", "bob"]
    check_dask_user(s, "dask", "ann", admin=False)
    check_dask_user(s, "dask", "carl", admin=True)  # admins always may
    check_dask_user(s, "local", "carl", admin=False)
    with pytest.raises(PermissionDenied, match="not enabled for user 'carl'"):
        check_dask_user(s, "dask", "carl", admin=False)
    everyone = settings(tmp_path, dask=True, dask_scheduler="tcp://h:1")
    check_dask_user(everyone, "dask", "carl", admin=False)


def test_steps_with_secrets_go_to_a_tls_scheduler_only(tmp_path: Path) -> None:
    spec = WorkflowSpec.model_validate(
        {
            "name": "w",
            "version": "1",
            "steps": {
                "plain": {"run": ["true"]},
                "secret": {"run": ["true"], "secrets": [{"name": "tok", "env": "TOK"}]},
            },
        }
    )
    tcp = settings(tmp_path, dask=True, dask_scheduler="tcp://h:1")
    problems = dask_secret_problems(tcp, "dask", spec)
    assert [p["step"] for p in problems] == ["secret"]
    assert "secrets go to Dask workers only over TLS" in problems[0]["message"]
    assert dask_secret_problems(tcp, "local", spec) == []
    tls = settings(tmp_path, dask=True, dask_scheduler="tls://h:1")
    assert dask_secret_problems(tls, "dask", spec) == []


def test_why_a_step_waits() -> None:
    request = {"cpus": 4.0, "memory": 2.0 * 2**30}
    assert waiting_reason(None, request) == "the Dask scheduler cannot be reached"
    assert waiting_reason([], request) == "no Dask worker is connected"
    small = [{"cpus": 2.0, "memory": 8.0 * 2**30}, {"cpus": 8.0, "memory": 2**30}]
    assert waiting_reason(small, request) == "no Dask worker offers cpus=4, memory=2147483648"
    assert waiting_reason([*small, {"cpus": 4.0, "memory": 4.0 * 2**30}], request) is None
    assert waiting_reason([{"cpus": 2}], {"cpus": 0.5}) is None


def test_how_an_exit_record_reads() -> None:
    ok = outcome_of({"exit_code": 0, "started": 10.0, "ended": 12.5, "max_rss_kb": 7})
    assert ok.ok and ok.wall_s == 2.5 and ok.max_rss_kb == 7
    assert outcome_of({"exit_code": 3}).exit_code == 3
    signalled = outcome_of({"exit_code": None, "signal": 15})
    assert signalled.signal == 15 and signalled.exit_code is None
    timed = outcome_of({"exit_code": None, "signal": 15, "timed_out": True})
    assert timed.timed_out and not timed.ok
    lost = outcome_of({"exit_code": None, "lost": True, "error": "its worker died"})
    assert lost.lost and lost.error == "its worker died"
    refused = outcome_of({"exit_code": 126, "error": "no root"})
    assert refused.exit_code == 126 and refused.error == "no root" and not refused.ok


def test_a_default_dask_executor_falls_back_for_users_not_enabled(tmp_path: Path) -> None:
    from flowdeck.domain.accounts import Role
    from flowdeck.domain.privilege import Actor
    from flowdeck.services.context import make_context
    from flowdeck.store.fake import FakeStore

    s = settings(
        tmp_path,
        dask=True,
        dask_scheduler="tcp://h:1",
        dask_users="ann",
        default_executor="dask",
    )
    runs = make_context(s, FakeStore()).runs
    ann = Actor(user_id="u1", username="ann", role=Role.USER)
    carl = Actor(user_id="u2", username="carl", role=Role.USER)
    assert runs._check_resources(ann, {})["executor"] == "dask"
    assert runs._check_resources(carl, {})["executor"] == "local"
    with pytest.raises(PermissionDenied):
        runs._check_resources(carl, {"executor": "dask"})

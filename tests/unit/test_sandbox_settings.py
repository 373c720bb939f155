"""The sandbox's settings and the pieces of its command that need no server."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import pytest

from flowdeck.errors import ConfigError
from flowdeck.executors.base import Launch
from flowdeck.executors.cgroups import Cgroups, describe
from flowdeck.executors.cwlpool import split_spec
from flowdeck.executors.group import limits_for
from flowdeck.executors.runbox import box_spec
from flowdeck.executors.sandbox import exit_signal, parse_uids, plan
from tests.helpers import make_settings


def test_step_uids_is_a_range_above_the_system_accounts(tmp_path: Path) -> None:
    assert parse_uids("900000-900999") == (900000, 900999)
    assert parse_uids("") is None
    assert make_settings(tmp_path, step_uids="").step_uids == ""
    for bad in ("0-10", "900999-900000", "many"):
        with pytest.raises(ConfigError, match="step_uids"):
            make_settings(tmp_path, step_uids=bad)


def test_the_sandbox_settings_and_their_defaults(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    assert (s.sandbox, s.step_network, s.step_env_passthrough) == ("bwrap", "off", ["PATH"])
    assert s.step_user == "flowdeck-step" and s.sandbox_extra_rw == []
    assert s.sandbox_scope == "run" and s.step_cgroups == "auto" and s.sandbox_extra_ro == []
    s = make_settings(tmp_path, sandbox_extra_ro="/opt/conda, /opt/tools")
    assert s.sandbox_extra_ro == [Path("/opt/conda"), Path("/opt/tools")]
    s = make_settings(tmp_path, step_env_passthrough="PATH, LANG", sandbox_extra_rw="/srv/a")
    assert s.step_env_passthrough == ["PATH", "LANG"] and s.sandbox_extra_rw == [Path("/srv/a")]
    with pytest.raises(ConfigError, match="sandbox"):
        make_settings(tmp_path, sandbox="maybe")


def test_no_setting_may_show_the_data_dir_to_steps(tmp_path: Path) -> None:
    for name, value in (
        ("data_root", tmp_path),
        ("sandbox_extra_ro", [tmp_path]),
        ("sandbox_extra_rw", [tmp_path]),
    ):
        with pytest.raises(ConfigError, match=f"{name} must not hold data_dir"):
            make_settings(tmp_path / "data", **{name: value})
    assert make_settings(tmp_path / "data", data_root=tmp_path, sandbox="off").data_root


def test_bwraps_exit_code_for_a_signal_is_read_back() -> None:
    assert exit_signal(128 + signal.SIGXCPU) == signal.SIGXCPU
    assert exit_signal(128 + signal.SIGKILL) == signal.SIGKILL
    assert exit_signal(1) is None and exit_signal(128) is None and exit_signal(255) is None


def test_what_bounds_a_step_is_said_for_the_host(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
    text = describe("900000-900999", mounts=str(mounts))
    assert text.startswith("rlimits: CPU time, address space, file size, processes (per ")
    assert text.endswith("; no cgroup v2 here")
    assert describe("", enabled=False).endswith("; no cgroups (step_cgroups = off)")


def test_an_attempts_cgroup_gets_the_limits_its_controllers_allow(tmp_path: Path) -> None:
    """memory.max and pids.max where the subtree has those controllers (a directory laid
    out as cgroupfs: this host has no cgroup v2 controllers to try them on)."""
    both = Cgroups(tmp_path / "both", frozenset({"memory", "pids"}))
    both.base.mkdir()
    group = both.attempt("run/s/0/1", memory_bytes=1 << 20, max_processes=7)
    assert group is not None and group.path.parent == both.base
    assert (group.path / "memory.max").read_text() == str(1 << 20)
    assert (group.path / "pids.max").read_text() == "7"
    assert group.memory_max == 1 << 20
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_killed()
    none = Cgroups(tmp_path / "none", frozenset())
    none.base.mkdir()
    bare = none.attempt("run/s/0/1", memory_bytes=1 << 20, max_processes=7)
    assert bare is not None and bare.memory_max is None
    assert sorted(p.name for p in bare.path.iterdir()) == []
    assert not bare.oom_killed()


def test_a_run_sandbox_serves_only_steps_like_its_own(tmp_path: Path) -> None:
    work = tmp_path / "work"
    spec = plan(
        ro=[work, tmp_path / "inputs"],
        rw=[work / "a", tmp_path / "tmp"],
        grant=[tmp_path / "inputs"],
        deny=[],
        network=False,
        step_user="flowdeck-step",
        step_uids=None,
        max_processes=None,
        work=work,
        box=True,
    )
    box = box_spec(spec, work / "a")
    assert box is not None
    assert box["rw"] == [str(work), str(tmp_path / "tmp")]  # the run's work folder, writable
    assert box["ro"] == [str(tmp_path / "inputs")] and box["grant"] == []
    assert box_spec({**spec, "rw": [str(work / "b"), *spec["rw"][1:]]}, work / "b") == box
    assert box_spec({**spec, "network": True}, work / "a") is None  # a namespace of its own
    assert box_spec({**spec, "box": False}, work / "a") is None  # a one-step run
    assert box_spec(spec, tmp_path / "elsewhere") is None


def test_a_warm_cwltool_worker_shows_no_run_and_each_fork_only_its_own() -> None:
    data = Path("/srv/flowdeck")
    run = data / "runs" / "run_1"
    spec = plan(
        ro=[run / "work", run / "inputs", data / "workflows" / "wf_1", Path("/opt/tools")],
        rw=[run / "work" / "cwl", run / "tmp"],
        grant=[run / "inputs"],
        deny=[data],
        network=False,
        step_user="flowdeck-step",
        step_uids=(900000, 900009),
        max_processes=None,
        work=run / "work",
        warm=1,
    )
    split = split_spec(spec)
    assert split is not None
    worker, root, own = split
    assert root == str(data)
    # the worker's sandbox: what every step sees, nothing of the data directory
    assert worker["ro"] == ["/opt/tools"] and worker["rw"] == [] and worker["grant"] == []
    # a run's fork: its own folders, shallow first, read-only before writable at a depth
    assert own == [
        (str(data / "workflows" / "wf_1"), True),
        (str(run / "work"), True),
        (str(run / "inputs"), True),
        (str(run / "tmp"), False),
        (str(run / "work" / "cwl"), False),
    ]
    # the run of another user gets another view from the same worker
    other = json.loads(json.dumps(spec).replace("run_1", "run_2"))
    split2 = split_spec(other)
    assert split2 is not None and split2[0] == worker and split2[2] != own
    assert split_spec({**spec, "network": True}) is None  # a network namespace of its own
    assert split_spec({**spec, "uids": None}) is None  # runs of one uid could signal each other
    assert split_spec({**spec, "ro": [*spec["ro"], "/tmp/tools"]}) is None  # under a fresh /tmp


def test_a_warm_worker_keeps_its_own_code_under_tmp_in_each_runs_view(tmp_path: Path) -> None:
    """A checkout (and its virtual environment) under /tmp is bound into the warm cwltool
    worker's view there; each run's fresh /tmp would hide it, so its outermost mounts
    under /tmp and /dev/shm are attached again (mountinfo escapes decoded)."""
    from flowdeck.executors.zygote import kept_mounts

    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:20 / / ro - tmpfs tmpfs rw\n"
        "30 22 8:1 /usr /usr ro - ext4 /dev/sda1 ro\n"
        "31 22 0:30 / /tmp rw - tmpfs tmpfs rw\n"
        "32 31 8:1 /tmp/tmp.X/c/.venv /tmp/tmp.X/c/.venv ro - ext4 /dev/sda1 ro\n"
        "33 32 8:1 /x /tmp/tmp.X/c/.venv/lib ro - ext4 /dev/sda1 ro\n"
        "34 31 8:1 /tmp/tmp.X/c/src /tmp/tmp.X/c/src ro - ext4 /dev/sda1 ro\n"
        "35 22 0:31 /a /dev/shm/my\\040lab ro - tmpfs tmpfs rw\n"
    )
    assert kept_mounts(str(info)) == [
        "/dev/shm/my lab",
        "/tmp/tmp.X/c/.venv",
        "/tmp/tmp.X/c/src",
    ]


def test_the_process_limit_is_a_sandboxed_steps_not_the_servers_users(tmp_path: Path) -> None:
    def launch(sandbox: dict[str, object] | None) -> Launch:
        return Launch(
            key="run_1/s/-1/1",
            cwd=tmp_path,
            env={},
            stdout=tmp_path / "out",
            stderr=tmp_path / "err",
            argv=("/bin/true",),
            max_processes=7,
            sandbox=sandbox,
        )

    boxed = dict(limits_for(launch({"box": False})))
    assert boxed[resource.RLIMIT_NPROC] == (7, 7)  # per attempt uid, in its sandbox
    # Without the sandbox the step runs as the server's user: a limit on that user's
    # processes would count the server's own (and costs each start a fork).
    assert resource.RLIMIT_NPROC not in dict(limits_for(launch(None)))

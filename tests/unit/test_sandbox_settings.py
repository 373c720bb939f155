"""The sandbox's settings and the pieces of its command that need no server."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from flowdeck.errors import ConfigError
from flowdeck.executors.runbox import box_spec
from flowdeck.executors.sandbox import exit_signal, host_cgroups, parse_uids, plan
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
    s = make_settings(tmp_path, step_env_passthrough="PATH, LANG", sandbox_extra_rw="/srv/a")
    assert s.step_env_passthrough == ["PATH", "LANG"] and s.sandbox_extra_rw == [Path("/srv/a")]
    with pytest.raises(ConfigError, match="sandbox"):
        make_settings(tmp_path, sandbox="maybe")


def test_no_setting_may_show_the_data_dir_to_steps(tmp_path: Path) -> None:
    for name, value in (("data_root", tmp_path), ("sandbox_extra_rw", [tmp_path])):
        with pytest.raises(ConfigError, match=f"{name} must not hold data_dir"):
            make_settings(tmp_path / "data", **{name: value})
    assert make_settings(tmp_path / "data", data_root=tmp_path, sandbox="off").data_root


def test_bwraps_exit_code_for_a_signal_is_read_back() -> None:
    assert exit_signal(128 + signal.SIGXCPU) == signal.SIGXCPU
    assert exit_signal(128 + signal.SIGKILL) == signal.SIGKILL
    assert exit_signal(1) is None and exit_signal(128) is None and exit_signal(255) is None


@pytest.mark.parametrize(
    ("lines", "kind"),
    [
        (["cgroup2 /sys/fs/cgroup cgroup2 rw 0 0"], "v2"),
        (["cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0", "cgroup2 /u cgroup2 rw 0 0"], "v1"),
        (["proc /proc proc rw 0 0"], "none"),
    ],
)
def test_which_cgroups_the_host_has(tmp_path: Path, lines: list[str], kind: str) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("\n".join(lines) + "\n")
    assert host_cgroups(str(mounts)) == kind


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

"""The sandbox's settings and the pieces of its command that need no server."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from flowdeck.errors import ConfigError
from flowdeck.executors.sandbox import exit_signal, parse_uids
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

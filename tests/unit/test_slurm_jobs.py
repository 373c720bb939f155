"""The pure half of the Slurm executor: sbatch's command line, squeue/sacct output, and how
an ended job's attempt ended."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from flowdeck.executors.base import Launch
from flowdeck.executors.slurm_jobs import (
    ACTIVE,
    Files,
    JobOptions,
    JobState,
    check_user_options,
    outcome_of,
    parse_job_id,
    parse_sacct,
    parse_squeue,
    sbatch_argv,
    time_limit,
    waiting_reason,
    write_array,
    write_attempt,
)

# Recorded from Slurm 22.05 (tests/slurmcluster.py's cluster): `squeue -h --states=all
# --name=fdrec -o '%i|%T|%r|%k'` after four submissions (one asking for more memory than
# the node has, one for both CPUs while another job holds one, one exiting 1).
SQUEUE_RECORDED = """\
2|FAILED|BadConstraints|run_x/b/2/1
4|FAILED|NonZeroExitCode|run_x/d/-1/1
3|PENDING|Resources|run_x/c/-1/1
1|RUNNING|None|run_x/a/-1/1
"""

# Slurm's own formats for what a one-node cluster without cgroups cannot produce: an
# out-of-memory kill, a failed node, a preempted and requeued job, a timeout, a cancel.
SQUEUE_MORE = """\
11|OUT_OF_MEMORY|OutOfMemory|run_y/big/-1/1
12|NODE_FAIL|NodeDown|run_y/far/0/2
13|PENDING|BeginTime|run_y/again/-1/1
16|PREEMPTED|None|run_y/bumped/-1/1
17|REQUEUED|Prolog|run_y/back/-1/1
18|PENDING|None|run_y/fresh/-1/1
14|TIMEOUT|TimeLimit|run_y/slow/-1/1
15|CANCELLED|None|run_y/gone/-1/1
"""

# `sacct -n -P -X -o JobID,State,Reason,Comment` (with accounting): "CANCELLED by UID"
# and the job steps sacct lists without -X.
SACCT = """\
21|COMPLETED|None|run_z/a/-1/1
21.batch|COMPLETED||
22|CANCELLED by 1000|None|run_z/b/-1/1
23|OUT_OF_MEMORY|None|run_z/c/-1/1
24|NODE_FAIL|None|run_z/d/-1/1
"""


def test_squeue_recorded() -> None:
    jobs = parse_squeue(SQUEUE_RECORDED)
    assert jobs["3"] == JobState("3", "PENDING", "Resources", "run_x/c/-1/1")
    assert jobs["1"] == JobState("1", "RUNNING", "", "run_x/a/-1/1")
    assert {j for j, s in jobs.items() if s.state in ACTIVE} == {"1", "3"}
    failed = outcome_of(None, jobs["2"], None)
    assert failed.lost and failed.error is not None and "BadConstraints" in failed.error


def test_state_mapping() -> None:
    jobs = parse_squeue(SQUEUE_MORE)
    oom = outcome_of(None, jobs["11"], None)
    assert oom.exit_code is None and not oom.lost and "out of memory in Slurm" in str(oom.error)
    node = outcome_of(None, jobs["12"], None)
    assert node.lost and "node failed" in str(node.error) and "NodeDown" in str(node.error)
    assert jobs["13"].state in ACTIVE  # preempted and requeued: pending again, not ended
    timeout = outcome_of(None, jobs["14"], None)
    assert timeout.timed_out and not timeout.ok
    cancelled = outcome_of(None, jobs["15"], None)
    assert cancelled.error == "cancelled in Slurm" and not cancelled.lost
    # flowdeck's own stop or kill, when the wrapper could not write its exit file
    assert outcome_of(None, jobs["15"], "stop").signal == signal.SIGTERM
    assert outcome_of(None, jobs["15"], "kill").signal == signal.SIGKILL
    gone = outcome_of(None, None, None)
    assert gone.lost and gone.error == "its Slurm job is gone and left no exit file"


def test_a_waiting_job_is_a_pending_step_with_slurms_reason() -> None:
    """Pending, preempted or requeued in Slurm: the step is pending, with why; running,
    suspended or ended: it does not wait."""
    jobs = {**parse_squeue(SQUEUE_RECORDED), **parse_squeue(SQUEUE_MORE)}
    assert waiting_reason(jobs["3"]) == "Resources"
    assert waiting_reason(jobs["13"]) == "BeginTime"  # requeued after a preemption
    assert waiting_reason(jobs["16"]) == "preempted"
    assert waiting_reason(jobs["17"]) == "requeued: Prolog"
    assert waiting_reason(jobs["18"]) == "pending"  # before Slurm gave a reason
    assert all(waiting_reason(jobs[j]) is None for j in ("1", "2", "11", "12", "14", "15"))
    assert waiting_reason(JobState("9", "SUSPENDED")) is None


def test_out_of_memory_and_node_failure_with_an_exit_file() -> None:
    """The step was killed (137) and Slurm's state says why: out of memory (failed, the
    reason said) or its node failed (lost: retried per the step's policy); a step that
    ended well first is not blamed."""
    jobs = {**parse_squeue(SQUEUE_MORE), **parse_sacct(SACCT)}
    killed = {"exit_code": 137, "started": 1.0, "ended": 3.0, "ended_by": ""}
    oom = outcome_of(killed, jobs["11"], None)
    assert not oom.ok and not oom.lost and oom.signal == signal.SIGKILL
    assert oom.error == "out of memory in Slurm (OutOfMemory)" and oom.wall_s == 2.0
    assert outcome_of(killed, jobs["23"], None).error == "out of memory in Slurm"  # sacct
    node = outcome_of(killed, jobs["12"], None)
    assert node.lost and node.error == "its Slurm node failed (NodeDown)"
    assert outcome_of({**killed, "exit_code": 0}, jobs["11"], None).ok
    assert outcome_of(killed, jobs["11"], "kill").error is None  # flowdeck's own kill


def test_sacct() -> None:
    jobs = parse_sacct(SACCT)
    assert set(jobs) == {"21", "22", "23", "24"}
    assert jobs["22"].state == "CANCELLED" and jobs["22"].key == "run_z/b/-1/1"
    assert outcome_of(None, jobs["22"], None).error == "cancelled in Slurm"
    assert outcome_of(None, jobs["24"], None).lost
    assert parse_sacct("Slurm accounting storage is disabled\n") == {}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"exit_code": 0, "ended_by": ""}, (0, None, False, None)),
        ({"exit_code": 3, "ended_by": ""}, (3, None, False, None)),
        ({"exit_code": 137, "ended_by": ""}, (None, 9, False, None)),
        ({"exit_code": 143, "ended_by": "flowdeck"}, (None, 15, False, None)),
        ({"exit_code": 143, "ended_by": "timeout"}, (None, 15, True, None)),
        ({"exit_code": 143, "ended_by": "slurm"}, (None, 15, False, "cancelled in Slurm")),
        (
            {"exit_code": -1, "ended_by": ""},
            (None, None, False, "the job wrapper lost the exit status"),
        ),
    ],
)
def test_exit_file(record: dict[str, object], expected: tuple[object, ...]) -> None:
    outcome = outcome_of({**record, "started": 10.0, "ended": 12.5}, None, None)
    assert (outcome.exit_code, outcome.signal, outcome.timed_out, outcome.error) == expected
    assert outcome.wall_s == (2.5 if 0 <= int(str(record["exit_code"])) <= 255 else 0.0)


def test_sbatch_command_line(tmp_path: Path) -> None:
    lc = Launch(
        key="run_x/align/3/2",
        cwd=tmp_path,
        env={"SECRET": "s3cr3t"},
        stdout=tmp_path / "align.3.2.stdout",
        stderr=tmp_path / "align.3.2.stderr",
        argv=("echo", "s3cr3t-arg"),
        cpus=1.5,
        memory_bytes=3 * 2**30 + 1,
        walltime_s=61,
    )
    files = write_attempt(lc, list(lc.argv), grace_s=5)
    opts = JobOptions(job_name="fd-prod", partition="short", account="lab", qos="low")
    argv = sbatch_argv("/opt/slurm/bin/sbatch", lc, files, opts)
    assert argv[0] == "/opt/slurm/bin/sbatch"
    for flag in (
        "--job-name=fd-prod",
        "--comment=run_x/align/3/2",
        "--export=NONE",
        "--cpus-per-task=2",
        "--mem=3073M",
        "--time=3",
        "--partition=short",
        "--account=lab",
        "--qos=low",
    ):
        assert flag in argv
    assert argv[-1] == str(files.path("sh"))
    assert not any("s3cr3t" in arg for arg in argv)  # environment and arguments: files only
    for what in ("env", "argv"):
        assert files.path(what).stat().st_mode & 0o777 == 0o600
    assert files.path("env").read_bytes() == b"SECRET=s3cr3t\0"
    assert "s3cr3t" not in files.path("sh").read_text()


def test_time_limit_rounds_up_to_whole_minutes() -> None:
    assert [time_limit(s) for s in (1, 60, 61, 3600)] == [2, 2, 3, 61]


def test_job_ids() -> None:
    assert parse_job_id("123\n") == "123"
    assert parse_job_id("124;cluster\n") == "124"
    with pytest.raises(ValueError, match="no job id"):
        parse_job_id("sbatch: error: nope")


def test_files_next_to_the_logs(tmp_path: Path) -> None:
    files = Files.of(tmp_path / "logs" / "align.3.2.stdout")
    assert files.path("exit") == tmp_path / "logs" / "align.3.2.slurm.exit"
    assert files.job_id() is None and files.exit_record() is None and files.stop_asked() is None


def test_sbatch_errors_worth_a_retry() -> None:
    from flowdeck.executors.slurm import unreachable

    down = (
        "sbatch: error: Batch job submission failed: "
        "Unable to contact slurm controller (connect failure)"
    )
    assert unreachable(down)
    assert not unreachable("sbatch: error: invalid partition specified: nope")
    assert not unreachable(
        "sbatch: error: Batch job submission failed: Requested node configuration is not available"
    )


def test_the_last_seen_state_is_kept_for_the_api(tmp_path: Path) -> None:
    files = Files.of(tmp_path / "main.1.stdout")
    assert files.seen_state() is None
    files.note_state("PENDING", "Resources")
    assert files.seen_state() == ("PENDING", "Resources")
    files.note_state("RUNNING", "")
    assert files.seen_state() == ("RUNNING", "")


# `scontrol show config` (Slurm 22.05), the lines that matter here
CONFIG = """\
SlurmctldTimeout        = 30 sec
SlurmUser               = slurm(64030)
SlurmdUser              = root(0)
"""


def test_who_may_suspend_jobs() -> None:
    from flowdeck.executors.slurm import may_suspend

    assert may_suspend(CONFIG, 0, "root")
    assert may_suspend(CONFIG, 64030, "slurm")
    assert not may_suspend(CONFIG, 1000, "flowdeck")  # a freeze is refused (409)
    assert not may_suspend("", 1000, "slurm")


def test_a_cancel_seen_by_the_step_before_the_wrapper() -> None:
    """Slurm's TERM can end the step before the wrapper's trap runs (no ended_by): the
    job's CANCELLED state says it was cancelled in Slurm, unless flowdeck asked."""
    record = {"exit_code": 143, "ended_by": "", "started": 1.0, "ended": 2.0}
    cancelled = JobState("9", "CANCELLED", "", "r/a/-1/1")
    assert outcome_of(record, cancelled, None).error == "cancelled in Slurm"
    assert outcome_of(record, cancelled, "stop").error is None
    assert outcome_of(record, JobState("9", "COMPLETED"), None).error is None


def test_a_runs_own_sbatch_options(tmp_path: Path) -> None:
    """Options the admin allows come after flowdeck's, one argument each (no shell); a
    run's partition replaces the admin's default; anything else is refused by name."""
    lc = Launch(
        key="r/s/-1/1",
        cwd=tmp_path,
        env={},
        stdout=tmp_path / "s.1.stdout",
        stderr=tmp_path / "s.1.stderr",
        argv=("true",),
        slurm_options={"constraint": "avx2&ib", "exclusive": True, "partition": "big"},
    )
    opts = JobOptions(job_name="fd", partition="small", qos="normal")
    argv = sbatch_argv("sbatch", lc, Files.of(lc.stdout), opts)
    assert argv[-5:-1] == ["--qos=normal", "--constraint=avx2&ib", "--exclusive", "--partition=big"]
    assert "--partition=small" not in argv
    allowed = ["constraint", "exclusive"]
    assert check_user_options({"constraint": "x", "exclusive": True}, allowed) == []
    assert check_user_options({"gres": "gpu:1"}, allowed) == [
        "sbatch option 'gres' is not allowed on this server (allowed: constraint, exclusive)"
    ]
    [bad] = check_user_options({"constraint": "a\nb"}, allowed)
    assert "printable" in bad


def test_a_scatter_as_one_job_array(tmp_path: Path) -> None:
    """Three instances of a foreach step: one array (--array=0-2%2), task i runs element
    i's wrapper, each element knows its array and task (to be found again after a
    restart)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    launches = [
        Launch(
            key=f"run_a/each/{i}/1",
            cwd=tmp_path,
            env={},
            stdout=logs / f"each[{i}].1.stdout",
            stderr=logs / f"each[{i}].1.stderr",
            argv=("true",),
            foreach_limit=2,
        )
        for i in range(3)
    ]
    members = [write_attempt(lc, list(lc.argv), 1.0) for lc in launches]
    array = write_array(launches, members, 2)
    assert array.comment.startswith("run_a/each/array/") and array.size == 3
    argv = sbatch_argv("sbatch", launches[0], members[0], JobOptions("fd"), array)
    assert argv[-2:] == ["--array=0-2%2", str(array.script)]
    assert f"--comment={array.comment}" in argv and f"--output={array.log}" in argv
    script = array.script.read_text()
    assert all(str(f.path("sh")) in script for f in members)
    assert [f.array_task() for f in members] == [(array.comment, str(i)) for i in range(3)]


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv to another uid needs root")
def test_a_node_without_bubblewrap_still_drops_to_the_step_user(tmp_path: Path) -> None:
    """The wrapper run as a job would on a node without bwrap (not on its PATH): the step
    runs without the sandbox, said in the wrapper's output, but still as the step user
    (setpriv after bwrap's "--" stays)."""
    step = pwd.getpwnam("flowdeck-step")
    bin_dir = tmp_path / "bin"  # the node's commands, bwrap missing
    bin_dir.mkdir()
    for name in ("setsid", "env", "mv", "hostname", "id", "setpriv", "sleep", "touch"):
        (bin_dir / name).symlink_to(f"/usr/bin/{name}")
    lc = Launch(
        key="r/s/-1/1",
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        stdout=tmp_path / "s.1.stdout",
        stderr=tmp_path / "s.1.stderr",
        argv=("id", "-u"),
    )
    box = ["/nowhere/bwrap", "--unshare-pid", "--", "/usr/bin/setpriv"]
    box += [f"--reuid={step.pw_uid}", f"--regid={step.pw_gid}", "--clear-groups", "--"]
    files = write_attempt(lc, list(lc.argv), 1.0, box)
    done = subprocess.run(
        ["/bin/bash", str(files.path("sh"))],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "no bubblewrap on" in done.stderr and "without its sandbox" in done.stderr
    assert lc.stdout.read_text().strip() == str(step.pw_uid)
    assert outcome_of(files.exit_record(), None, None).ok

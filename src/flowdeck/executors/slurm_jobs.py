"""The pure half of the Slurm executor: an attempt's files, its job wrapper and ``sbatch``
command line, and what ``squeue``, ``sacct`` and the wrapper's exit file say.

An attempt whose logs are ``logs/<label>.<attempt>.stdout|stderr`` keeps, next to them:

``.slurm.env``   its environment (NUL-separated ``NAME=value``, mode 0600: never on a
                 command line), read by the wrapper, which starts the step with it alone;
                 removed when the attempt ended (it may hold secrets)
``.slurm.argv``  its program and arguments (NUL-separated, 0600; removed likewise)
``.slurm.sh``    the job wrapper (below)
``.slurm.job``   the Slurm job id, written once ``sbatch`` answered
``.slurm.stop``  flowdeck asked it to stop (``stop``) or to end now (``kill``)
``.slurm.exit``  written by the wrapper when the step ended: exit status and timing
``.slurm.log``   the wrapper's own output (Slurm's ``--output``)
``.slurm.state`` Slurm's state and reason as the last poll saw them (``PENDING|Resources``),
                 written when they change, for the API
``.slurm.box``   the step sandbox's command (bubblewrap and its options, NUL-separated),
                 which the wrapper puts before the step where the node has bubblewrap
``.slurm.array`` an element of a job array: the array's comment and its task number
                 (``run/step/array/tag|3``), written before the array is submitted

The instances of a ``foreach`` step started together become one job array
(``<step>.<tag>.array.sh`` runs task i's wrapper; ``--array=0-N%limit``), each task one
element with its own files as above; a task's job id is ``<array id>_<task>``.

So how an attempt ended never depends on Slurm's accounting, and a restarted server finds
its jobs (and the ends it missed) from the run folder alone.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from flowdeck.executors.attempt_files import AttemptFiles
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.sandbox import PASTA_OPTIONS

SUFFIXES = ("env", "argv", "sh", "job", "stop", "exit", "log", "state", "array", "box")

# squeue/sacct states: still to end, and ended
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
ACTIVE = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
    | WAITING
    | {"PREEMPTED", "RESIZING"}
)
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
QUEUED = WAITING | {"PREEMPTED"}  # a flowdeck step is pending again while its job is so
# sbatch options a run may add where the admin allows them (slurm_user_options): long
# names only; never those flowdeck sets itself (its jobs' name, comment, environment,
# folders and logs, the step's resources) nor those that would change what a job is.
SBATCH_OPTION = r"[a-z][a-z0-9-]{0,39}"
RESERVED_OPTIONS = frozenset(
    {
        "job-name", "comment", "export", "export-file", "chdir", "output", "error", "input",
        "open-mode", "parsable", "wrap", "array", "dependency", "wait", "test-only", "uid",
        "gid", "get-user-env", "cpus-per-task", "mem", "time", "nodes", "ntasks", "batch",
        "container", "help", "usage", "version", "kill-on-invalid-dep", "requeue",
        "no-requeue", "propagate", "hold",
    }
)  # fmt: skip
SQUEUE_FORMAT = "%i|%T|%r|%k"  # job id, state, reason, comment (the attempt key)


@dataclass(frozen=True, slots=True)
class Files(AttemptFiles):
    """The files of one attempt (see the module docstring)."""

    KIND: ClassVar[str] = "slurm"
    SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES

    @classmethod
    def of(cls, stdout: Path) -> Files:
        return cls(stdout.with_suffix(""))

    def job_id(self) -> str | None:
        return self.read("job") or None

    def stop_asked(self) -> str | None:
        text = self.read("stop")
        return None if text is None else text or "stop"

    def forget_run(self) -> None:
        """The job waits again (Slurm requeued it): what its last run left, its exit
        file and timeout mark, says nothing of how the attempt ends."""
        for name in (f"{self.base.name}.slurm.exit", f"{self.base.name}.slurm.timeout"):
            with contextlib.suppress(OSError):
                self.base.with_name(name).unlink(missing_ok=True)

    def note_state(self, state: str, reason: str) -> None:
        with contextlib.suppress(OSError):
            self.path("state").write_text(f"{state}|{reason}", encoding="utf-8")

    def seen_state(self) -> tuple[str, str] | None:
        """(state, reason) as the last poll saw them, if one did."""
        try:
            state, _, reason = self.path("state").read_text(encoding="utf-8").partition("|")
        except OSError:
            return None
        return (state, reason) if state else None

    def array_task(self) -> tuple[str, str] | None:
        """An element of a job array: (the array's comment, its task number)."""
        try:
            comment, _, task = self.path("array").read_text(encoding="utf-8").partition("|")
        except OSError:
            return None
        return (comment, task) if comment and task.isdigit() else None


def _nul_file(path: Path, items: list[str]) -> None:
    """Write ``items`` NUL-separated into a new file only its owner may read."""
    for item in items:
        if "\0" in item:
            raise ValueError("a NUL byte in the step's environment or arguments")
    path.unlink(missing_ok=True)
    fd = path.open("x", encoding="utf-8", newline="")
    try:
        path.chmod(0o600)
        fd.write("".join(item + "\0" for item in items))
    finally:
        fd.close()


def limits_lines(launch: Launch) -> list[str]:
    """``ulimit`` lines the wrapper applies before it starts the step."""
    lines = []
    if launch.cpu_seconds is not None:
        lines.append(f"ulimit -t {max(1, math.ceil(launch.cpu_seconds))}")
    if launch.file_size_bytes is not None:
        lines.append(f"ulimit -f {max(1, launch.file_size_bytes // 1024)}")
    if launch.max_processes is not None:
        lines.append(f"ulimit -u {launch.max_processes}")
    return lines


WRAPPER = r"""#!/bin/bash
# flowdeck's Slurm job wrapper for attempt {key}: starts the step with its own
# environment, in its own process group, and writes how it ended into {exit}.
set -u
B={base}
# a job Slurm requeued runs this again: what its earlier run left says nothing of this one
rm -f "$B.slurm.exit" "$B.slurm.timeout"
mapfile -d '' -t ENVV < "$B.slurm.env"
mapfile -d '' -t ARGV < "$B.slurm.argv"
BOX=()
if [ -s "$B.slurm.box" ]; then  # the step sandbox, where this node has bubblewrap
  mapfile -d '' -t BOX < "$B.slurm.box"
  if [ ! -x "${{BOX[0]}}" ]; then
    if bw=$(command -v bwrap); then
      BOX[0]=$bw
    else  # bwrap's part goes; what follows its "--" (setpriv to the step's uid) stays
      echo "flowdeck: no bubblewrap on $(hostname): the step runs without its sandbox" >&2
      rest=()
      past=""
      for a in "${{BOX[@]}}"; do
        if [ -n "$past" ]; then rest+=("$a"); elif [ "$a" = "--" ]; then past=1; fi
      done
      BOX=("${{rest[@]}}")
    fi
  fi
fi
started=$EPOCHREALTIME
ended_by=""
finish() {{
  printf '{{"exit_code": %s, "started": %s, "ended": %s, "ended_by": "%s", "job": "%s"}}\n' \
    "$1" "$started" "$EPOCHREALTIME" "$ended_by" "${{SLURM_JOB_ID:-}}" > "$B.slurm.exit.tmp"
  mv -f "$B.slurm.exit.tmp" "$B.slurm.exit"
  exit 0
}}
cd {cwd} || finish 126
{limits}
{start}on_term() {{
  if [ -e "$B.slurm.stop" ]; then ended_by=flowdeck; else ended_by=slurm; fi
  kill -TERM -- "-$child" 2>/dev/null
  kill -CONT -- "-$child" 2>/dev/null
}}
trap on_term TERM INT
{watchdog}
# A wait cut short by the trap says 128+15; the last wait then says how the step ended
# (bash may answer a status it lost as -1: the one before stands then).
rc=255
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
wait "$child"
w=$?
case $w in ''|*[!0-9]*) ;; *) [ "$w" -le 255 ] && rc=$w ;; esac
[ -n "${{dog:-}}" ] && kill "$dog" 2>/dev/null
{net_end}[ -e "$B.slurm.timeout" ] && ended_by=timeout
finish "$rc"
"""

START = """setsid env -i "${{ENVV[@]}}" "${{BOX[@]}}" "${{ARGV[@]}}" \\
  < {stdin} > {stdout} 2> {stderr} &
child=$!
"""

# A step with network in its sandbox: bwrap (given --info-fd 3 --block-fd 4) tells its
# child's pid through one FIFO and waits on the other until pasta is attached to the
# child's network namespace, as for a local step.  Where the node has no bubblewrap the
# step shares the node's network.
START_NETWORKED = r"""nd=""
if [ "${{BOX[0]:-}}" != "" ] && [ "${{BOX[0]##*/}}" = bwrap ]; then
  pasta=$(command -v pasta) || {{
    echo "flowdeck: network for steps needs pasta on $(hostname) (Debian package passt)" >&2
    finish 126
  }}
  nd=$(mktemp -d) && mkfifo "$nd/info" "$nd/block" || finish 126
fi
if [ -n "$nd" ]; then
  setsid env -i "${{ENVV[@]}}" "${{BOX[@]}}" "${{ARGV[@]}}" < {stdin} > {stdout} 2> {stderr} \
    3> "$nd/info" 4< "$nd/block" &
  child=$!
  exec 5< "$nd/info" 6> "$nd/block"
  info=""
  read -r -d '}}' -u 5 info || true
  runas=()
  [ "$(id -u)" = 0 ] && runas=(--runas 0)
  if ! [[ $info =~ \"child-pid\":\ *([0-9]+) ]] || ! "$pasta" {pasta} "${{runas[@]}}" \
      -P "$nd/pasta.pid" --netns /proc/self/fd/7 7< "/proc/${{BASH_REMATCH[1]}}/ns/net" \
      > /dev/null 2> "$nd/pasta.err"; then
    why=$(tail -n 1 "$nd/pasta.err" 2>/dev/null || echo "the sandbox did not start")
    echo "flowdeck: cannot give the step network: pasta: $why" >&2
    kill -KILL -- "-$child" 2>/dev/null
    exec 5<&- 6>&-
    wait "$child"
    rm -rf "$nd"
    finish 126
  fi
  ( echo 1 >&6 ) 2>/dev/null
  exec 5<&- 6>&-
else
  setsid env -i "${{ENVV[@]}}" "${{BOX[@]}}" "${{ARGV[@]}}" < {stdin} > {stdout} 2> {stderr} &
  child=$!
fi
"""

NET_END = """if [ -n "$nd" ]; then
  [ -s "$nd/pasta.pid" ] && kill -KILL "$(cat "$nd/pasta.pid")" 2>/dev/null
  rm -rf "$nd"
fi
"""

WATCHDOG = (
    '( sleep {walltime}; touch "$B.slurm.timeout"; kill -TERM -- "-$child";'
    ' sleep {grace}; kill -KILL -- "-$child" ) 2>/dev/null &\ndog=$!'
)


def write_attempt(
    launch: Launch, argv: list[str], grace_s: float, box: list[str] | None = None
) -> Files:
    """Write the attempt's environment, arguments, sandbox command (``box``: bwrap and
    its options, up to its ``--``) and wrapper; its stale files go."""
    files = Files.of(launch.stdout)
    for what in ("job", "stop", "exit", "state", "array", "box"):
        files.path(what).unlink(missing_ok=True)
    files.base.with_name(f"{files.base.name}.slurm.timeout").unlink(missing_ok=True)
    _nul_file(files.path("env"), [f"{k}={v}" for k, v in launch.env.items()])
    _nul_file(files.path("argv"), argv)
    if box:
        _nul_file(files.path("box"), box)
    for log in (launch.stdout, launch.stderr):
        log.write_bytes(b"")  # created before the job starts: the API tails them at once
    watchdog = ""
    if launch.walltime_s is not None:
        watchdog = WATCHDOG.format(walltime=f"{launch.walltime_s:g}", grace=f"{grace_s:g}")
    q = shlex.quote
    streams = {
        "stdin": q(str(launch.stdin or "/dev/null")),
        "stdout": q(str(launch.stdout)),
        "stderr": q(str(launch.stderr)),
    }
    networked = bool(box) and bool(launch.sandbox and launch.sandbox.get("network"))
    if networked:
        pasta = " ".join(q(o) for o in (*PASTA_OPTIONS, "--no-map-gw"))
        start = START_NETWORKED.format(pasta=pasta, **streams)
    else:
        start = START.format(**streams)
    text = WRAPPER.format(
        key=launch.key,
        exit=files.path("exit"),
        base=q(str(files.base)),
        cwd=q(str(launch.cwd)),
        limits="\n".join(limits_lines(launch)),
        start=start,
        net_end=NET_END if networked else "",
        watchdog=watchdog,
    )
    script = files.path("sh")
    script.write_text(text, encoding="utf-8")
    script.chmod(0o700)
    return files


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What the admin's settings add to every job."""

    job_name: str = "flowdeck"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None


@dataclass(frozen=True, slots=True)
class Array:
    """One job array: the instances of a foreach step started together."""

    comment: str  # run/step/array/tag: one for all its tasks
    script: Path  # runs task i's wrapper
    size: int
    limit: int | None  # the throttle (%N)

    @property
    def log(self) -> Path:
        return self.script.with_suffix(".log")


ARRAY_SCRIPT = """#!/bin/bash
# flowdeck's job array {comment}: task i runs element i's wrapper, its output in the
# element's .slurm.log
W=({wrappers})
w=${{W[$SLURM_ARRAY_TASK_ID]}}
exec "$w" >> "${{w%.sh}}.log" 2>&1
"""


def write_array(launches: list[Launch], members: list[Files], limit: int | None) -> Array:
    """The job array of foreach instances (``launches``, their files ``members``): its
    script, and each element's ``.slurm.array`` (the array's comment and its task)."""
    first = launches[0]
    run_id, step, _, _ = first.key.rsplit("/", 3)
    tag = secrets.token_hex(4)
    comment = f"{run_id}/{step}/array/{tag}"
    script = members[0].base.with_name(f"{step}.{tag}.array.sh")
    wrappers = " ".join(shlex.quote(str(f.path("sh"))) for f in members)
    script.write_text(ARRAY_SCRIPT.format(comment=comment, wrappers=wrappers), encoding="utf-8")
    script.chmod(0o700)
    for task, files in enumerate(members):
        files.path("array").write_text(f"{comment}|{task}", encoding="utf-8")
    return Array(comment, script, len(members), limit)


def sbatch_argv(
    sbatch: str, launch: Launch, files: Files, opts: JobOptions, array: Array | None = None
) -> list[str]:
    """The ``sbatch`` command submitting the attempt's wrapper as one batch job, or (with
    ``array``) the array whose tasks are ``launch``'s step's instances."""
    argv = [
        sbatch,
        "--parsable",
        f"--job-name={opts.job_name}",
        f"--comment={launch.key if array is None else array.comment}",
        "--export=NONE",
        f"--chdir={launch.cwd if array is None else array.script.parent}",
        f"--output={files.path('log') if array is None else array.log}",
        "--open-mode=append",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={max(1, math.ceil(launch.cpus))}",
    ]
    if launch.memory_bytes:
        argv.append(f"--mem={max(1, math.ceil(launch.memory_bytes / 2**20))}M")
    if launch.walltime_s is not None:
        argv.append(f"--time={time_limit(launch.walltime_s)}")
    chosen = launch.slurm_options  # the run's own, where the admin allows them
    for flag, value in (
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
    ):
        if value and flag not in chosen:
            argv.append(f"--{flag}={value}")
    argv.extend(user_flags(chosen))
    if array is None:
        argv.append(str(files.path("sh")))
    else:
        throttle = f"%{array.limit}" if array.limit else ""
        argv += [f"--array=0-{array.size - 1}{throttle}", str(array.script)]
    return argv


def user_flags(options: dict[str, Any]) -> list[str]:
    """A run's sbatch options as arguments (no shell: a value is one argument)."""
    return [
        f"--{name}" if value is True else f"--{name}={value}"
        for name, value in sorted(options.items())
        if value is not False and value is not None
    ]


def check_user_options(options: dict[str, Any], allowed: list[str]) -> list[str]:
    """Why a run's sbatch ``options`` are refused under the admin's ``allowed`` names:
    one message per option refused (none: all may be used)."""
    problems = []
    for name, value in options.items():
        if name not in allowed:
            problems.append(
                f"sbatch option {name!r} is not allowed on this server (allowed: "
                + (", ".join(allowed) if allowed else "none")
                + ")"
            )
        elif not (
            isinstance(value, bool)
            or (
                isinstance(value, str | int)
                and 0 < len(str(value)) <= 200
                and str(value).isprintable()
            )
        ):
            problems.append(
                f"sbatch option {name!r}: a value must be true or a printable text of 1 to "
                "200 characters"
            )
    return problems


def time_limit(walltime_s: float) -> int:
    """``--time`` in whole minutes: the step's timeout rounded up, plus one minute for the
    wrapper to end it itself (and say so) before Slurm does."""
    return math.ceil(walltime_s / 60) + 1


def parse_job_id(out: str) -> str:
    """``sbatch --parsable`` prints ``id`` or ``id;cluster``."""
    job = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
    if not job.isdigit():
        raise ValueError(f"sbatch printed no job id: {out.strip()!r}")
    return job


@dataclass(frozen=True, slots=True)
class JobState:
    job_id: str
    state: str  # Slurm's, e.g. RUNNING, "CANCELLED" (without "by 0")
    reason: str = ""
    key: str = ""  # the attempt key (the job's comment)


def waiting_reason(state: JobState) -> str | None:
    """Why a job waits in Slurm's queue (its reason: ``Resources``, ``Priority``, ...),
    pending or requeued after a preemption; None when it does not wait."""
    if state.state not in QUEUED:
        return None
    if state.state == "PENDING":
        return (state.reason or "pending")[:200]  # (as the steps table keeps it)
    return (f"{state.state.lower()}" + (f": {state.reason}" if state.reason else ""))[:200]


def parse_squeue(out: str) -> dict[str, JobState]:
    """Lines of ``squeue -h -o '%i|%T|%r|%k'`` by job id."""
    jobs: dict[str, JobState] = {}
    for line in out.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or not parts[0]:
            continue
        job_id, state, reason, key = parts
        jobs[job_id] = JobState(job_id, state.split()[0], "" if reason == "None" else reason, key)
    return jobs


def parse_sacct(out: str) -> dict[str, JobState]:
    """Lines of ``sacct -n -P -X -o JobID,State,Reason,Comment`` by job id."""
    jobs: dict[str, JobState] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0]:
            continue  # job steps (id.batch) follow their job
        state = parts[1].split()[0] if parts[1].strip() else ""
        reason = parts[2] if len(parts) > 2 and parts[2] != "None" else ""
        key = parts[3] if len(parts) > 3 else ""
        jobs[parts[0]] = JobState(parts[0], state, reason, key)
    return jobs


def outcome_of(record: dict[str, Any] | None, state: JobState | None, asked: str | None) -> Outcome:
    """How an ended job's attempt ended: from the wrapper's exit ``record`` first, else
    from Slurm's ``state`` (when known) and what flowdeck ``asked`` (stop or kill)."""
    if record is not None:
        code = int(record.get("exit_code", 255))
        if not 0 <= code <= 255:
            return Outcome(exit_code=None, error="the job wrapper lost the exit status")
        wall = max(0.0, float(record.get("ended", 0)) - float(record.get("started", 0)))
        sig = code - 128 if code > 128 else None
        ended_by = str(record.get("ended_by") or "")
        if ended_by == "timeout":
            return Outcome(exit_code=None, signal=sig, timed_out=True, wall_s=wall)
        cancelled = state is not None and state.state == "CANCELLED" and asked is None
        if ended_by == "slurm" or (cancelled and ended_by != "flowdeck"):
            # (Slurm's TERM may reach the step before the wrapper's trap runs: its state
            # says who ended it then)
            return Outcome(exit_code=None, signal=sig, wall_s=wall, error="cancelled in Slurm")
        slurm_says = state.state if state is not None and asked is None else ""
        why = f" ({state.reason})" if state is not None and state.reason else ""
        if slurm_says == "OUT_OF_MEMORY" and code != 0:  # the step was the one killed
            return Outcome(
                exit_code=None, signal=sig, wall_s=wall, error=f"out of memory in Slurm{why}"
            )
        if slurm_says in ("NODE_FAIL", "BOOT_FAIL") and code != 0:
            return Outcome(
                exit_code=None,
                signal=sig,
                wall_s=wall,
                lost=True,
                error=f"its Slurm node failed{why}",
            )
        if sig is not None:
            return Outcome(exit_code=None, signal=sig, wall_s=wall)
        return Outcome(exit_code=code, wall_s=wall)
    if asked == "kill":
        return Outcome(exit_code=None, signal=9)
    if asked == "stop":
        return Outcome(exit_code=None, signal=15)
    name = state.state if state is not None else ""
    why = f" ({state.reason})" if state is not None and state.reason else ""
    if name == "TIMEOUT":
        return Outcome(exit_code=None, timed_out=True, error=f"Slurm's time limit passed{why}")
    if name == "OUT_OF_MEMORY":
        return Outcome(exit_code=None, signal=9, error=f"out of memory in Slurm{why}")
    if name in ("NODE_FAIL", "BOOT_FAIL"):
        return Outcome(exit_code=None, lost=True, error=f"its Slurm node failed{why}")
    if name == "CANCELLED":
        return Outcome(exit_code=None, error=f"cancelled in Slurm{why}")
    if name:
        return Outcome(
            exit_code=None, lost=True, error=f"its Slurm job ended {name}{why} without an exit file"
        )
    return Outcome(exit_code=None, lost=True, error="its Slurm job is gone and left no exit file")

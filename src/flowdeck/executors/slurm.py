"""Run each step attempt as one Slurm batch job (``executor: slurm``).

The server's own user submits with ``sbatch`` (no shell, no step data on the command
line: see ``slurm_jobs.py`` for the attempt's files and its job wrapper).  Every job of a
deployment has the same name (``slurm_job_name``) and its attempt key as comment, so one
``squeue`` per poll (``slurm_poll_s``) covers all of them however many there are.  A job
that left ``squeue``'s list, or shows an ended state, ended: its wrapper's exit file says
how; without one, Slurm's state (or ``sacct``, where accounting exists) does.  A failed
``squeue`` (slurmctld restarting) ends nothing: the next poll asks again.

Stop is ``scancel --full --signal=TERM`` (the wrapper passes TERM to the step's group)
and a kill after the grace time is plain ``scancel``; flowdeck writes ``.slurm.stop``
first, so the wrapper tells its stop from a cancel by someone else.  Jobs outlive the
server: a restarted one adopts them by the id in ``.slurm.job`` (:meth:`adopt`).
Freeze is ``scontrol suspend`` (``hold`` for a job still pending), offered when the
server's user may (root or the SlurmUser: :meth:`operator_rights`).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowdeck.executors.base import Executor, Launch, NoProcess, Outcome, StepProcess
from flowdeck.executors.group import start_error, with_result
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.sandbox import Box, SandboxError
from flowdeck.executors.slurm_jobs import (
    ACTIVE,
    SQUEUE_FORMAT,
    Files,
    JobOptions,
    JobState,
    outcome_of,
    parse_job_id,
    parse_sacct,
    parse_squeue,
    sbatch_argv,
    waiting_reason,
    write_array,
    write_attempt,
)

log = logging.getLogger("flowdeck.slurm")
COMMAND_TIMEOUT_S = 60.0
MISSING_POLLS = 3  # an ended job without its exit file (or requeued?): polls to wait
COMMANDS_AT_ONCE = 8  # sbatch, scancel, scontrol calls in flight
PROBE_TIMEOUT_S = 300.0  # the start-up probe job's wait, queueing included
SUBMIT_RETRY_S = 300.0  # sbatch is asked again this long while slurmctld is unreachable
UNREACHABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "temporarily unable",
    "slurm_persist_conn",
    "did not answer within",
)


def may_suspend(config: str, uid: int, user: str) -> bool:
    """From ``scontrol show config``: root and the SlurmUser may suspend jobs."""
    if uid == 0:
        return True
    for line in config.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "SlurmUser":
            return value.strip().split("(")[0] == user
    return False


def box_command(box: Box | None, launch: Launch) -> list[str] | None:
    """The sandbox's command before the step's own (bwrap's options, and where the server
    is root setpriv to the step's uid): what a local step of ``launch`` gets.  A step with
    network: bwrap tells its child's pid and waits for pasta (fds 3 and 4 of the wrapper)."""
    if box is None:
        return None
    command = box.argv([])
    if launch.sandbox and launch.sandbox.get("network"):
        at = command.index("--")
        command[at:at] = ["--info-fd", "3", "--block-fd", "4"]
    return command


def unreachable(message: str) -> bool:
    """Does sbatch's error say the controller could not be reached (worth trying again)?"""
    text = message.lower()
    return any(part in text for part in UNREACHABLE)


@dataclass(frozen=True, slots=True)
class SlurmConfig:
    options: JobOptions
    bin_dir: Path | None = None
    poll_s: float = 2.0
    grace_s: float = 10.0

    def command(self, name: str) -> str:
        if self.bin_dir is not None:
            return str(self.bin_dir / name)
        return shutil.which(name) or name


async def run_command(argv: list[str], limit_s: float = COMMAND_TIMEOUT_S) -> tuple[int, str, str]:
    """Run a Slurm command without blocking the loop: (exit code, stdout, stderr)."""
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    )
    try:
        proc = await asyncio.shield(spawn)
    except OSError as exc:
        return 127, "", f"cannot run {argv[0]}: {exc.strerror or exc}"
    except asyncio.CancelledError:  # cancelled while it was being spawned: end it too
        with contextlib.suppress(OSError):
            started = await spawn
            with contextlib.suppress(ProcessLookupError):
                started.kill()
            await started.communicate()
        raise
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.communicate()
        return 124, "", f"{argv[0]} did not answer within {limit_s:g} s"
    except asyncio.CancelledError:  # the executor closes: no command outlives it
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.communicate()  # its end and its pipes' (no transport left open)
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class SlurmJob(StepProcess):
    """One attempt's batch job (submitted, or being submitted)."""

    def __init__(
        self,
        executor: SlurmExecutor,
        key: str,
        files: Files,
        on_exit: Callable[[Outcome], None],
        python: Launch | None = None,
    ) -> None:
        self.key = key
        self.files = files
        self.job_id: str | None = files.job_id()
        self.state: JobState | None = None
        self._executor = executor
        self._on_exit = on_exit
        self._python = python  # a python step's launch: its result file is read at the end
        self._asked: str | None = files.stop_asked()
        self._missing = 0
        self._frozen = False
        self.box: Box | None = None  # its sandbox (its folder is given back at the end)
        self._watch: Callable[[str, str | None], None] | None = None
        self._told: tuple[str, str | None] | None = None  # the last (job id, waiting) told
        self.ended = False

    def watch(self, fn: Callable[[str, str | None], None]) -> None:
        self._watch = fn
        if self.job_id is not None and self.state is not None:
            self._tell(waiting_reason(self.state))

    def _tell(self, waiting: str | None) -> None:
        """Tell the scheduler the job's id and whether (why) it waits, on change."""
        if self.job_id is None or self._watch is None or self.ended:
            return
        news = (self.job_id, waiting)
        if news != self._told:
            self._told = news
            self._watch(*news)

    # -- control -------------------------------------------------------------------------
    def pause(self) -> None:
        """Freeze: ``scontrol suspend`` (a job still pending is held instead)."""
        if self.ended:
            return
        self._frozen = True
        if self.job_id is not None:
            self._executor.freeze(self.job_id)

    def resume(self) -> None:
        if self.ended or not self._frozen:
            return
        self._frozen = False
        if self.job_id is not None:
            self._executor.thaw(self.job_id)

    def terminate(self) -> None:
        if self.state is not None and waiting_reason(self.state) is not None:
            self._ask("stop", [])  # still in the queue: no process to signal, cancelled
        else:
            self._ask("stop", ["--full", "--signal=TERM"])

    def kill(self) -> None:
        self._ask("kill", [])

    def _ask(self, what: str, flags: list[str]) -> None:
        if self.ended:
            return
        if self._asked != "kill":
            self._asked = what
            with contextlib.suppress(OSError):
                self.files.path("stop").write_text(what, encoding="utf-8")
        if self.job_id is not None:
            self._executor.cancel(self.job_id, flags)
        # else: sbatch has not answered yet; the job is cancelled as soon as it does

    # -- the end -------------------------------------------------------------------------
    def submitted(self, job_id: str) -> None:
        self.job_id = job_id
        with contextlib.suppress(OSError):
            self.files.path("job").write_text(job_id, encoding="utf-8")
        self._tell(None)  # its id, to store with the step (the first poll says if it waits)
        if self._asked is not None:
            self._executor.cancel(
                job_id, [] if self._asked == "kill" else ["--full", "--signal=TERM"]
            )
        elif self._frozen:
            self._executor.freeze(job_id)

    def seen(self, state: JobState | None) -> bool:
        """One poll's answer for this job (None: not listed): whether it ended now."""
        if self.ended:
            return False
        if state is not None and state.state in ACTIVE:
            if self.state is None or (self.state.state, self.state.reason) != (
                state.state,
                state.reason,
            ):
                self.files.note_state(state.state, state.reason)  # for the API, on change
                if waiting_reason(state) is not None:  # requeued: its last run's end is not
                    self.files.forget_run()  # this attempt's end
            self.state = state
            self._missing = 0
            self._tell(waiting_reason(state))
            return False
        if state is not None:
            self.state = state
        record = self.files.exit_record()
        # A few polls more before it counts as ended: without its exit file yet (a shared
        # file system may show it a little later), not listed, or ended by Slurm's own
        # TERM (a job Slurm requeues shows FAILED for a moment, then PENDING again).
        by_slurm = record is not None and record.get("ended_by") == "slurm"
        if (
            (record is None or state is None or by_slurm)
            and self._missing < MISSING_POLLS
            and self._asked is None
        ):
            self._missing += 1
            return False
        self.finish(outcome_of(record, self.state, self._asked))
        return True

    def finish(self, outcome: Outcome) -> None:
        if self.ended:
            return
        self.ended = True
        for what in ("env", "argv"):  # they may hold secrets: kept no longer than needed
            with contextlib.suppress(OSError):
                self.files.path(what).unlink(missing_ok=True)
        if self.box is not None:
            self.box.ended()
        if self._python is not None:
            outcome = with_result(outcome, self._python)
        self._executor.forget(self)
        self._on_exit(outcome)


class SlurmExecutor(Executor):
    """Step attempts as Slurm batch jobs (see the module docstring)."""

    name = "slurm"
    freeze_refusal = (
        "steps on Slurm cannot be frozen here: suspending Slurm jobs needs operator rights "
        "(the server's user is neither root nor the SlurmUser): use mode 'drain'"
    )

    def __init__(self, config: SlurmConfig) -> None:
        self.config = config
        self.can_freeze = False  # until operator_rights() says otherwise
        self._jobs: dict[str, SlurmJob] = {}  # by attempt key
        self._poller: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None  # Slurm commands running at once
        self._starting: list[tuple[SlurmJob, Launch]] = []  # to submit when the loop turns

    def check_shared(self, data_dir: Path) -> str | None:
        """Whether a job can read what the server writes into ``data_dir``: a probe job
        (``sbatch --wait``) copies a fresh token there; None when it did, else why not.
        Once it passed, later starts with the same settings skip it (``slurm-probe.ok``
        says which): a restart on a full cluster must not wait for a free CPU."""
        passed = data_dir / "slurm-probe.ok"
        settings = repr((self.config.options, str(self.config.bin_dir), str(data_dir)))
        with contextlib.suppress(OSError):
            if passed.read_text(encoding="utf-8") == settings:
                return None
        problem = self._probe(data_dir)
        if problem is None:
            with contextlib.suppress(OSError):
                passed.write_text(settings, encoding="utf-8")
        return problem

    def _probe(self, data_dir: Path) -> str | None:
        probe = data_dir / "slurm-probe"
        probe.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        sent, back = probe / f"{token}.in", probe / f"{token}.out"
        sent.write_text(token, encoding="utf-8")
        opts = self.config.options
        argv = [
            self.config.command("sbatch"),
            "--wait",
            "--parsable",
            f"--job-name={opts.job_name}-probe",
            "--export=NONE",
            "--output=/dev/null",
            "--ntasks=1",
            "--time=2",
            *(
                f"--{k}={v}"
                for k, v in (
                    ("partition", opts.partition),
                    ("account", opts.account),
                    ("qos", opts.qos),
                )
                if v
            ),
            f"--wrap=cat {shlex.quote(str(sent))} > {shlex.quote(str(back))}",
        ]
        try:
            done = subprocess.run(  # noqa: S603 - the admin's Slurm commands
                argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
            )
            answer = back.read_text(encoding="utf-8").strip() if back.exists() else ""
        except subprocess.TimeoutExpired as exc:
            printed = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
            with contextlib.suppress(ValueError, OSError, subprocess.SubprocessError):
                job = parse_job_id(printed or "")
                subprocess.run(  # noqa: S603 - the probe must not stay queued
                    [self.config.command("scancel"), job], timeout=30, check=False
                )
            return (
                f"the probe job did not end within {PROBE_TIMEOUT_S:g} s (is the partition "
                "full, or down?)"
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot run sbatch: {exc}"
        finally:
            for path in (sent, back):
                path.unlink(missing_ok=True)
        if done.returncode != 0 and not answer:
            why = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
            return f"the probe job failed: {why.splitlines()[-1]}"
        if answer != token:
            return (
                f"a job on a compute node could not read {sent} (the data directory must be "
                "on a file system the compute nodes share, at the same path)"
            )
        return None

    # -- start ---------------------------------------------------------------------------
    def start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        self._loop = loop
        try:
            argv = LocalExecutor.command_of(launch)
        except (OSError, TypeError, ValueError) as exc:
            loop.call_soon(on_exit, start_error(launch.python or "", exc))
            return NoProcess(launch.key)
        box: Box | None = None
        if launch.sandbox is not None:  # the same sandbox as a local step's, in the job
            busy = {j.box.uid for j in self._jobs.values() if j.box and j.box.uid is not None}
            try:
                box = Box.make({**launch.sandbox, "network": False}, launch.cwd, busy)
                box.hand_over()  # (the data directory is shared: its files are the node's)
            except (SandboxError, OSError) as exc:
                loop.call_soon(on_exit, Outcome(exit_code=126, error=str(exc)))
                return NoProcess(launch.key)
        try:
            files = write_attempt(launch, argv, self.config.grace_s, box_command(box, launch))
        except (OSError, ValueError) as exc:
            if box is not None:
                box.ended()
            loop.call_soon(on_exit, start_error(argv[0], exc))
            return NoProcess(launch.key)
        job = SlurmJob(self, launch.key, files, on_exit, launch if launch.python else None)
        job.box = box
        self._jobs[launch.key] = job
        if not self._starting:
            loop.call_soon(self._submit_started)
        self._starting.append((job, launch))
        return job

    def _submit_started(self) -> None:
        """Submit the attempts started since the loop last turned: the instances of one
        foreach step started together as one job array, every other attempt as a job."""
        started, self._starting = self._starting, []
        sbatch = self.config.command("sbatch")
        scatters: dict[str, list[tuple[SlurmJob, Launch]]] = {}
        for job, launch in started:
            run_step, index, _ = launch.key.rsplit("/", 2)
            if int(index) >= 0 and not job.ended:
                scatters.setdefault(run_step, []).append((job, launch))
            elif not job.ended:
                command = sbatch_argv(sbatch, launch, job.files, self.config.options)
                self._spawn(self._submit([job], command, launch.key))
        for group in scatters.values():
            jobs = [job for job, _ in group]
            first = group[0][1]
            if len(group) == 1:
                command = sbatch_argv(sbatch, first, jobs[0].files, self.config.options)
                self._spawn(self._submit(jobs, command, first.key))
                continue
            try:
                array = write_array(
                    [launch for _, launch in group], [j.files for j in jobs], first.foreach_limit
                )
            except OSError as exc:
                for job in jobs:
                    job.finish(Outcome(exit_code=None, error=f"cannot write the job array: {exc}"))
                continue
            command = sbatch_argv(sbatch, first, jobs[0].files, self.config.options, array)
            self._spawn(self._submit(jobs, command, array.comment))

    async def _submit(self, jobs: list[SlurmJob], command: list[str], comment: str) -> None:
        """sbatch of one job, or (several ``jobs``) of their job array; while the
        controller cannot be reached (a slurmctld restart), asked again every poll
        interval for up to ``SUBMIT_RETRY_S``, after checking that the failed call did
        not submit it after all (its ``comment`` in squeue's)."""
        waited = 0.0
        while True:
            code, out, err = await self._command(command)
            if code == 0:
                try:
                    self._submitted(jobs, parse_job_id(out))
                except ValueError as exc:
                    for job in jobs:
                        job.finish(Outcome(exit_code=None, error=f"sbatch: {exc}"))
                return
            reason = (err.strip() or out.strip() or f"exit {code}").splitlines()[-1]
            if all(job.ended for job in jobs):
                return
            if not unreachable(err + out) or waited >= SUBMIT_RETRY_S:
                for job in jobs:
                    job.finish(Outcome(exit_code=None, error=f"sbatch refused the job: {reason}"))
                return
            log.warning("sbatch for %s failed (%s): trying again", comment, reason)
            await asyncio.sleep(self.config.poll_s)
            waited += self.config.poll_s
            listed = await self.squeue_all()
            found = [s for s in (listed or {}).values() if s.key == comment]
            if found:
                self._submitted(jobs, found[-1].job_id.split("_")[0])
                return

    def _submitted(self, jobs: list[SlurmJob], job_id: str) -> None:
        """sbatch answered ``job_id``: one job's, or the array's (task i: ``id_i``)."""
        for task, job in enumerate(jobs):
            its = job_id if len(jobs) == 1 else f"{job_id}_{task}"
            if job.ended:  # it ended meanwhile: its job must not run
                self.cancel(its, [])
            else:
                job.submitted(its)
        self._ensure_poller()

    def adopt(
        self,
        key: str,
        stdout: Path,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        python: Launch | None = None,
        job_id: str | None = None,
    ) -> StepProcess:
        """A job a previous server submitted for attempt ``key`` (whose stdout log is
        ``stdout``): followed again by its id (``job_id``, stored with the step; else the
        one its run folder kept); an attempt without one never reached Slurm (or flowdeck
        stopped before sbatch answered: it is looked up by its key)."""
        self._loop = loop
        files = Files.of(stdout)
        job = SlurmJob(self, key, files, on_exit, python)
        if job_id is not None:
            job.job_id = job_id
        self._jobs[key] = job
        if job.job_id is None and files.exit_record() is None:
            self._spawn(self._find(job))
        else:
            self._ensure_poller()
        return job

    async def _find(self, job: SlurmJob) -> None:
        jobs = await self.squeue_all()
        if jobs is None:  # slurmctld not answering: the poller asks again
            self._ensure_poller()
            return
        task = job.files.array_task()  # an element of a job array: the array's task
        if task is not None:
            found = [
                state
                for state in jobs.values()
                if state.key == task[0] and state.job_id.endswith(f"_{task[1]}")
            ]
        else:
            found = [state for state in jobs.values() if state.key == job.key]
        if found:
            job.submitted(found[-1].job_id)
            self._ensure_poller()
        else:
            job.finish(Outcome(exit_code=None, lost=True, error="it never reached Slurm"))

    # -- polling -------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            assert self._loop is not None
            self._poller = self._loop.create_task(self._poll_loop())

    async def squeue_all(self) -> dict[str, JobState] | None:
        """All of this deployment's jobs in one call; None when squeue failed."""
        argv = [
            self.config.command("squeue"),
            "-h",
            "--array",  # one line per task of a job array (id_task)
            "--states=all",
            f"--name={self.config.options.job_name}",
            f"--user={os.geteuid()}",
            "-o",
            SQUEUE_FORMAT,
        ]
        code, out, err = await self._command(argv)
        if code != 0:
            log.warning("squeue failed (exit %d): %s", code, err.strip() or out.strip())
            return None
        return parse_squeue(out)

    async def sweep(self, live: Callable[[dict[str, str]], set[str]]) -> list[str]:
        """At start: cancel this deployment's jobs that no attempt under way owns, so
        nothing is left running: ``live`` gets {job id: attempt key} of the jobs still
        to end and answers the ids to keep.  The ids cancelled."""
        jobs = await self.squeue_all()
        if jobs is None:
            log.warning("cannot look for stray Slurm jobs: squeue failed")
            return []
        under_way = {j: s.key for j, s in jobs.items() if s.state in ACTIVE}
        keep = live(under_way) if under_way else set()
        strays = sorted(set(under_way) - keep - {job.job_id for job in self._jobs.values()})
        for job_id in strays:
            log.warning(
                "cancelling Slurm job %s: its attempt %r is over or unknown",
                job_id,
                under_way[job_id],
            )
            self.cancel(job_id, [])
        return strays

    async def _sacct(self, job_ids: list[str]) -> dict[str, JobState]:
        """Ended jobs squeue no longer lists, where Slurm keeps accounting (else none)."""
        argv = [
            self.config.command("sacct"),
            "-n",
            "-P",
            "-X",
            "--starttime=now-7days",
            "-o",
            "JobID,State,Reason,Comment",
            "-j",
            ",".join(job_ids),
        ]
        code, out, _ = await self._command(argv)
        return parse_sacct(out) if code == 0 else {}

    async def _poll_loop(self) -> None:
        while any(job.job_id is not None for job in self._jobs.values()):
            await asyncio.sleep(self.config.poll_s)
            try:
                await self.poll_once()
            except Exception:
                log.exception("Slurm poll failed")

    async def poll_once(self) -> None:
        jobs = await self.squeue_all()
        if jobs is None:
            return
        followed = [job for job in self._jobs.values() if job.job_id is not None]
        unlisted = [job for job in followed if job.job_id not in jobs]
        gone = [j for j in unlisted if j.files.exit_record() is None and j.job_id]
        accounted = await self._sacct([str(j.job_id) for j in gone]) if gone else {}
        for job in followed:
            assert job.job_id is not None
            job.seen(jobs.get(job.job_id) or accounted.get(job.job_id))

    async def _command(self, argv: list[str]) -> tuple[int, str, str]:
        """A Slurm command, at most ``COMMANDS_AT_ONCE`` at a time: a wide scatter must
        not start a thousand sbatch processes (nor flood slurmctld) at once."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(COMMANDS_AT_ONCE)
        async with self._slots:
            return await run_command(argv)

    def operator_rights(self) -> bool:
        """May the server's user suspend jobs (``scontrol suspend`` is for operators):
        root, or the cluster's SlurmUser?  Sets :attr:`can_freeze`."""
        try:
            done = subprocess.run(  # noqa: S603 - the admin's Slurm commands
                [self.config.command("scontrol"), "show", "config"],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        self.can_freeze = may_suspend(done.stdout, os.geteuid(), getpass.getuser())
        return self.can_freeze

    # -- control -------------------------------------------------------------------------
    def freeze(self, job_id: str) -> None:
        self._spawn(self._control(job_id, "suspend", "hold"))

    def thaw(self, job_id: str) -> None:
        self._spawn(self._control(job_id, "resume", "release"))

    async def _control(self, job_id: str, first: str, otherwise: str) -> None:
        """``scontrol suspend`` / ``resume``; a job not running yet (pending) cannot be
        suspended: it is held, and released, instead."""
        scontrol = self.config.command("scontrol")
        code, out, err = await self._command([scontrol, first, job_id])
        if code == 0:
            return
        code2, out2, err2 = await self._command([scontrol, otherwise, job_id])
        if code2 != 0:
            log.warning(
                "scontrol %s/%s %s failed: %s / %s",
                first,
                otherwise,
                job_id,
                (err or out).strip(),
                (err2 or out2).strip(),
            )

    def cancel(self, job_id: str, flags: list[str]) -> None:
        self._spawn(self._cancel(job_id, flags))

    async def _cancel(self, job_id: str, flags: list[str]) -> None:
        """scancel; asked again while slurmctld is unreachable (a stop or kill must not be
        lost to a controller restart), for up to ``SUBMIT_RETRY_S``."""
        waited = 0.0
        while True:
            argv = [self.config.command("scancel"), *flags, job_id]
            code, out, err = await self._command(argv)
            if code == 0:
                return
            log.warning("scancel %s failed: %s", job_id, err.strip() or out.strip())
            if not unreachable(err + out) or waited >= SUBMIT_RETRY_S:
                return
            await asyncio.sleep(self.config.poll_s)
            waited += self.config.poll_s

    def forget(self, job: SlurmJob) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    def close(self) -> None:
        """Stop following: the jobs go on, for the next start to adopt."""
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._tasks):
            task.cancel()

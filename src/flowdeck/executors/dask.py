"""Run each step attempt as one task on a Dask cluster (``executor: dask``).

The server holds one ``distributed.Client`` (its own thread and loop) to the scheduler
``dask_scheduler``.  An attempt is submitted as :func:`dask_tasks.run_attempt` under its
attempt key, with ``fire_and_forget`` (the scheduler keeps it running when flowdeck goes
away) and the step's ``cpus``/``memory`` as Dask worker resources, so it lands only on a
worker that declares enough (``dask worker --resources "cpus=N,memory=BYTES"``).  The
instances of a foreach step started together are submitted in one batch.

How an attempt ended is the exit file its task writes in the shared run folder
(``dask_tasks.py``), returned by the task too; the per-attempt lock there keeps a
resubmitted task from running the attempt while another still does.  A poll every
``dask_poll_s`` covers what callbacks cannot: an attempt adopted after a restart (followed
by its key when the scheduler still has it, else its exit file says how it ended, else it
is lost), a scheduler that restarted (its attempts are submitted again once it answers),
and a step no worker can take (pending, "no Dask worker offers ...").

Stop and kill write ``.dask.stop``: the task signals the step's process group on its
worker (SIGTERM, SIGKILL); an attempt that has not started is cancelled.  Steps on Dask
cannot be frozen: pause drains (no new submissions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import pwd
import secrets
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowdeck.executors.base import Executor, Launch, NoProcess, Outcome, StepProcess
from flowdeck.executors.dask_tasks import PYTHON, SUFFIXES, Files, probe, run_attempt
from flowdeck.executors.group import start_error, with_result
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.sandbox import bwrap_args, chown_tree, grant_read

log = logging.getLogger("flowdeck.dask")
SUBMIT_RETRY_S = 300.0  # an unreachable scheduler: submissions wait this long, then fail
CONNECT_TIMEOUT_S = 10.0
JOB_ID_LENGTH = 64  # as the steps table keeps it


@dataclass(frozen=True, slots=True)
class DaskConfig:
    scheduler: str  # tcp://host:8786, tls://host:8786
    tls_ca_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    worker_user: str | None = None  # the files an attempt writes are handed to it (root)
    poll_s: float = 1.0
    grace_s: float = 10.0

    @property
    def tls(self) -> bool:
        return self.scheduler.startswith("tls://")

    def security(self) -> Any:
        """``distributed.security.Security`` of the TLS settings (None without TLS)."""
        if not self.tls:
            return None
        from distributed.security import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=str(self.tls_ca_file) if self.tls_ca_file else None,
            tls_client_cert=str(self.tls_cert) if self.tls_cert else None,
            tls_client_key=str(self.tls_key) if self.tls_key else None,
            require_encryption=True,
        )


def fits(offers: list[dict[str, float]], request: dict[str, float]) -> bool:
    return any(all(offer.get(k, 0) >= v for k, v in request.items()) for offer in offers)


def waiting_reason(offers: list[dict[str, float]] | None, request: dict[str, float]) -> str | None:
    """Why an attempt cannot start on the cluster as it is (None: a worker offers enough)."""
    if offers is None:
        return "the Dask scheduler cannot be reached"
    if not offers:
        return "no Dask worker is connected"
    if fits(offers, request):
        return None
    asked = ", ".join(
        f"{k}={int(v) if float(v).is_integer() else v}" for k, v in sorted(request.items())
    )
    return f"no Dask worker offers {asked}"[:200]


def sandbox_command(launch: Launch) -> list[str] | None:
    """bwrap and its options for the step's sandbox on its worker (up to its ``--``): what a
    local step of ``launch`` sees, in an unprivileged user namespace (a worker is never
    root); a step with network shares the worker's (pasta is not set up on workers)."""
    if launch.sandbox is None:
        return None
    command = bwrap_args({**launch.sandbox, "network": False}, launch.cwd, user_ns=True)
    if launch.sandbox.get("network"):
        command.remove("--unshare-net")
    return command


def outcome_of(record: dict[str, Any]) -> Outcome:
    """How an attempt ended, from its task's exit record."""
    wall = max(0.0, float(record.get("ended") or 0) - float(record.get("started") or 0))
    error = record.get("error")
    if record.get("lost"):
        return Outcome(exit_code=None, lost=True, error=str(error or "lost on its Dask worker"))
    code = record.get("exit_code")
    sig = record.get("signal")
    common: dict[str, Any] = {
        "wall_s": wall,
        "max_rss_kb": int(record.get("max_rss_kb") or 0),
        "cpu_time_s": float(record.get("cpu_time_s") or 0.0),
    }
    if record.get("timed_out"):
        return Outcome(exit_code=None, signal=sig, timed_out=True, **common)
    if sig is not None:
        return Outcome(exit_code=None, signal=int(sig), **common)
    return Outcome(exit_code=int(code if code is not None else 255), error=error, **common)


class DaskTask(StepProcess):
    """One attempt's task (submitted, being submitted, or adopted)."""

    def __init__(
        self,
        executor: DaskExecutor,
        key: str,
        files: Files,
        on_exit: Callable[[Outcome], None],
        python: Launch | None = None,
        spec: dict[str, Any] | None = None,
        request: dict[str, float] | None = None,
    ) -> None:
        self.key = key
        self.files = files
        self.spec = spec  # what to submit (None: adopted, its spec is gone)
        self.request = request or {}
        self.future: Any = None  # the client's future while it follows the task
        job = files.job()
        self.scheduler_id: str | None = job[1] if job else None  # where it was submitted
        self.asked: str | None = files.stop_asked()
        self.ended = False
        self.since = time.monotonic()
        self._executor = executor
        self._on_exit = on_exit
        self._python = python
        self._watch: Callable[[str, str | None], None] | None = None
        self._told: tuple[str, str | None] | None = None
        self.waiting: str | None = None

    @property
    def job_id(self) -> str:
        return self.key[-JOB_ID_LENGTH:]

    def watch(self, fn: Callable[[str, str | None], None]) -> None:
        self._watch = fn
        if self.scheduler_id is not None:
            self.tell(self.waiting)

    def tell(self, waiting: str | None) -> None:
        """Tell the scheduler the task's key and whether (why) it waits, on change."""
        self.waiting = waiting
        if self._watch is None or self.ended:
            return
        news = (self.job_id, waiting)
        if news != self._told:
            self._told = news
            self._watch(*news)

    # -- control -------------------------------------------------------------------------
    def pause(self) -> None:
        pass  # steps on Dask cannot be frozen (can_freeze is False): pause drains

    def resume(self) -> None:
        pass

    def terminate(self) -> None:
        self._ask("stop")

    def kill(self) -> None:
        self._ask("kill")

    def _ask(self, what: str) -> None:
        if self.ended:
            return
        if self.asked != "kill":
            self.asked = what
            with contextlib.suppress(OSError):
                self.files.path("stop").write_text(what, encoding="utf-8")
        # The task writes .started before it looks for .stop: either it sees the stop, or
        # it started and signals the step itself
        if not self.files.path("started").exists():
            self._executor.cancel(self)
            sig = signal.SIGKILL if self.asked == "kill" else signal.SIGTERM
            self.finish(Outcome(exit_code=None, signal=int(sig)))

    # -- the end -------------------------------------------------------------------------
    def finish(self, outcome: Outcome) -> None:
        if self.ended:
            return
        self.ended = True
        self.future = None  # (the scheduler may forget the task now)
        if self._python is not None:
            outcome = with_result(outcome, self._python)
        self._executor.forget(self)
        self._on_exit(outcome)

    def check_exit(self) -> bool:
        """Did its task write how it ended?  Then it ends here too."""
        record = self.files.exit_record()
        if record is None:
            return False
        self.finish(outcome_of(record))
        return True


@dataclass(slots=True)
class Survey:
    """One poll's view of the cluster."""

    scheduler_id: str
    offers: list[dict[str, float]]  # each worker's resources
    states: dict[str, str]  # the scheduler's state of the attempts' keys it knows


class DaskExecutor(Executor):
    """Step attempts as Dask tasks (see the module docstring)."""

    name = "dask"
    can_freeze = False
    freeze_refusal = "steps on Dask cannot be frozen: use mode 'drain'"

    def __init__(self, config: DaskConfig) -> None:
        self.config = config
        self._client: Any = None
        self._jobs: dict[str, DaskTask] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: list[DaskTask] = []
        self._poller: asyncio.Task[None] | None = None
        # one thread talks to the client: calls that wait never block the loop
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dask")
        self._offers: list[dict[str, float]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._owner: tuple[int, int] | None = None
        self._data_dir = Path("/nonexistent")  # set by check()
        self._passable: set[Path] = set()  # folders the workers' group may pass through
        self._granted: set[str] = set()  # inputs and code made readable
        if config.worker_user and os.geteuid() == 0:
            entry = pwd.getpwnam(config.worker_user)
            self._owner = (entry.pw_uid, entry.pw_gid)

    # -- the client (in its thread) --------------------------------------------------------
    def client(self) -> Any:
        """The client, connected again when it closed (a scheduler that was away)."""
        if self._client is not None and self._client.status in ("running", "connecting"):
            return self._client
        from distributed import Client

        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close(timeout=2)
        self._client = None
        self._client = Client(  # type: ignore[no-untyped-call]
            self.config.scheduler,
            security=self.config.security(),
            timeout=CONNECT_TIMEOUT_S,
            set_as_default=False,
        )
        return self._client

    def check(self, data_dir: Path) -> str | None:
        """Connect, and where workers are there, check that one reads what the server
        writes into ``data_dir`` and does not run as root; None when all is well, else
        why not."""
        self._data_dir = data_dir
        try:
            client = self.client()
        except (OSError, TimeoutError) as exc:
            return f"cannot reach the Dask scheduler {self.config.scheduler}: {exc}"
        if not client.scheduler_info(n_workers=-1).get("workers"):
            log.warning("dask: no worker is connected yet: the shared data directory is unchecked")
            return None
        folder = data_dir / "dask-probe"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        if self._owner is not None:
            self._through(folder, self._owner[1])
        token = secrets.token_hex(16)
        sent = folder / f"{token}.in"
        sent.write_text(token, encoding="utf-8")
        sent.chmod(0o644)
        try:
            answer = str(client.submit(probe, str(sent), pure=False).result(timeout=60))
        except Exception as exc:
            return (
                f"a Dask worker could not read {sent}: {exc} (the data directory must be on a "
                "file system the workers share, at the same path)"
            )
        finally:
            sent.unlink(missing_ok=True)
        read, _, uid = answer.partition(" ")
        if read != token:
            return f"a Dask worker read something else than {sent}"
        if uid == "0":
            return "a Dask worker runs as root: run workers as the step user (docs/dask.md)"
        return None

    def _survey(self, keys: list[str]) -> Survey | None:
        """The scheduler's id, its workers' resources and the state of ``keys``; None
        while it cannot be reached."""
        try:
            client = self.client()
            info = client.scheduler_info(n_workers=-1)
            states = client.run_on_scheduler(
                lambda dask_scheduler, keys: {
                    k: dask_scheduler.tasks[k].state for k in keys if k in dask_scheduler.tasks
                },
                keys=keys,
            )
        except Exception as exc:
            log.warning("the Dask scheduler does not answer: %s", exc)
            return None
        offers = [dict(w.get("resources") or {}) for w in info.get("workers", {}).values()]
        return Survey(str(info.get("id")), offers, dict(states))

    def _submit_batch(self, jobs: list[DaskTask]) -> Survey | None:
        """Submit ``jobs`` (fire and forget, keyed by attempt); None: the scheduler cannot
        be reached (they are submitted by a later poll)."""
        survey = self._survey([])
        if survey is None:
            return None
        from distributed import fire_and_forget

        client = self._client
        futures = []
        for job in jobs:
            if job.ended or job.spec is None:
                continue
            with contextlib.suppress(OSError):
                job.files.path("job").write_text(
                    f"{job.key}\n{survey.scheduler_id}", encoding="utf-8"
                )
            future = client.submit(
                run_attempt,
                job.spec,
                key=job.key,
                resources=job.request or None,
                pure=False,
                retries=0,
            )
            futures.append(future)
            job.future = future
            job.scheduler_id = survey.scheduler_id
            future.add_done_callback(functools.partial(self._done, job))
        fire_and_forget(futures)  # type: ignore[no-untyped-call]
        return survey

    def _follow(self, jobs: list[DaskTask]) -> None:
        """Follow adopted tasks the scheduler still has, by their keys."""
        from distributed import Future

        for job in jobs:
            future: Any = Future(job.key, self._client)
            job.future = future
            future.add_done_callback(functools.partial(self._done, job))

    def _done(self, job: DaskTask, future: Any) -> None:
        """A task's future is done (in a thread of the client): its record to the loop."""
        status = future.status
        record: dict[str, Any] | None = None
        error: str | None = None
        try:
            if status == "finished":
                record = future.result(timeout=30)
            elif status == "error":
                exc = future.exception(timeout=30)
                error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.debug("cannot get the result of %s: %s", job.key, exc)
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ended, job, future, status, record, error)

    def _ended(
        self,
        job: DaskTask,
        future: Any,
        status: str,
        record: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        if job.ended or job.future is not future:
            return
        job.future = None
        if isinstance(record, dict):
            job.finish(outcome_of(record))
        elif job.check_exit():
            pass
        elif status == "error":
            lost = error is not None and error.startswith("KilledWorker")
            job.finish(
                Outcome(
                    exit_code=None,
                    lost=lost,
                    error=f"its Dask task failed: {error}"
                    if not lost
                    else "its Dask workers died while it ran",
                )
            )
        # else cancelled or lost with the scheduler: the next poll decides
        self._ensure_poller()

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
        if launch.python:
            argv[0] = PYTHON  # the worker's own interpreter
        files = Files.of(launch.stdout)
        try:
            for what in SUFFIXES:  # (never the lock: a task may hold it still)
                if what != "lock":
                    files.path(what).unlink(missing_ok=True)
            for path in (launch.stdout, launch.stderr):
                path.write_bytes(b"")  # there at once: the API tails them
            self._hand_over(launch)
        except OSError as exc:
            loop.call_soon(on_exit, start_error(argv[0], exc))
            return NoProcess(launch.key)
        request = {"cpus": float(launch.cpus)}
        if launch.memory_bytes:
            request["memory"] = float(launch.memory_bytes)
        spec = {
            "key": launch.key,
            "base": str(files.base),
            "argv": argv,
            "env": dict(launch.env),
            "cwd": str(launch.cwd),
            "stdin": str(launch.stdin) if launch.stdin else None,
            "stdout": str(launch.stdout),
            "stderr": str(launch.stderr),
            "cpu_seconds": launch.cpu_seconds,
            "memory_bytes": launch.memory_bytes,
            "file_size_bytes": launch.file_size_bytes,
            "max_processes": launch.max_processes,
            "walltime_s": launch.walltime_s,
            "grace_s": self.config.grace_s,
            "box": sandbox_command(launch),
        }
        python = launch if launch.python else None
        job = DaskTask(self, launch.key, files, on_exit, python, spec, request)
        job.scheduler_id = None
        self._jobs[launch.key] = job
        if not self._starting:
            loop.call_soon(self._submit_started)
        self._starting.append(job)
        return job

    def _hand_over(self, launch: Launch) -> None:
        """A server running as root hands the attempt's folder and its run's logs folder
        to the workers' user (``dask_worker_user``: the task writes them), lets that
        user's group through the private folders above them, and makes the run's inputs
        and the workflow's code readable (as the step sandbox does)."""
        if self._owner is None:
            return
        uid, gid = self._owner
        chown_tree(launch.cwd, uid, gid)
        for path in (launch.stdout.parent, launch.stdout, launch.stderr):
            os.chown(path, uid, gid)
        self._through(launch.cwd.parent, gid)
        self._through(launch.stdout.parent.parent, gid)
        inputs = launch.cwd.parent.parent / "inputs"  # (staged before the run started)
        code = launch.env.get("FLOWDECK_CODE")
        for folder in (inputs, launch.code_dir, Path(code) if code else None):
            if folder is not None and str(folder) not in self._granted and folder.is_dir():
                self._through(folder, gid)
                grant_read(str(folder))
                if len(self._granted) > 10_000:  # (a long-lived server: granted again)
                    self._granted.clear()
                self._granted.add(str(folder))

    def _through(self, folder: Path, gid: int) -> None:
        """The workers' group may pass through ``folder`` and every folder above it (not
        list them): the server's private folders (0700) stay closed to anyone else."""
        if len(self._passable) > 10_000:  # (a long-lived server: checked again)
            self._passable.clear()
        for path in (folder, *folder.parents):
            if path in self._passable or not path.is_relative_to(self._data_dir):
                break  # (nothing above the data directory is changed)
            st = path.stat()
            closed = st.st_mode & 0o001 == 0 and st.st_uid == os.geteuid()
            if closed and (st.st_mode & 0o010 == 0 or st.st_gid != gid):
                if st.st_gid != gid:
                    os.chown(path, -1, gid)
                path.chmod(stat.S_IMODE(st.st_mode) | 0o010)
            self._passable.add(path)

    def _submit_started(self) -> None:
        started, self._starting = self._starting, []
        jobs = [job for job in started if not job.ended]
        if jobs:
            self._spawn(self._submit(jobs))

    async def _submit(self, jobs: list[DaskTask]) -> None:
        assert self._loop is not None
        survey = await self._loop.run_in_executor(self._thread, self._submit_batch, jobs)
        if survey is not None:
            self._offers = survey.offers
        for job in jobs:
            if job.ended:
                continue
            if job.asked is not None and job.future is not None:
                job._ask(job.asked)  # stopped while it was being submitted
            job.tell(waiting_reason(self._offers if survey else None, job.request))
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
        """An attempt a previous server submitted (whose stdout log is ``stdout``):
        followed again by its key; its exit file says how it ended if it did."""
        self._loop = loop
        job = DaskTask(self, key, Files.of(stdout), on_exit, python)
        self._jobs[key] = job
        if not job.check_exit():
            self._ensure_poller()
        return job

    # -- polling -------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            assert self._loop is not None
            self._poller = self._loop.create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        while self._jobs:
            await asyncio.sleep(self.config.poll_s)
            try:
                await self.poll_once()
            except Exception:
                log.exception("Dask poll failed")

    async def poll_once(self) -> None:
        assert self._loop is not None
        for job in list(self._jobs.values()):
            job.check_exit()
        jobs = [job for job in self._jobs.values() if not job.ended]
        if not jobs:
            return
        keys = [job.key for job in jobs]
        survey = await self._loop.run_in_executor(self._thread, self._survey, keys)
        if survey is None:
            for job in jobs:
                if job.future is None:
                    job.tell(waiting_reason(None, job.request))
            self._fail_unsubmitted(jobs)
            return
        self._offers = survey.offers
        resubmit, follow = [], []
        for job in jobs:
            if job.ended or job.check_exit():
                continue
            state = survey.states.get(job.key)
            if job.future is None:
                if state is not None:
                    follow.append(job)
                elif job.scheduler_id is None or job.scheduler_id != survey.scheduler_id:
                    resubmit.append(job)  # not submitted yet, or the scheduler restarted
                    continue
                else:
                    job.finish(
                        Outcome(
                            exit_code=None,
                            lost=True,
                            error="its Dask task is gone and left no exit file",
                        )
                    )
                    continue
            waiting = waiting_reason(survey.offers, job.request)
            if waiting is None and state == "no-worker":
                waiting = "no Dask worker can take it now"
            job.tell(waiting)
        if follow:
            await self._loop.run_in_executor(self._thread, self._follow, follow)
        if resubmit:
            for job in resubmit:
                if job.spec is None:
                    job.spec = self._spec_again(job)
            log.info("submitting %d attempts (again) to the Dask scheduler", len(resubmit))
            await self._submit(resubmit)

    def _spec_again(self, job: DaskTask) -> dict[str, Any] | None:
        """An adopted attempt has no spec: it cannot be submitted again (it is lost)."""
        job.finish(
            Outcome(exit_code=None, lost=True, error="the Dask scheduler lost it (it restarted)")
        )
        return None

    def _fail_unsubmitted(self, jobs: list[DaskTask]) -> None:
        for job in jobs:
            if job.scheduler_id is None and time.monotonic() - job.since > SUBMIT_RETRY_S:
                job.finish(
                    Outcome(
                        exit_code=None,
                        error=f"the Dask scheduler could not be reached for {SUBMIT_RETRY_S:g} s",
                    )
                )

    # -- control -------------------------------------------------------------------------
    def cancel(self, job: DaskTask) -> None:
        future = job.future
        if future is None or self._loop is None:
            return
        self._loop.run_in_executor(self._thread, self._cancel, future)

    @staticmethod
    def _cancel(future: Any) -> None:
        with contextlib.suppress(Exception):
            future.cancel()

    def forget(self, job: DaskTask) -> None:
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    def close(self) -> None:
        """Stop following: the tasks go on (fire and forget), for the next start to adopt."""
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._tasks):
            task.cancel()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
        self._thread.shutdown(wait=False, cancel_futures=True)

"""From a step instance to an executor launch, and from its outcome to outputs, products
and a message."""

from __future__ import annotations

import functools
import hashlib
import math
import mimetypes
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.expressions import parse_template
from flowdeck.domain.ports import stream_outputs
from flowdeck.domain.runs import Product
from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.sandbox import parse_uids, plan
from flowdeck.executors.wire import read_records
from flowdeck.ids import new_id
from flowdeck.runtime.active import ActiveRun, Instance
from flowdeck.runtime.rundir import attempt_key
from flowdeck.runtime.step_secrets import SecretSource, give
from flowdeck.runtime.steps import (
    BASE_PATH,
    StepError,
    collect_output,
    from_archive,
    output_files,
    render_argv,
    render_env,
    render_value,
    resolver,
    tail,
)
from flowdeck.store.base import Tx


def prepare(
    ar: ActiveRun, inst: Instance, settings: Settings, secrets: SecretSource | None = None
) -> Launch:
    step = ar.step(inst.step)
    resolve = resolver(ar.run.params, ar.all_outputs(), inst.item)
    attempt = inst.attempts + 1
    cwd = ar.rundir.step_dir(inst.step, inst.index)
    key = attempt_key(ar.run.id, inst.step, inst.index, attempt)
    work_dir_for(cwd, ar.rundir.attempts, key)
    if step.resources.network and settings.step_network != "allowed":
        raise StepError(
            "this step asks for network (resources.network) but the server does not allow "
            'it: an admin must set step_network = "allowed"'
        )
    path = BASE_PATH
    for name in settings.step_env_passthrough:
        if name == "PATH":
            path = os.environ.get("PATH", BASE_PATH)
    base = {
        **{n: os.environ[n] for n in settings.step_env_passthrough if n in os.environ},
        "PATH": path,
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
        "TMPDIR": str(ar.rundir.tmp),
        "FLOWDECK_RUN_ID": ar.run.id,
        "FLOWDECK_STEP": inst.step,
        "FLOWDECK_ATTEMPT": str(attempt),
        **ar.extra_env,
    }
    if inst.index >= 0:
        base["FLOWDECK_INDEX"] = str(inst.index)
    code = ar.code_dir
    if code is not None:  # the workflow's archive: its files, read-only, for every step
        base["FLOWDECK_CODE"] = str(code)
        base["PATH"] = f"{code}:{path}"
    env = render_env(step, resolve, base)
    if step.secrets:  # always the run owner's (also for a shared workflow or a child run)
        if secrets is None:
            raise StepError("secrets cannot be given to steps here")
        values = secrets.values(ar.run.owner_id, [use.name for use in step.secrets])
        inst.secret_values, inst.secret_files = give(step, values, env, cwd)
    timeout = step.resources.timeout_s
    common: dict[str, Any] = {
        "key": key,
        "cwd": cwd,
        "env": env,
        "stdout": ar.rundir.log(inst.step, inst.index, attempt, "stdout"),
        "stderr": ar.rundir.log(inst.step, inst.index, attempt, "stderr"),
        "record": ar.rundir.attempts,
        "memory_bytes": step.resources.memory_bytes or ar.run.resources.get("memory_bytes"),
        "walltime_s": timeout,
        "cpu_seconds": math.ceil(timeout * step.resources.cpus) if timeout else None,
        "file_size_bytes": settings.max_step_file_bytes,
        "max_processes": settings.step_max_processes,
        "sandbox": sandbox_plan(ar, cwd, settings, step.resources.network),
        "cpus": float(step.resources.cpus),
        "slurm_options": dict(ar.run.resources.get("slurm_options") or {}),
        "foreach_limit": step.foreach_limit if inst.index >= 0 else None,
    }
    if step.python is not None:
        # An input left unset is None for a python step (not an error): an optional one,
        # or a typed input of a CWL workflow given a job document instead.
        unset = dict.fromkeys(ar.spec.inputs)
        resolve = resolver({**unset, **ar.run.params}, ar.all_outputs(), inst.item)
        kwargs = render_value(dict(step.with_), resolve)
        return Launch(python=step.python, code_dir=ar.code_dir, kwargs=kwargs, **common)
    if step.uses is not None:  # a child run (runtime/subflows.py) with these inputs
        kwargs = render_value(dict(step.with_), resolve)
        return Launch(argv=("uses", step.uses), kwargs=kwargs, **common)
    argv = render_argv(step, resolve)
    return Launch(argv=tuple(argv if code is None else from_archive(argv, code)), **common)


def sandbox_plan(ar: ActiveRun, cwd: Path, settings: Settings, network: bool) -> Any:
    """What the step may see in its sandbox (none when the sandbox is off)."""
    if settings.sandbox == "off":
        return None
    rd = ar.rundir
    return plan(
        ro=[
            rd.work,
            rd.inputs,
            ar.code_dir,
            settings.data_root,
            *_other_runs_files(ar, settings),
            *settings.sandbox_extra_ro,
        ],
        rw=[cwd, rd.tmp, *settings.sandbox_extra_rw],
        grant=[rd.inputs, ar.code_dir],
        deny=[settings.data_dir],
        network=network,
        step_user=settings.step_user,
        step_uids=parse_uids(settings.step_uids),
        max_processes=settings.step_max_processes,
        work=rd.work,
        box=settings.sandbox_scope == "run" and _several_steps(ar),
        warm=settings.cwl_warm_workers,
    )


def _several_steps(ar: ActiveRun) -> bool:
    """Will the run start more than one step (worth a sandbox of its own)?"""
    return len(ar.spec.steps) > 1 or any(s.foreach for s in ar.spec.steps.values())


def _other_runs_files(ar: ActiveRun, settings: Settings) -> list[Path]:
    """The files of other runs its file inputs name in place (a graph node's inputs are
    its upstream runs' outputs): each, and nothing else of those runs, read-only."""
    runs = settings.data_dir / "runs"
    found: list[Path] = []
    for name, inp in ar.spec.inputs.items():
        if inp.type not in ("file", "directory") and inp.items not in ("file", "directory"):
            continue
        value = ar.run.params.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith(f"{runs}/"):
                path = Path(item)
                if not ar.rundir.contains(path):
                    found.append(path)
    return found


def work_dir_for(cwd: Path, journal: Path, key: str) -> None:
    """Make the step instance's work folder for attempt ``key``.  A retry starts clean
    (the folder of an earlier attempt is emptied), but not a folder this very attempt
    already runs in: after a crash the server may ask again for an attempt the supervisor
    started (its journal has it) before the server could record it; the supervisor starts
    a key once and answers for the process it has, which writes in that folder."""
    try:
        cwd.mkdir()
    except FileExistsError:
        if key in read_records(journal):
            return
        shutil.rmtree(cwd)
        cwd.mkdir()
    except FileNotFoundError:  # the run's first step: work/ first (its parent exists)
        cwd.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir()


_LIMIT_SIGNALS: dict[int, str] = {
    signal.SIGXFSZ: " (it wrote past its file size limit: the disk or max_step_file_bytes)",
    signal.SIGXCPU: " (it used up its CPU time limit)",
}


ERROR_LINES = 20  # of standard error, in a failed step's error
ERROR_TAIL_BYTES = 16 * 1024  # read to find them (lines are cut to keep it bounded)


def describe(ar: ActiveRun, inst: Instance, outcome: Outcome) -> str:
    """Why an attempt failed, then the last :data:`ERROR_LINES` lines of its standard
    error (what says why is seldom the very last line)."""
    if outcome.timed_out:
        reason = f"timed out after {ar.step(inst.step).resources.timeout_s:g} s"
    elif outcome.error:
        reason = outcome.error.strip().splitlines()[-1] if outcome.error.strip() else "error"
    elif outcome.signal is not None:
        name = (
            signal.Signals(outcome.signal).name
            if outcome.signal in signal.Signals._value2member_map_
            else outcome.signal
        )
        reason = f"killed by signal {name}" + _LIMIT_SIGNALS.get(outcome.signal, "")
    else:
        reason = f"exit code {outcome.exit_code}"
    err = tail(ar.rundir.log(inst.step, inst.index, inst.attempts, "stderr"), ERROR_TAIL_BYTES)
    lines = [line[:500] for line in err.strip().splitlines()[-ERROR_LINES:]]
    return "\n".join([reason, *lines])


def collect(
    ar: ActiveRun, inst: Instance, outcome: Outcome, op: Callable[[Callable[[Tx], None]], Any]
) -> dict[str, Any]:
    """The outputs of a successful attempt; file outputs become products."""
    step = ar.step(inst.step)
    if step.uses is not None:  # the child run's workflow outputs
        return dict(outcome.result or {})
    resolve = resolver(ar.run.params, ar.all_outputs(), inst.item)
    cwd = ar.rundir.step_dir(inst.step, inst.index)
    stdout = ar.rundir.log(inst.step, inst.index, inst.attempts, "stdout")
    outputs: dict[str, Any] = {}
    for name, spec in step.outputs.items():
        value = collect_output(name, spec, cwd, outcome, stdout, resolve)
        outputs[name] = value
        files = output_files(spec, value)
        for i, path in enumerate(files):
            suffix = f"[{i}]" if spec.glob is not None else ""
            product_name = f"{inst.label}.{name}{suffix}"
            product = _product(ar, product_name, Path(path))
            op(functools.partial(_add_product, product, inst.label))
    return outputs


def _add_product(product: Product, step: str, tx: Tx) -> None:
    tx.add_product(product)
    tx.add_event(
        "run",
        product.run_id,
        "product.created",
        product.created_at,
        None,
        {
            "product_id": product.id,
            "name": product.name,
            "step": step,
            "size": product.size,
            "sha256": product.sha256,
        },
    )


def _product(ar: ActiveRun, name: str, path: Path) -> Product:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())  # on disk before its row refers to it
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    rel = path.resolve().relative_to(ar.rundir.root.resolve()).as_posix()
    return Product(
        new_id("prod"), ar.run.id, name, rel, size, digest.hexdigest(), media, clock.now()
    )


def workflow_outputs(ar: ActiveRun) -> dict[str, Any]:
    resolve = resolver(ar.run.params, ar.all_outputs(), None)
    values: dict[str, Any] = {}
    streams = stream_outputs(ar.spec)  # read from their ports, not given here
    for name, out in ar.spec.outputs.items():
        if name in streams:
            continue
        tpl = parse_template(out.source)
        try:
            values[name] = tpl.render(resolve)
        except StepError:
            values[name] = None  # its step was skipped
    return values

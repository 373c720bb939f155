"""A run's resources as asked for (``PUT /runs/{id}/resources``, a create's
``resources``), checked against the server's settings."""

from __future__ import annotations

import math
import re
from typing import Any

from flowdeck.config import Settings
from flowdeck.domain.spec import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    WorkflowSpec,
    parse_duration,
    parse_size,
)
from flowdeck.errors import InvalidInput, PermissionDenied
from flowdeck.executors.slurm_jobs import check_user_options

EXECUTORS = ("local", "inprocess")
MAX_MEMORY_BYTES = 2**62  # what a process limit (RLIMIT_AS) can hold


def may_use(s: Settings, executor: str, username: str, admin: bool) -> bool:
    """The dask executor is for the users the admin listed (dask_users; none: all)."""
    return not (executor == "dask" and s.dask_users and not admin and username not in s.dask_users)


def check_dask_user(s: Settings, executor: str, username: str, admin: bool) -> None:
    if not may_use(s, executor, username, admin):
        raise PermissionDenied(
            f"the dask executor is not enabled for user {username!r} (an admin adds users "
            "to dask_users)",
            field="executor",
        )


def dask_secret_problems(s: Settings, executor: str, spec: WorkflowSpec) -> list[dict[str, str]]:
    """A step's environment (its secrets too) travels to the Dask workers with its task:
    steps with secrets go to a scheduler reached over TLS only."""
    if executor != "dask" or (s.dask_scheduler or "").startswith("tls://"):
        return []
    return [
        {
            "step": name,
            "resource": "executor",
            "message": f"step {name!r} uses secrets, and the Dask scheduler is not reached "
            "over TLS (dask_scheduler tls://...): secrets go to Dask workers only over TLS",
        }
        for name, step in spec.steps.items()
        if step.secrets
    ]


def offered_executors(s: Settings) -> tuple[str, ...]:
    """The executors this server offers (the dask one only to dask_users, when set)."""
    return (*EXECUTORS, *(("slurm",) if s.slurm else ()), *(("dask",) if s.dask else ()))


def executors_for(s: Settings, username: str, admin: bool) -> list[str]:
    """The executors a user may choose for a run, the server's default first."""
    mine = [e for e in offered_executors(s) if may_use(s, e, username, admin)]
    return sorted(mine, key=lambda e: e != s.default_executor)


def check_resources(s: Settings, body: dict[str, Any]) -> dict[str, Any]:
    """The resources to store, or :class:`InvalidInput` naming the field at fault."""
    out: dict[str, Any] = {}
    executor = body.get("executor") or s.default_executor
    offered = offered_executors(s)
    if executor not in offered:
        raise InvalidInput(f"executor must be one of {', '.join(offered)}", field="executor")
    out["executor"] = executor
    if body.get("cpus") is not None:
        cpus = float(body["cpus"])
        if not (math.isfinite(cpus) and 0 < cpus <= s.slots):
            raise InvalidInput(
                f"cpus must be more than 0 and at most {s.slots} (the server's slots)",
                field="cpus",
            )
        out["cpus"] = cpus
    for name, pattern, example in (
        ("memory", SIZE_PATTERN, "512 (MiB), '2GiB' or '500M'"),
        ("walltime", DURATION_PATTERN, "3600 (seconds), '90m' or '2h'"),
    ):
        text = body.get(name)
        if isinstance(text, str) and not re.fullmatch(pattern, text):
            raise InvalidInput(
                f"{name} {text!r}: expected a positive amount such as {example}", field=name
            )
    try:
        if body.get("memory") is not None:
            out["memory_bytes"] = parse_size(body["memory"])
        if body.get("walltime") is not None:
            out["walltime_s"] = parse_duration(body["walltime"])
    except ValueError as exc:
        raise InvalidInput(str(exc), field="memory" if "size" in str(exc) else "walltime") from exc
    memory = out.get("memory_bytes")
    if memory is not None and not 0 < memory <= MAX_MEMORY_BYTES:
        raise InvalidInput(
            f"memory must be positive (and at most {MAX_MEMORY_BYTES} bytes), not "
            f"{body['memory']!r}",
            field="memory",
        )
    if s.max_memory_bytes and out.get("memory_bytes", 0) > s.max_memory_bytes:
        raise InvalidInput(
            f"memory above the server's limit of {s.max_memory_bytes} bytes", field="memory"
        )
    walltime = out.get("walltime_s")
    if walltime is not None and not (math.isfinite(walltime) and walltime > 0):
        raise InvalidInput(
            f"walltime must be a positive, finite number of seconds, not {body['walltime']!r}",
            field="walltime",
        )
    if s.max_run_walltime_s and out.get("walltime_s", 0) > s.max_run_walltime_s:
        raise InvalidInput(
            f"walltime above the server's limit of {s.max_run_walltime_s:g} s", field="walltime"
        )
    env = body.get("env") or {}
    for key in env:
        if not key.replace("_", "a").isalnum() or key[0].isdigit() or key.startswith("FLOWDECK_"):
            raise InvalidInput(f"env: {key!r} is not an allowed variable name", field="env")
    out["env"] = {str(k): str(v) for k, v in env.items()}
    options = body.get("slurm_options") or {}
    if options:
        if executor != "slurm":
            raise InvalidInput(
                "slurm_options are for runs on Slurm (executor slurm)", field="slurm_options"
            )
        problems = check_user_options(options, s.slurm_user_options)
        if problems:
            raise InvalidInput("; ".join(problems), field="slurm_options", refused=sorted(options))
        out["slurm_options"] = dict(options)
    return out

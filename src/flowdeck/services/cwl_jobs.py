"""Runs of stored CWL workflows given their CWL job document as sent (the input
``cwl_job``): the document is kept as sent, every CWL type and field, for cwltool; its
relative File and Directory locations name files staged for the run under their relative
paths (the input ``cwl_files``); checked when it is given and when the run starts."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from flowdeck.domain.spec import WorkflowSpec
from flowdeck.domain.text import unsafe_character
from flowdeck.engines.cwl import (
    job_only_inputs,
    takes_staged_files,
    typed_ports,
)
from flowdeck.engines.cwl_names import FILES_INPUT, JOB_INPUT, REQUEST_INPUT
from flowdeck.errors import InvalidInput
from flowdeck.jsonlimits import check_depth

MAX_PATH_BYTES = 1024


def relative_path_problem(name: str) -> str | None:
    """What makes ``name`` no safe relative path (a staging key), or None."""
    if not name:
        return "it is empty"
    if name.startswith("/"):
        return "it is an absolute path"
    if "\\" in name:
        return "it contains '\\'"
    why = unsafe_character(name)
    if why is not None:
        return f"it contains a {why}"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it has an empty, '.' or '..' part"
    if len(name.encode()) > MAX_PATH_BYTES or any(len(p.encode()) > 255 for p in name.split("/")):
        return "it is too long"
    return None


def check_staged_path(name: str, taken: list[str]) -> None:
    """A file of ``cwl_files`` is staged under its relative path as the job document
    names it: refused (422) when it is not a safe relative path or clashes with one
    already staged (a file where a folder is, or the reverse)."""
    why = relative_path_problem(name)
    if why is not None:
        raise InvalidInput(
            f"filename {name!r}: files of {FILES_INPUT} are staged under their relative paths "
            f"as the job document names them, and {why} (no absolute paths, no '..', no "
            "control characters)",
            field="filename",
            input=FILES_INPUT,
        )
    for other in taken:
        if other.startswith(f"{name}/") or name.startswith(f"{other}/"):
            raise InvalidInput(
                f"filename {name!r}: {other!r} is staged already, so {name!r} cannot be "
                "a file and a folder",
                field="filename",
                input=FILES_INPUT,
            )


def staged_names(paths: list[str]) -> dict[str, str]:
    """Relative path → staged path of the files of ``cwl_files``."""
    names = {}
    for path in paths:
        p = Path(path)
        root = next(
            (a for a in p.parents if a.name == FILES_INPUT and a.parent.name == "inputs"), None
        )
        names[p.relative_to(root).as_posix() if root else p.name] = path
    return names


def _locations(job: Any, where: str) -> list[tuple[str, str, str]]:
    """(where, class, location) of every File and Directory of a job that has one."""
    found: list[tuple[str, str, str]] = []
    if isinstance(job, list):
        for i, v in enumerate(job):
            found += _locations(v, f"{where}[{i}]")
    elif isinstance(job, dict):
        ref = job.get("location") if "location" in job else job.get("path")
        if job.get("class") in ("File", "Directory") and isinstance(ref, str):
            key = "location" if "location" in job else "path"
            found.append((f"{where}.{key}", str(job["class"]), ref))
        for k, v in job.items():
            found += _locations(v, f"{where}.{k}")
    return found


def _local(ref: str) -> str | None:
    """A location as a local path (relative or absolute), None for other URLs."""
    scheme = ref.split(":", 1)[0] if ":" in ref.split("/", 1)[0] else ""
    if scheme and scheme != "file":
        return None
    path = unquote(ref.removeprefix("file://"))
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/") or path


def _check_job(job: Any, data_root: Path | None) -> None:
    if not isinstance(job, dict):
        raise InvalidInput(f"{JOB_INPUT} must be a JSON object (a CWL job)", input=JOB_INPUT)
    for where, _kind, ref in _locations(job, JOB_INPUT):
        path = _local(ref)
        if path is None:
            continue
        if path.startswith("/"):
            real = Path(path).resolve()
            if data_root is not None and real.is_relative_to(data_root.resolve()):
                continue  # the server's shared data, read in place
            raise InvalidInput(
                f"{where}: {ref!r} is an absolute path: name a file staged for the run "
                f"({FILES_INPUT}) by its relative path",
                field=where,
                input=JOB_INPUT,
            )
        why = relative_path_problem(path)
        if why is not None:
            raise InvalidInput(
                f"{where}: {ref!r} is not a safe relative path: {why}",
                field=where,
                input=JOB_INPUT,
            )


def job_params(
    spec: WorkflowSpec, params: dict[str, Any], data_root: Path | None
) -> dict[str, Any]:
    """``params`` with a CWL job document (an object, or JSON text) checked and kept as
    JSON text, as sent (``cwl_job``, and ``cwl_request`` unless given)."""
    job = params.get(JOB_INPUT)
    if job is None or not takes_staged_files(spec):
        return params
    if isinstance(job, str):
        check_depth(job, where=JOB_INPUT)
        try:
            job = json.loads(job)
        except ValueError as exc:
            raise InvalidInput(f"{JOB_INPUT} is not JSON: {exc}", input=JOB_INPUT) from exc
    _check_job(job, data_root)
    text = json.dumps(job)
    out = {**params, JOB_INPUT: text}
    if params.get(REQUEST_INPUT) is None:
        out[REQUEST_INPUT] = text
    return out


def job_document(spec: WorkflowSpec, params: dict[str, Any]) -> dict[str, Any] | None:
    """A run's CWL job document as sent, if it was given one."""
    if JOB_INPUT not in spec.inputs:
        return None
    text = params.get(REQUEST_INPUT) or params.get(JOB_INPUT)
    try:
        job = json.loads(str(text)) if text else None
    except ValueError:
        return None
    return job if isinstance(job, dict) else None


def has_job(spec: WorkflowSpec, params: dict[str, Any]) -> bool:
    """Whether a run of a stored CWL workflow was given a job document."""
    return takes_staged_files(spec) and bool(params.get(JOB_INPUT))


def start_problems(
    spec: WorkflowSpec, params: dict[str, Any], files: dict[str, list[str]]
) -> list[dict[str, str]]:
    """What stops a run of a stored CWL workflow from starting: typed inputs beside a job
    document, files the document names that are not staged, inputs only a job document
    can give missing from a run without one."""
    if not takes_staged_files(spec):
        return []
    problems: list[dict[str, str]] = []
    typed = [p for p in typed_ports(spec) if p in params or p in files]
    job = job_document(spec, {JOB_INPUT: params.get(JOB_INPUT)})
    staged = staged_names(files.get(FILES_INPUT, []))
    if job is None:
        for cwl_id, info in job_only_inputs(spec).items():
            if info.get("required"):
                problems.append(
                    {
                        "input": JOB_INPUT,
                        "message": f"CWL input {cwl_id!r} ({info.get('type')}) can only be "
                        f"given in a CWL job document ({JOB_INPUT})",
                    }
                )
        if staged:
            problems.append(
                {
                    "input": FILES_INPUT,
                    "message": f"files staged in {FILES_INPUT} are for a CWL job document, "
                    f"and the run has none ({JOB_INPUT})",
                }
            )
        return problems
    if typed:
        problems.append(
            {
                "input": JOB_INPUT,
                "message": "give the CWL job document or typed inputs, not both (typed: "
                + ", ".join(sorted(typed))
                + ")",
            }
        )
    for where, kind, ref in _locations(job, JOB_INPUT):
        path = _local(ref)
        if path is None or path.startswith("/"):
            continue
        if path in staged and kind == "File":
            continue
        if kind == "Directory" and any(n.startswith(f"{path}/") for n in staged):
            continue
        what = "a staged folder (files staged under it)" if kind == "Directory" else "staged"
        problems.append(
            {
                "input": JOB_INPUT,
                "message": f"{where}: {ref!r} is not {what}: stage it in {FILES_INPUT} "
                f"with filename={str(PurePosixPath(path))!r}",
            }
        )
    return problems

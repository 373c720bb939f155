"""The step that runs a CWL workflow: called by flowdeck's python-step runner in the step's
own process (and process group), never imported by the server.

It writes the CWL job object — the job document as sent (WES runs: its relative
locations resolved in the workflow's files), else made of the run's typed inputs — runs
cwltool in this process (``--no-container``), keeps per-CWL-step task logs
(``cwl-tasks.json``) from cwltool's log records while it runs and cwltool's exit status
(``cwl-status.json``), and moves the files of the output object where flowdeck collects
them as the run's products: ``outputs/<n>/<file name>`` for every File of a job document's
output object (listings and secondary files included), ``outputs/<port>/`` otherwise.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from flowdeck.engines.cwl_names import (
    FILES_INPUT,
    MORE_FILES_DIR,
    OUTPUTS_DIR,
    SHIM_MODULE,
    STATUS_FILE,
    TASKS_FILE,
    engine_option_symbols,
)

JOB_FILE = "cwl-job.json"
RAW_OUTDIR = "cwl-out"
DEFAULT_ARGS = ("--no-container", "--disable-color", "--move-outputs")
_JOB_CMD = "[job %s] %s$ %s%s%s%s"
_JOB_DONE = "[job %s] completed %s"
_JOB_EXIT = "[job %s] exited with status: %d"
# Set by a warm worker (executors/zygote.py) once it loaded CWL's schemas: a run forked
# from it keeps them (cwltool would reload them, ~0.4 s of CPU; they are the standard
# ones, as no allowed option asks for others) instead of setting them up again.
WARM = False


def _keep_schemas() -> None:
    """cwltool's custom schema hook: the standard schemas already loaded stay."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class TaskRecorder(logging.Handler):
    """Turns cwltool's ``[job NAME]`` log records into task logs, saved as they change."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self.tasks: dict[str, dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._record(record)
        except Exception:
            self.handleError(record)

    def _record(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == _JOB_CMD and len(args) == 6:
            name = str(args[0])
            text = str(args[2]).replace(" \\\n    ", " ")
            try:
                cmd = shlex.split(text)
            except ValueError:
                cmd = text.split()
            task: dict[str, Any] = {
                "id": str(len(self.tasks) + 1),
                "name": name,
                "cmd": cmd,
                "start_time": _now(),
                "system_logs": [],
            }
            if args[3]:
                task["stdin_path"] = str(args[3]).removeprefix(" < ")
            self.tasks[name] = task
        elif record.msg == _JOB_DONE and len(args) == 2 and str(args[0]) in self.tasks:
            task = self.tasks[str(args[0])]
            task["end_time"] = _now()
            task["status"] = str(args[1])
            if args[1] == "success":
                task["exit_code"] = 0
        elif record.msg == _JOB_EXIT and len(args) == 2 and str(args[0]) in self.tasks:
            self.tasks[str(args[0])]["exit_code"] = int(str(args[1]))
        elif record.levelno >= logging.WARNING and args and str(args[0]) in self.tasks:
            self.tasks[str(args[0])]["system_logs"].append(record.getMessage()[:2000])
        else:
            return
        _write_json(self.path, list(self.tasks.values()))


def _cwl_value(value: Any, kind: str | None) -> Any:
    """A staged value as CWL: the staged paths of File and Directory inputs become CWL
    objects; other values are passed as they are."""
    if kind is None:
        return value
    if isinstance(value, list):
        return [_cwl_value(v, kind) for v in value]
    return {"class": kind, "path": str(value)}


def _files(value: Any) -> Iterator[dict[str, Any]]:
    """Every File object of an output value (secondary files included)."""
    if isinstance(value, list):
        for v in value:
            yield from _files(v)
    elif isinstance(value, dict):
        if value.get("class") == "File":
            yield value
            for sec in value.get("secondaryFiles") or []:
                yield from _files(sec)
        elif value.get("class") != "Directory":
            for v in value.values():
                yield from _files(v)


def _collect(result: dict[str, Any], file_outputs: dict[str, str], cwd: Path) -> None:
    """Move each output File under outputs/<port>/ (flowdeck's products), in place."""
    for cwl_id, port in file_outputs.items():
        folder = cwd / OUTPUTS_DIR / port
        for i, f in enumerate(_files(result.get(cwl_id))):
            src = Path(str(f.get("path") or str(f.get("location", "")).removeprefix("file://")))
            if not src.is_file():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / src.name
            if dest.exists():
                dest = folder / f"{i}-{src.name}"
            os.replace(src, dest)
            f["path"] = str(dest)
            f["location"] = dest.as_uri()


def _located(value: Any, code_dir: Path) -> Any:
    """A job as sent with relative File and Directory locations made absolute in the code
    folder (where a WES run's attachments are, under their names as sent)."""
    if isinstance(value, list):
        return [_located(v, code_dir) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _located(v, code_dir) for k, v in value.items()}
    if value.get("class") in ("File", "Directory"):
        ref = value.get("location") or value.get("path")
        if isinstance(ref, str) and ":" not in ref.split("/", 1)[0] and not ref.startswith("/"):
            target = (code_dir / unquote(ref)).resolve()
            if not target.is_relative_to(code_dir):
                raise ValueError(f"{ref!r} leaves the run's files")
            out["location"] = target.as_uri()
            out.pop("path", None)
    return out


class _Moves:
    """Where the output files went: one place per file, however often the output object
    names it (an in-place update makes two outputs of one file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: dict[Path, Path] = {}

    def move(self, src: Path) -> Path | None:
        if src in self.done:
            return self.done[src]
        if not src.is_file():
            return None
        dest = self.folder / str(len(self.done) + 1) / src.name
        dest.parent.mkdir(parents=True)
        try:
            os.replace(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
        self.done[src] = dest
        return dest


def _relocate_all(value: Any, moves: _Moves) -> None:
    """Move every File of an output value (in Directory listings and secondary files too)
    to ``outputs/<n>/<its name>``, where flowdeck collects products, in place."""
    if isinstance(value, list):
        for v in value:
            _relocate_all(v, moves)
        return
    if not isinstance(value, dict):
        return
    kind = value.get("class")
    if kind == "Directory":
        where = Path(str(value.get("path") or "")) if value.get("path") else None
        if "listing" not in value and where is not None and where.is_dir():
            value["listing"] = [_entry(p) for p in sorted(where.iterdir())]
        for v in value.get("listing") or []:
            _relocate_all(v, moves)
        value.pop("path", None)
        value.pop("location", None)
        return
    if kind != "File":
        for v in value.values():
            _relocate_all(v, moves)
        return
    for sec in value.get("secondaryFiles") or []:
        _relocate_all(sec, moves)
    src = Path(str(value.get("path") or str(value.get("location", "")).removeprefix("file://")))
    dest = moves.move(src)
    if dest is not None:
        value["path"] = str(dest)
        value["location"] = dest.as_uri()


def _relocate_ports(
    result: dict[str, Any], ports: dict[str, str], file_ports: dict[str, str], cwd: Path
) -> None:
    """Move the Files of File and File[] output ports to ``outputs/<port>/<k>/<name>`` (in
    order: each port's products), then every other File of the output object to
    ``cwl-files/<n>/<name>``, in place."""
    moves = _Moves(cwd / MORE_FILES_DIR)
    for cwl_id, kind in file_ports.items():
        value = result.get(cwl_id)
        items = value if kind == "files" and isinstance(value, list) else [value]
        for k, f in enumerate(items):
            if not isinstance(f, dict) or f.get("class") != "File":
                continue
            src = Path(str(f.get("path") or str(f.get("location", "")).removeprefix("file://")))
            if not src.is_file() or src in moves.done or src.name.startswith("."):
                continue  # (a hidden name is no glob's match: one of the other files)
            dest = cwd / OUTPUTS_DIR / ports[cwl_id] / f"{k:06d}" / src.name
            dest.parent.mkdir(parents=True)
            os.replace(src, dest)
            moves.done[src] = moves.done[dest] = dest
            f["path"] = str(dest)
            f["location"] = dest.as_uri()
    _relocate_all(result, moves)


def staged_root(files: list[str]) -> Path | None:
    """The folder the files of a job document were staged in (``inputs/cwl_files``)."""
    for f in files:
        for parent in Path(f).parents:
            if parent.name == FILES_INPUT and parent.parent.name == "inputs":
                return parent
    return None


def _entry(path: Path) -> dict[str, Any]:
    if path.is_dir():
        return {"class": "Directory", "basename": path.name, "path": str(path)}
    return {"class": "File", "basename": path.name, "path": str(path)}


def run(
    workflow: str,
    file_outputs: dict[str, str],
    inputs: dict[str, Any] | None = None,
    file_inputs: dict[str, str] | None = None,
    cwltool_options: list[str] | None = None,
    job: str | None = None,
    files: list[str] | None = None,
    ports: dict[str, str] | None = None,
    file_ports: dict[str, str] | None = None,
    job_only: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the CWL workflow; returns ``{"object": <cwltool's output object>}``, or with
    ``ports`` (CWL output id → flowdeck output) ``{"_object": …}`` and the value of each
    output that is not a File (File and File[] outputs are files under
    ``outputs/<port>/``).  ``job`` (JSON
    text): the CWL job document as sent (its relative locations name ``files``, else the
    workflow's own files), else the job is made of ``inputs``.  ``job_only`` is the
    server's (the inputs a job document alone can give)."""
    import cwltool.main  # here only: the step's own process pays for it

    code_dir = Path(str(sys.modules[SHIM_MODULE].__file__)).resolve().parent
    path, _, fragment = workflow.partition("#")
    main = (code_dir / path).resolve()
    if not main.is_relative_to(code_dir) or not main.is_file():
        raise FileNotFoundError(f"the workflow has no CWL file {workflow!r}")
    cwd = Path.cwd()
    job = job or None
    if job is not None:
        base = staged_root(files or []) if files else None
        document = _located(json.loads(job), base or code_dir)
    else:
        kinds = file_inputs or {}
        values = (inputs or {}).items()
        document = {k: _cwl_value(v, kinds.get(k)) for k, v in values if v is not None}
    _write_json(cwd / JOB_FILE, document)
    tmp = Path(os.environ.get("TMPDIR") or cwd)
    argv = [
        *DEFAULT_ARGS,
        *(["--relax-path-checks"] if job is not None else []),
        *_options(cwltool_options or []),
        "--outdir",
        str(cwd / RAW_OUTDIR),
        "--tmpdir-prefix",
        f"{tmp}/cwl-tmp-",
        "--tmp-outdir-prefix",
        f"{tmp}/cwl-out-",
        str(main) + (f"#{fragment}" if fragment else ""),
        str(cwd / JOB_FILE),
    ]
    print("cwltool " + shlex.join(argv), file=sys.stderr, flush=True)
    recorder = TaskRecorder(cwd / TASKS_FILE)
    logger = logging.getLogger("cwltool")
    logger.addHandler(recorder)
    out = io.StringIO()
    try:
        hook = _keep_schemas if WARM else None
        status = cwltool.main.main(argsl=argv, stdout=out, custom_schema_callback=hook)
    finally:
        logger.removeHandler(recorder)
    _write_json(cwd / STATUS_FILE, {"exit_code": status})
    if status != 0:
        raise RuntimeError(f"cwltool ended with status {status} (see the step's stderr)")
    result = json.loads(out.getvalue() or "{}")
    if not isinstance(result, dict):
        raise RuntimeError("cwltool wrote no output object")
    if ports is not None:
        _relocate_ports(result, ports, file_ports or {}, cwd)
        port_values = {p: result.get(i) for i, p in ports.items() if i not in (file_ports or {})}
        return {"_object": result, **port_values}
    if job is not None:
        _relocate_all(result, _Moves(cwd / OUTPUTS_DIR))
    else:
        _collect(result, file_outputs, cwd)
    return {"object": result}


def _options(words: list[str]) -> list[str]:
    allowed = set(engine_option_symbols())
    bad = [w for w in words if w not in allowed]
    if bad:
        raise ValueError(f"cwltool options not allowed: {', '.join(bad)}")
    return list(words)

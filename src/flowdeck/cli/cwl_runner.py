"""``flowdeck cwl-runner`` (also ``flowdeck-cwl-runner``): run a CWL document on a flowdeck
server as cwltool runs it here.

It sends the document, the local files it and its job name and the job itself through the
server's GA4GH WES API, follows the run, downloads the output files into ``--outdir`` and
prints the output object as cwltool does, ending with cwltool's exit codes: 0 done, 1
failed (or refused), 33 an unsupported requirement.  The server and the token come from
``--server``/``FLOWDECK_URL`` and ``FLOWDECK_TOKEN``, else from ``flowdeck login``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flowdeck.cli.common import err
from flowdeck.cli.lazy import help_of, plain_app

if TYPE_CHECKING:
    import httpx

EXIT_FAILED = 1
EXIT_UNSUPPORTED = 33  # cwltool's "unsupported requirement"
WES = "/ga4gh/wes/v1"
ENDED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
HELP = help_of("cwl-runner")

cwl_runner_app = plain_app(
    name="cwl-runner", help=HELP, pretty_exceptions_enable=False, add_completion=False
)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        err.print(message, highlight=False, markup=False)


def _token(server: str) -> str | None:
    import os

    from flowdeck.cli import credentials

    return os.environ.get("FLOWDECK_TOKEN") or credentials.saved_token(server)


def _document_version(tool: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(tool.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "v1.2"
    return str(data.get("cwlVersion", "v1.2")) if isinstance(data, dict) else "v1.2"


def prepare(tool_ref: str, job_ref: str | None) -> tuple[dict[str, str], dict[str, Path]]:
    """The WES form fields and the attachments (name → local file) of a run."""
    import yaml

    from flowdeck.cli.cwl_files import (
        Bundle,
        attachment_names,
        job_for_server,
        local_path,
        relocate,
    )

    cwd = Path.cwd()
    tool = local_path(tool_ref, cwd)
    if tool is None or not tool.is_file():
        raise FileNotFoundError(f"no CWL document {tool_ref!r}")
    fragment = tool_ref.partition("#")[2]
    bundle = Bundle()
    bundle.add_document(tool)
    job: Any = {}
    if job_ref:
        job_path = local_path(job_ref, cwd)
        if job_path is None or not job_path.is_file():
            raise FileNotFoundError(f"no job file {job_ref!r}")
        job = yaml.safe_load(job_path.read_text(encoding="utf-8")) or {}
        if not isinstance(job, dict):
            raise ValueError(f"{job_ref}: a job is a mapping of input names to values")
        job = job_for_server(job, job_path.resolve().parent, bundle, bundle.root)
    root = bundle.root()
    url = tool.resolve().relative_to(root).as_posix() + (f"#{fragment}" if fragment else "")
    fields = {
        "workflow_url": url,
        "workflow_type": "CWL",
        "workflow_type_version": _document_version(tool),
        "workflow_params": json.dumps(relocate(job, root)),
    }
    return fields, attachment_names(bundle, root)


def _submit(c: httpx.Client, fields: dict[str, str], files: dict[str, Path]) -> str:
    handles = [(name, path.open("rb")) for name, path in files.items()]
    try:
        parts = [("workflow_attachment", (name, f)) for name, f in handles]
        r = c.post(f"{WES}/runs", data=fields, files=parts)
    finally:
        for _, f in handles:
            f.close()
    if r.status_code != 200:
        try:
            message = r.json().get("msg") or r.text
        except ValueError:
            message = r.text
        raise RuntimeError(f"the server refused the run ({r.status_code}): {message}")
    return str(r.json()["run_id"])


def _follow(c: httpx.Client, run_id: str, quiet: bool) -> str:
    state, pause = "", 0.05
    while True:
        r = c.get(f"{WES}/runs/{run_id}/status")
        r.raise_for_status()
        now = str(r.json()["state"])
        if now != state:
            _say(quiet, f"run {run_id}: {now}")
            state = now
        if state in ENDED:
            return state
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)


def _show_stderr(c: httpx.Client, log: dict[str, Any]) -> None:
    url = (log.get("run_log") or {}).get("stderr")
    if isinstance(url, str):
        r = c.get(url)
        if r.status_code == 200:
            sys.stderr.write(r.text)


def run_cwl(server: str | None, outdir: Path, quiet: bool, tool: str, job: str | None) -> int:
    import httpx

    from flowdeck.cli import credentials
    from flowdeck.cli.cwl_files import bring_back

    base = credentials.resolve_server(server)
    token = _token(base)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        fields, files = prepare(tool, job)
    except (OSError, ValueError) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return EXIT_FAILED
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        try:
            run_id = _submit(c, fields, files)
        except RuntimeError as exc:
            err.print(f"error: {exc}", highlight=False, markup=False)
            return EXIT_FAILED
        state = _follow(c, run_id, quiet)
        r = c.get(f"{WES}/runs/{run_id}")
        r.raise_for_status()
        log = r.json()
        if state != "COMPLETE":
            _show_stderr(c, log)
            code = (log.get("run_log") or {}).get("exit_code")
            err.print(f"run {run_id} ended {state}", highlight=False, markup=False)
            return EXIT_UNSUPPORTED if code == EXIT_UNSUPPORTED else EXIT_FAILED

        def download(url: str, target: Path) -> None:
            with c.stream("GET", url) as got, target.open("wb") as f:
                got.raise_for_status()
                for chunk in got.iter_bytes():
                    f.write(chunk)

        outdir.mkdir(parents=True, exist_ok=True)
        result = bring_back(log.get("outputs") or {}, outdir.resolve(), download)
    sys.stdout.write(json.dumps(result, indent=4) + "\n")
    return 0


@cwl_runner_app.command(help=HELP)
def cwl_runner(
    tool: Annotated[str, typer.Argument(help="The CWL document (path#id for one process).")],
    job: Annotated[str | None, typer.Argument(help="The job (YAML or JSON) with inputs.")] = None,
    outdir: Annotated[
        Path, typer.Option("--outdir", help="Where output files are written.", file_okay=False)
    ] = Path("."),
    quiet: Annotated[bool, typer.Option("--quiet", help="Only the output object.")] = False,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Server URL (env FLOWDECK_URL; default: the last one)"),
    ] = None,
) -> None:
    raise typer.Exit(run_cwl(server, outdir, quiet, tool, job))


def main() -> None:
    """The ``flowdeck-cwl-runner`` entry point."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    cwl_runner_app()


if __name__ == "__main__":
    main()

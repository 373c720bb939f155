"""Storing CWL workflows: a CWL document, or an archive (or WES attachments) holding
CWL files, becomes a flowdeck workflow version with a generated spec (see
:mod:`flowdeck.engines.cwl`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from flowdeck.archive import ExtractedMember, extract_archive
from flowdeck.domain.privilege import Actor
from flowdeck.domain.validation import validate_text
from flowdeck.domain.workflows import Visibility
from flowdeck.engines.cwl import (
    SHIM_FILE,
    SHIM_SOURCE,
    SPEC_FILE,
    default_name,
    load_yaml,
    main_file_path,
    main_process,
    translate,
    translate_job_document,
)
from flowdeck.errors import ArchiveRejected, InvalidInput
from flowdeck.services.workflows import Pushed, Unpacked, Workflows

MAIN_NAMES = ("main.cwl", "workflow.cwl")


def _member(root: Path, path: Path) -> ExtractedMember:
    data = path.read_bytes()
    return ExtractedMember(
        path.relative_to(root).as_posix(), len(data), hashlib.sha256(data).hexdigest()
    )


def content_ref(main: str, files: dict[str, str], *, job_document: bool = False) -> str:
    """The ``name@version`` under which CWL files are stored when no version is given:
    content-addressed, from ``main`` (the file to run, maybe ``file.cwl#id``) and every
    file's SHA-256 by its relative path (``files``).  The same files and main, the same
    version: a store of them is found again before anything is written."""
    main = main_file_path(main) + ("#" + main.split("#", 1)[1] if "#" in main else "")
    lines = [f"main {main}"]
    lines += [f"{files[p]}  {p}" for p in sorted(files, key=lambda p: p.split("/"))]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    version = f"{'wes' if job_document else 'cwl'}-{digest[:12]}"
    return f"{default_name(main_file_path(main))}@{version}"


class CwlWorkflows:
    def __init__(self, workflows: Workflows) -> None:
        self.workflows = workflows

    def push_text(
        self,
        actor: Actor,
        text: str,
        visibility: Visibility,
        *,
        name: str | None = None,
        version: str | None = None,
        filename: str = "workflow.cwl",
    ) -> Pushed:
        """A single CWL document (or a packed one)."""
        root = self.workflows.new_temp_dir("cwl-")
        try:
            (root / filename).write_text(text, encoding="utf-8")
            return self.push_dir(actor, root, filename, visibility, name=name, version=version)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def push_archive(
        self,
        actor: Actor,
        archive: Path,
        visibility: Visibility,
        *,
        main: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> Pushed:
        """A .zip or .tar.gz of CWL files; ``main`` names the one to run (else the only
        top-level .cwl file, or main.cwl / workflow.cwl)."""
        dest = self.workflows.new_temp_dir("cwl-")
        try:
            members = extract_archive(archive, dest, self.workflows.limits)
            paths = {m.path for m in members}
            tops = {p.split("/", 1)[0] for p in paths}
            root = dest
            if len(tops) == 1 and not any(p.endswith(".cwl") and "/" not in p for p in paths):
                root = dest / next(iter(tops))
                paths = {p.split("/", 1)[1] for p in paths if "/" in p}
            main = main or self._find_main(root, paths)
            if main not in paths:
                raise InvalidInput(f"the archive has no file {main!r}", field="main")
            return self.push_dir(actor, root, main, visibility, name=name, version=version)
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    @staticmethod
    def _find_main(root: Path, paths: set[str]) -> str:
        top = sorted(p for p in paths if p.endswith(".cwl") and "/" not in p)
        for wanted in MAIN_NAMES:
            if wanted in top:
                return wanted
        workflows = [
            p
            for p in top
            if "class: Workflow" in (root / p).read_text(encoding="utf-8", errors="replace")
        ]
        if len(top) == 1 or len(workflows) == 1:
            return top[0] if len(top) == 1 else workflows[0]
        raise ArchiveRejected(
            "cannot tell which CWL file to run"
            + (f" among {', '.join(top)}" if top else ": the archive has no .cwl file at its top")
            + ": name it with ?main=",
            member=None,
            reason="no_main",
        )

    def push_dir(
        self,
        actor: Actor,
        root: Path,
        main: str,
        visibility: Visibility,
        *,
        name: str | None = None,
        version: str | None = None,
        job_document: bool = False,
    ) -> Pushed:
        """Store the CWL files under ``root`` (a temporary folder flowdeck owns: it is
        moved into the store or left for the caller to remove).  ``main`` may name one
        process of the file (``file.cwl#id``).  ``job_document``: runs take their CWL job
        document as sent (:func:`~flowdeck.engines.cwl.translate_job_document`)."""
        main = main_file_path(main) + ("#" + main.split("#", 1)[1] if "#" in main else "")
        main_path = root / main_file_path(main)
        if not main_path.is_file():
            raise InvalidInput(f"no CWL file {main!r}", field="workflow_url")
        try:
            text = main_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{main} is not UTF-8 text: {exc}", field="workflow") from exc
        process = main_process(load_yaml(text, main), main, main.partition("#")[2])
        for reserved in (SHIM_FILE, SPEC_FILE):
            if (root / reserved).exists():
                raise InvalidInput(f"{reserved!r} is a name flowdeck keeps for itself")
        members = [_member(root, p) for p in sorted(root.rglob("*")) if p.is_file()]
        name = name or default_name(main_file_path(main))
        if version is None:
            # content-addressed: the same files, this version
            files = {m.path: m.sha256 for m in members}
            version = content_ref(main, files, job_document=job_document).partition("@")[2]
            with self.workflows.store.read() as tx:
                existing = tx.find_workflow(actor.user_id, name, version)
            if existing is not None:
                return Pushed(existing, False)
        make = translate_job_document if job_document else translate
        spec = make(process, main, name, version)
        spec_text = json.dumps(spec, indent=2)
        (root / SHIM_FILE).write_text(SHIM_SOURCE, encoding="utf-8")
        (root / SPEC_FILE).write_text(spec_text, encoding="utf-8")
        members += [_member(root, root / SHIM_FILE), _member(root, root / SPEC_FILE)]
        valid = validate_text(spec_text, [m.path for m in members]).require()
        return self.workflows.store_unpacked(
            actor, valid, Unpacked(root, spec_text, members), visibility
        )

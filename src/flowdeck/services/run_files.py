"""Staging files for a run: uploads, data-root references and product snapshots (a mixin
of :class:`flowdeck.services.runs.Runs`)."""

from __future__ import annotations

import difflib
import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdeck import clock, durable
from flowdeck.config import Settings
from flowdeck.domain.privilege import Access, Actor
from flowdeck.domain.runs import Product, Run, StagedFile
from flowdeck.domain.spec import InputSpec, WorkflowSpec
from flowdeck.domain.text import check_name
from flowdeck.engines.cwl import takes_staged_files
from flowdeck.engines.cwl_names import FILES_INPUT
from flowdeck.errors import InvalidInput, NotFound
from flowdeck.runtime.rundir import RunDir
from flowdeck.services.cwl_jobs import check_staged_path
from flowdeck.services.quotas import Quotas
from flowdeck.store.base import Store, Tx


def is_file_input(inp: InputSpec) -> bool:
    """Whether an input takes files (or directories) rather than values."""
    return inp.type in ("file", "directory") or (
        inp.type == "array" and inp.items in ("file", "directory")
    )


class RunFiles:
    """The file-staging half of the runs service."""

    store: Store
    settings: Settings
    quotas: Quotas

    if TYPE_CHECKING:  # provided by Runs

        def rundir(self, run_id: str) -> RunDir: ...

        def product_path(self, product: Product) -> Path | None: ...

        @staticmethod
        def _load(tx: Tx, actor: Actor, run_id: str, access: Access = Access.READ) -> Run: ...

        @staticmethod
        def _event(tx: Tx, run: Run, type_: str, actor: Actor | None, **data: Any) -> None: ...

        def _staging(
            self, actor: Actor, run_id: str
        ) -> AbstractContextManager[tuple[Tx, Run, WorkflowSpec]]: ...

    def _file_input(self, spec: WorkflowSpec, name: str) -> InputSpec:
        inp = spec.inputs.get(name)
        if inp is None:
            near = difflib.get_close_matches(name, list(spec.inputs), n=1)
            raise NotFound(
                f"no input {name!r}" + (f"; did you mean {near[0]!r}?" if near else ""), input=name
            )
        if not is_file_input(inp):
            raise InvalidInput(
                f"input {name!r} is a {inp.type_name}, not a file: set it with "
                "PATCH /api/v1/runs/{id}/params",
                input=name,
            )
        return inp

    def stage_file(
        self,
        actor: Actor,
        run_id: str,
        input: str,
        filename: str,
        temp: Path,
        size: int,
        sha256: str,
    ) -> StagedFile:
        """Move an uploaded temporary file into the run's inputs (replacing one with the
        same name; a single-file input keeps only the newest).  The files a CWL job
        document names (``cwl_files``) are staged under their relative paths."""
        relative = input == FILES_INPUT
        if not relative:
            _check_filename(filename)
        with self._staging(actor, run_id) as (tx, run, spec):
            inp = self._file_input(spec, input)
            if relative and not takes_staged_files(spec):
                _check_filename(filename)
            elif relative:
                names = [f.filename for f in tx.list_staged_files(run.id) if f.input == input]
                check_staged_path(filename, [n for n in names if n != filename])
            replaced = sum(
                f.size
                for f in tx.list_staged_files(run.id)
                if f.input == input and f.filename == filename and f.source != "data_root"
            )
            self.quotas.check_stored(tx, run.owner_id, size, replaced)  # 413, nothing changed
            target = self.rundir(run.id).input_dir(input) / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            durable.replace(temp, target)
            staged = StagedFile(
                run.id, input, filename, str(target), size, sha256, "upload", clock.now()
            )
            self._replace_staged(tx, run, inp, staged)
            self._event(
                tx,
                run,
                "staging.file",
                actor,
                input=input,
                filename=filename,
                size=size,
                sha256=sha256,
            )
        return staged

    def _replace_staged(self, tx: Tx, run: Run, inp: InputSpec, staged: StagedFile) -> None:
        if inp.type != "array":
            for old in tx.list_staged_files(run.id):
                if old.input == staged.input and old.filename != staged.filename:
                    tx.delete_staged_file(run.id, old.input, old.filename)
                    if old.source != "data_root":
                        Path(old.path).unlink(missing_ok=True)
        tx.put_staged_file(staged)

    def reference(
        self,
        actor: Actor,
        run_id: str,
        input: str,
        *,
        data_path: str | None = None,
        product_run: str | None = None,
        product: str | None = None,
    ) -> StagedFile:
        """Stage a file under the data root (read in place), or a snapshot of another run's
        product (a hard link, or a copy across file systems)."""
        with self.store.read() as tx:
            self._load(tx, actor, run_id, Access.WRITE)  # 404 first, whatever the body
            source_path, source = self._reference_source(tx, actor, data_path, product_run, product)
        with self._staging(actor, run_id) as (tx, run, spec):
            inp = self._file_input(spec, input)
            if (inp.type == "directory" and not source_path.is_dir()) or (
                inp.type != "directory" and not source_path.is_file()
            ):
                raise InvalidInput(
                    f"input {input!r} needs a {inp.type_name}; {source_path.name!r} is not one",
                    input=input,
                )
            path = source_path
            if source != "data_root":
                path = self.rundir(run.id).input_dir(input) / source_path.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.unlink(missing_ok=True)
                try:
                    os.link(source_path, path)
                except OSError:
                    shutil.copy2(source_path, path)
            size = path.stat().st_size if path.is_file() else 0
            staged = StagedFile(
                run.id, input, path.name, str(path), size, None, source, clock.now()
            )
            self._replace_staged(tx, run, inp, staged)
            self._event(
                tx, run, "staging.file", actor, input=input, filename=path.name, source=source
            )
        return staged

    def _reference_source(
        self,
        tx: Tx,
        actor: Actor,
        data_path: str | None,
        product_run: str | None,
        product: str | None,
    ) -> tuple[Path, str]:
        if data_path is not None:
            root = self.settings.data_root
            if root is None:
                raise InvalidInput(
                    "this server has no data root to reference files from", field="data_path"
                )
            under = (root / data_path).resolve()
            if not under.is_relative_to(root.resolve()) or not under.exists():
                raise NotFound(f"no file {data_path!r} under the data root", field="data_path")
            return under, "data_root"
        if product_run is None or product is None:
            raise InvalidInput("give data_path, or run and product", field="data_path")
        src_run = self._load(tx, actor, product_run)
        found = next((p for p in tx.list_products(src_run.id) if product in (p.id, p.name)), None)
        path = self.product_path(found) if found else None
        if found is None or path is None or not path.is_file():
            raise NotFound(f"run {product_run} has no product {product!r}", field="product")
        return path, f"product:{src_run.id}/{found.name}"

    def unstage_file(self, actor: Actor, run_id: str, input: str, filename: str) -> None:
        with self._staging(actor, run_id) as (tx, run, _spec):
            staged = next(
                (
                    f
                    for f in tx.list_staged_files(run.id)
                    if f.input == input and f.filename == filename
                ),
                None,
            )
            if staged is None:
                raise NotFound(f"no staged file {filename!r} for input {input!r}")
            tx.delete_staged_file(run.id, input, filename)
            if staged.source != "data_root":
                Path(staged.path).unlink(missing_ok=True)
            self._event(tx, run, "staging.file_removed", actor, input=input, filename=filename)

    def staged_files(self, actor: Actor, run_id: str) -> list[StagedFile]:
        with self.store.read() as tx:
            run = self._load(tx, actor, run_id)
            return tx.list_staged_files(run.id)


def _check_filename(name: str) -> None:
    check_name(name, field="filename", what="file name")
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or len(name.encode()) > 255
    ):
        raise InvalidInput(
            f"invalid file name {name!r}: a plain name, without '/'", field="filename"
        )

"""How the API shows a run's files: never by the server's paths.

A file parameter or output is stored as the absolute path the step saw; clients get
``{name, size, url}`` instead (the file's name, its size in bytes, and where to download
it: the product, or the staged file).  In CWL's File and Directory objects, ``location``
becomes the download URL and ``path`` goes.  The members of ``products.zip`` are named after
the products' files too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import unquote

from flowdeck.api.schemas_graphs import GraphOut
from flowdeck.api.schemas_runs import RunOut, StepOut, staged_url
from flowdeck.domain.runs import Product, StagedFile
from flowdeck.services.context import Context

Out = TypeVar("Out", bound=RunOut)

API = "/api/v1"


def product_ref(p: Product) -> dict[str, Any]:
    return {
        "name": PurePosixPath(p.path).name,
        "size": p.size,
        "url": f"{API}/runs/{p.run_id}/products/{p.id}",
    }


def staged_ref(f: StagedFile) -> dict[str, Any]:
    return {"name": f.filename, "size": f.size, "url": staged_url(f)}


@functools.lru_cache(maxsize=8)
def _roots(data_dir: Path, data_root: Path | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Where the server's paths start (the data directory and root, as given and
    resolved), and where its runs' directories start."""
    dirs = {data_dir.absolute(), data_dir.resolve()}
    roots = set(dirs)
    if data_root is not None:
        roots |= {data_root.absolute(), data_root.resolve()}
    return (
        tuple(sorted(str(r) + os.sep for r in roots)),
        tuple(sorted(str(d / "runs") + os.sep for d in dirs)),
    )


class FileView:
    """Replaces the server's paths in run values (parameters, outputs) by file
    references.  Reads the store only when a value holds such a path, once per run."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.roots, self.runs_dirs = _roots(ctx.settings.data_dir, ctx.settings.data_root)
        self.known: dict[str, dict[str, Any]] = {}
        self.loaded: set[str] = set()

    def _server_path(self, value: str) -> str | None:
        """The path on the server that ``value`` names (a path, or a ``file:`` URI as CWL
        writes them), if it is one."""
        if value.startswith("file://"):
            value = unquote(value.removeprefix("file://"))
        return value if value.startswith(self.roots) else None

    def _paths(self, value: Any) -> Iterator[str]:
        if isinstance(value, str):
            path = self._server_path(value)
            if path is not None:
                yield path
        elif isinstance(value, list):
            for item in value:
                yield from self._paths(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from self._paths(item)

    def _run_of(self, path: str) -> str | None:
        for prefix in self.runs_dirs:
            if path.startswith(prefix):
                return path[len(prefix) :].split(os.sep, 1)[0] or None
        return None

    def _load(self, run_ids: set[str]) -> None:
        wanted = run_ids - self.loaded
        if not wanted:
            return
        with self.ctx.store.read() as tx:
            for run_id in sorted(wanted):
                root = self.ctx.runs.rundir(run_id).root
                for p in tx.list_products(run_id):
                    self.known[os.path.normpath(root / p.path)] = product_ref(p)
                for f in tx.list_staged_files(run_id):
                    self.known[os.path.normpath(f.path)] = staged_ref(f)
        self.loaded |= wanted

    def _ref(self, path: str) -> dict[str, Any]:
        found = self.known.get(os.path.normpath(path))
        if found is not None:
            return dict(found)
        try:  # not a product nor a staged file (a directory, say): its name, no link
            size: int | None = os.stat(path).st_size if os.path.isfile(path) else None
        except OSError:
            size = None
        return {"name": PurePosixPath(path).name, "size": size, "url": None}

    def _replace(self, value: Any) -> Any:
        if isinstance(value, str):
            path = self._server_path(value)
            return value if path is None else self._ref(path)
        if isinstance(value, list):
            return [self._replace(item) for item in value]
        if isinstance(value, dict):
            if value.get("class") in ("File", "Directory"):
                return self._cwl(value)
            return {key: self._replace(item) for key, item in value.items()}
        return value

    def _cwl(self, value: dict[str, Any]) -> dict[str, Any]:
        """A CWL File or Directory object keeps its shape: ``location`` becomes its
        download URL (a File's that is a product or a staged file; else it is left out),
        ``path`` and ``dirname`` go."""
        place = value.get("path") or value.get("location")
        path = self._server_path(place) if isinstance(place, str) else None
        if path is None:
            return {key: self._replace(item) for key, item in value.items()}
        hidden = ("location", "path", "dirname")
        out = {key: self._replace(item) for key, item in value.items() if key not in hidden}
        url = self._ref(path)["url"] if value["class"] == "File" else None
        if url:
            out["location"] = url
        return out

    def show(self, run_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (a run's or a step's) with every server path replaced."""
        paths = list(self._paths(values))
        if not paths:
            return values
        runs = {run_id} | {r for r in map(self._run_of, paths) if r}
        self._load(runs)
        shown: dict[str, Any] = self._replace(values)
        return shown


def shown(ctx: Context, out: Out, view: FileView | None = None) -> Out:
    """A run's status with file references for the server's paths in its parameters and
    outputs."""
    view = view or FileView(ctx)
    out.params = view.show(out.id, out.params)
    out.outputs = view.show(out.id, out.outputs)
    return out


def shown_steps(ctx: Context, steps: list[StepOut], run_id: str) -> list[StepOut]:
    """Steps with file references for the server's paths in their outputs."""
    view = FileView(ctx)
    for step in steps:
        step.outputs = view.show(step.run_id or run_id, step.outputs)
    return steps


def shown_graph(ctx: Context, out: GraphOut) -> GraphOut:
    """A graph's status with file references for the server's paths in its nodes'
    outputs."""
    view = FileView(ctx)
    for node in out.nodes:
        if node.run_id:
            node.outputs = view.show(node.run_id, node.outputs)
    return out


def zip_members(products: list[tuple[Product, Path]]) -> list[tuple[str, Path]]:
    """The member names of ``products.zip``: each product's file name; a name that several
    products share goes into a folder named after each product (``step[0].out/out.txt``).
    The same products give the same names, in the same order."""
    ordered = sorted(products, key=lambda item: item[0].name)
    counts: dict[str, int] = {}
    for p, _ in ordered:
        name = PurePosixPath(p.path).name
        counts[name] = counts.get(name, 0) + 1
    folders = {p.name for p, _ in ordered if counts[PurePosixPath(p.path).name] > 1}
    members: list[tuple[str, Path]] = []
    used: set[str] = set()
    for p, path in ordered:
        file = PurePosixPath(p.path).name
        name = file
        # a lone name equal to a folder would clash with it on extraction: into its own
        if counts[file] > 1 or file in folders:
            name = f"{p.name}/{file}"
        if name in used:  # two products of one name: their ids tell them apart
            name = f"{p.id}/{file}"
        used.add(name)
        members.append((name, path))
    return members

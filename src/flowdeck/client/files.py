"""Local files of the SDK: workflow directories packed on the fly, graph description files
and downloads written atomically.  No input/output with the server here."""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from flowdeck.client.errors import InvalidRequest

SPOOL_BYTES = 8 << 20  # directory archives bigger than this go to a temporary file
CHUNK = 1 << 16
SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".venv"})
SPEC_SUFFIXES = {
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".json": "application/json",
    ".cwl": "application/yaml",
}
ARCHIVE_SUFFIXES = {
    ".zip": "application/zip",
    ".tar.gz": "application/gzip",
    ".tgz": "application/gzip",
}
WORKFLOW_TYPES = ("auto", "flowdeck", "CWL")
GRAPH_KEYS = ("name", "nodes", "edges", "bindings")


def content_type_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, media in {**ARCHIVE_SUFFIXES, **SPEC_SUFFIXES}.items():
        if name.endswith(suffix):
            return media
    return None


def _members(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in SKIPPED_NAMES for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            yield path


def directory_archive(root: Path) -> IO[bytes]:
    """A .tar.gz of a workflow directory (regular files only: links would be refused),
    in memory while small, in a temporary file beyond ``SPOOL_BYTES``; rewound."""
    buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in _members(root):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as f:
                tar.addfile(info, f)
    buffer.seek(0)
    return buffer


def workflow_body(path: Path) -> tuple[IO[bytes], str]:
    """The body and Content-Type that push ``path``: a spec, an archive, or a directory
    (archived on the fly)."""
    if path.is_dir():
        return directory_archive(path), "application/gzip"
    if not path.is_file():
        raise InvalidRequest(0, "not_found", f"no such file or directory: {path}")
    media = content_type_of(path)
    if media is None:
        raise InvalidRequest(
            0,
            "invalid_input",
            f"{path}: expected a .yaml, .yml, .json or .cwl document, a .zip, .tar.gz or "
            ".tgz archive, or a directory",
        )
    return path.open("rb"), media


def cwl_name(path: Path) -> str:
    """A workflow name (lower case letters, digits, '.', '_', '-') from a file name."""
    stem = path.name.rsplit(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:60] or "workflow"


def push_query(
    path: Path,
    visibility: str,
    workflow_type: str = "auto",
    main: str | None = None,
    name: str | None = None,
    version: str | None = None,
) -> dict[str, str]:
    """The query of ``POST /workflows``: a single ``.cwl`` file is named after the file
    (the server only sees its content) unless ``name`` is given."""
    kind = {"cwl": "CWL", "flowdeck": "flowdeck", "auto": "auto"}.get(workflow_type.lower())
    if kind is None:
        raise InvalidRequest(
            0, "invalid_input", f"workflow type {workflow_type!r}: expected auto, flowdeck or CWL"
        )
    if name is None and path.is_file() and path.suffix.lower() == ".cwl":
        name = cwl_name(path)
    query = {"visibility": visibility, "workflow_type": kind}
    for key, value in (("main", main), ("name", name), ("version", version)):
        if value:
            query[key] = value
    return query


def read_chunks(body: IO[bytes]) -> Iterator[bytes]:
    """The content of an open file, chunk by chunk (the caller closes it)."""
    while chunk := body.read(CHUNK):
        yield chunk


def download_target(dest: Path, name: str) -> Path:
    """Where a download named ``name`` goes: into ``dest`` if it is a directory."""
    return dest / Path(name).name if dest.is_dir() else dest


class AtomicFile:
    """A file written under a temporary name beside ``target`` and renamed to it when the
    block ends without an error (removed otherwise): a reader never sees half a file."""

    def __init__(self, target: Path) -> None:
        self.target = target
        fd, self._tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        self._out = os.fdopen(fd, "wb")

    def __enter__(self) -> IO[bytes]:
        return self._out

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._out.close()
        if kind is None:
            os.replace(self._tmp, self.target)
        else:
            Path(self._tmp).unlink(missing_ok=True)


def load_graph_file(path: str | Path) -> dict[str, Any]:
    """A graph description from a YAML or JSON file: ``{name, nodes, edges, bindings}``."""
    import yaml  # here only: importing the SDK (and starting the CLI) needs no YAML

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(0, "not_found", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidRequest(0, "invalid_input", f"{path}: not valid YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(0, "invalid_input", f"{path}: expected a mapping with nodes")
    unknown = sorted(set(data) - set(GRAPH_KEYS))
    if unknown:
        raise InvalidRequest(
            0,
            "invalid_input",
            f"{path}: unknown key {unknown[0]!r} (expected {', '.join(GRAPH_KEYS)})",
        )
    return {k: data[k] for k in GRAPH_KEYS if k in data}

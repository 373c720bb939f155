"""What the synchronous and asynchronous clients share: request shapes, events, archives
of workflow directories and the reconnect policy of event streams."""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flowdeck.client.errors import ApiError, InvalidRequest

API = "/api/v1"
Query = list[tuple[str, str | int | float | bool | None]]
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "killed", "system_error"})
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


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a run, as the server sends it."""

    id: int
    run_id: str
    seq: int
    type: str
    at: str
    actor: str | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Event:
        return cls(
            id=int(body["id"]),
            run_id=str(body["run_id"]),
            seq=int(body["seq"]),
            type=str(body["type"]),
            at=str(body["at"]),
            actor=body.get("actor"),
            data=dict(body.get("data") or {}),
        )

    @classmethod
    def parse(cls, text: str) -> Event:
        return cls.of(json.loads(text))

    @property
    def ends_run(self) -> bool:
        """A ``run.<terminal state>`` event: nothing follows it."""
        kind, _, state = self.type.partition(".")
        return kind == "run" and state in TERMINAL_STATES


@dataclass
class Reconnect:
    """How an event stream reconnects: after ``max_failures`` attempts in a row that
    deliver nothing, the last error is raised."""

    max_failures: int = 8
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0
    failures: int = 0

    def delivered(self) -> None:
        self.failures = 0

    def failed(self, exc: Exception) -> float:
        """Count a failure; the delay before the next attempt, or raise ``exc``."""
        self.failures += 1
        if self.failures > self.max_failures:
            raise exc
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (self.failures - 1)))


def retryable(exc: ApiError) -> bool:
    """Connection trouble and 5xx are worth another attempt; 4xx never are."""
    return exc.status == 0 or exc.status >= 500


def stream_headers(last_event_id: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


def event_query(
    runs: list[str] | None, types: list[str] | None, after: int | None, limit: int | None = None
) -> Query:
    query: Query = [("run", r) for r in runs or []]
    query += [("type", t) for t in types or []]
    if after is not None:
        query.append(("after", after))
    if limit is not None:
        query.append(("limit", limit))
    return query


def run_query(
    state: list[str] | str | None,
    workflow: str | None,
    tag: str | None,
    owner: str | None,
    limit: int,
    cursor: str | None,
) -> Query:
    states = [state] if isinstance(state, str) else state or []
    query: Query = [("state", s) for s in states]
    for name, value in (("workflow", workflow), ("tag", tag), ("owner", owner)):
        if value:
            query.append((name, value))
    if cursor:
        query.append(("cursor", cursor))
    query.append(("limit", limit))
    return query


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


WORKFLOW_TYPES = ("auto", "flowdeck", "CWL")


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


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def save_atomically(target: Path, chunks: Iterator[bytes]) -> Path:
    """Write ``chunks`` to a temporary name beside ``target``, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def download_target(dest: Path, name: str) -> Path:
    return dest / Path(name).name if dest.is_dir() else dest

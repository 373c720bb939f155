"""The local files of a CWL run sent to a server (``flowdeck cwl-runner``): the documents a
tool refers to, the files of its job, their relative names as attachments, and the output
files brought back into ``--outdir``.  Plain YAML and paths: no cwltool on the client."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import yaml

# keys of a CWL document whose string value may name another local file
_DOC_REFS = ("run", "$import", "$include", "location", "path")
_DOCUMENT_SUFFIXES = (".cwl", ".yml", ".yaml", ".json")


def local_path(ref: str, base: Path) -> Path | None:
    """``ref`` (a relative path, an absolute one or a ``file://`` URI, with or without a
    ``#fragment``) as a local path; None for other URLs and for ``$(...)`` expressions."""
    ref = ref.split("#", 1)[0]
    if not ref or "$(" in ref or "${" in ref:
        return None
    scheme = urlsplit(ref).scheme
    if scheme == "file":
        return Path(unquote(urlsplit(ref).path))
    if scheme and len(scheme) > 1:  # http:, https:, … (one letter: a Windows drive)
        return None
    return base / unquote(ref) if not ref.startswith("/") else Path(ref)


@dataclass
class Bundle:
    """The files to attach (absolute, resolved) and the job as it will be sent."""

    files: set[Path] = field(default_factory=set)
    folders: set[Path] = field(default_factory=set)  # (empty ones included)
    documents: set[Path] = field(default_factory=set)

    def add_tree(self, path: Path) -> None:
        if path.is_file():
            self.add_siblings(path)
        if path.is_dir():
            self.folders.add(path)
            for child in path.rglob("*"):
                if child.is_file():
                    self.files.add(child.resolve())
                elif child.is_dir():
                    self.folders.add(child.resolve())
        elif path.is_file():
            self.files.add(path.resolve())

    def add_siblings(self, path: Path) -> None:
        """The files next to a job's File whose names start as its name without its
        extension: its secondary files, which cwltool finds by the tool's patterns."""
        stem = path.name.rsplit(".", 1)[0] if "." in path.name[1:] else path.name
        for sibling in path.parent.iterdir():
            if sibling.name.startswith(stem) and sibling.is_file():
                self.files.add(sibling.resolve())

    def add_document(self, path: Path) -> None:
        """A CWL or YAML document and, recursively, the local files it names."""
        path = path.resolve()
        if path in self.documents or not path.is_file():
            return
        self.documents.add(path)
        self.files.add(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return
        self._walk(data, path.parent)

    def _walk(self, node: Any, base: Path) -> None:
        if isinstance(node, list):
            for item in node:
                self._walk(item, base)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key == "$schemas" and isinstance(value, list):  # ontologies for `format`
                for ref in value:
                    target = local_path(str(ref), base) if isinstance(ref, str) else None
                    if target is not None and target.is_file():
                        self.files.add(target.resolve())
            elif key in _DOC_REFS and isinstance(value, str):
                target = local_path(value, base)
                if target is None or not target.exists():
                    continue
                if target.is_file() and target.suffix in _DOCUMENT_SUFFIXES and key != "$include":
                    self.add_document(target)
                else:
                    self.add_tree(target)
            else:
                self._walk(value, base)

    def root(self) -> Path:
        """The deepest folder holding every file (the attachments' names start there)."""
        places = [str(p.parent) for p in self.files] + [str(p) for p in self.folders]
        return Path(os.path.commonpath(places)) if places else Path.cwd()


def job_for_server(job: Any, base: Path, bundle: Bundle, root: Callable[[], Path]) -> Any:
    """The job with every local File and Directory added to ``bundle``; call
    :func:`relocate` afterwards (the root is known once every file is in)."""
    if isinstance(job, list):
        return [job_for_server(v, base, bundle, root) for v in job]
    if not isinstance(job, dict):
        return job
    out = {k: job_for_server(v, base, bundle, root) for k, v in job.items()}
    if job.get("class") in ("File", "Directory"):
        ref = job.get("location") or job.get("path")
        if isinstance(ref, str):
            target = local_path(ref, base)
            if target is not None:
                bundle.add_tree(target)
                out["location"] = target.resolve().as_uri()
                out.pop("path", None)
    return out


def relocate(job: Any, root: Path) -> Any:
    """Absolute ``file://`` locations under ``root`` become the attachments' names."""
    if isinstance(job, list):
        return [relocate(v, root) for v in job]
    if not isinstance(job, dict):
        return job
    out = {k: relocate(v, root) for k, v in job.items()}
    loc = out.get("location")
    if job.get("class") in ("File", "Directory") and isinstance(loc, str):
        path = local_path(loc, root)
        if path is not None and path.is_relative_to(root):  # a relative URI reference
            out["location"] = quote(path.relative_to(root).as_posix())
    return out


def attachment_names(bundle: Bundle, root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(bundle.files)}


def _unique(folder: Path, name: str) -> Path:
    target = folder / name
    n = 2
    while target.exists():
        target = folder / f"{name}_{n}"
        n += 1
    return target


def bring_back(
    value: Any,
    folder: Path,
    download: Callable[[str, Path], None],
    seen: dict[str, Path] | None = None,
) -> Any:
    """The output object with every File and Directory written under ``folder`` (files
    downloaded from their ``location``, once each however often they are named), located
    there as cwltool locates its outputs."""
    seen = {} if seen is None else seen
    if isinstance(value, list):
        return [bring_back(v, folder, download, seen) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("class")
    if kind not in ("File", "Directory"):
        return {k: bring_back(v, folder, download, seen) for k, v in value.items()}
    out = dict(value)
    loc = value.get("location")
    remote = isinstance(loc, str) and loc.startswith(("http://", "https://"))
    name = str(value.get("basename") or _url_name(loc) or kind.lower())
    target = seen.get(str(loc)) if remote else None
    if target is not None and target.parent != folder:  # elsewhere: in a Directory
        copy = _unique(folder, name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, copy)
        target = copy
    elif target is None:
        target = _unique(folder, name)
        if kind == "Directory":
            target.mkdir(parents=True)
        elif remote:
            target.parent.mkdir(parents=True, exist_ok=True)
            download(str(loc), target)
            seen[str(loc)] = target
        elif "contents" in value:
            target.write_text(str(value["contents"]), encoding="utf-8")
    if kind == "Directory":
        out["listing"] = [bring_back(v, target, download, seen) for v in value.get("listing") or []]
    elif "secondaryFiles" in value:
        out["secondaryFiles"] = [
            bring_back(v, folder, download, seen) for v in value["secondaryFiles"]
        ]
    out["location"] = target.as_uri()
    out["path"] = str(target)
    out.setdefault("basename", target.name)
    return out


def _url_name(location: Any) -> str:
    return unquote(urlsplit(location).path.rsplit("/", 1)[-1]) if isinstance(location, str) else ""


def load_job(path: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """A local CWL job document (YAML or JSON) as sent to a stored CWL workflow: its local
    Files and Directories named by relative paths (from the job's folder when they are all
    under it, else from the deepest folder holding them all), and the files to stage under
    those paths (secondary files and Directory contents included)."""
    job = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(job, dict):
        raise ValueError(f"{path}: a CWL job is a mapping of input names to values")
    bundle = Bundle()
    base = path.resolve().parent
    job = job_for_server(job, base, bundle, bundle.root)
    inside = all(p.is_relative_to(base) for p in (*bundle.files, *bundle.folders))
    root = base if inside else bundle.root()
    return relocate(job, root), attachment_names(bundle, root)

"""The CWL side of WES runs that take their job document as sent: where its files are
(attachments by their relative paths), what cwltool's exit status was, and the output
object with download URLs."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from flowdeck.engines.cwl_names import STATUS_FILE
from flowdeck.errors import InvalidInput, NotFound

WES_PATH = "ga4gh/wes/v1"  # under the server's base URL


def safe_relative(name: str) -> str:
    """An attachment's name as a safe relative path, else 400."""
    path = PurePosixPath(name)
    if (
        not name
        or path.is_absolute()
        or "\\" in name
        or any(ord(c) < 32 for c in name)
        or any(p in ("", ".", "..") for p in name.split("/"))
        or len(name.encode()) > 1024
    ):
        raise InvalidInput(
            f"workflow_attachment {name!r}: only safe relative paths are accepted",
            field="workflow_attachment",
        )
    return path.as_posix()


def rundir_status(step_dir: Path) -> int | None:
    """cwltool's exit status as the CWL step recorded it, if it did."""
    try:
        data = json.loads((step_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    code = data.get("exit_code") if isinstance(data, dict) else None
    return code if isinstance(code, int) else None


def located_job(
    job: Any, attachments: set[str], data_root: Path | None, where: str = "workflow_params"
) -> Any:
    """A CWL job as sent, with only the locations of its local Files and Directories
    rewritten: each names an attachment (a folder of attachments for a Directory) by its
    relative path as sent; a path elsewhere (a client's own, as wes-client sends) names
    the one attachment of that file name; a path under the server's data root stays.
    Literals (no location) and other URLs are cwltool's to read.  Anything else is
    refused."""
    if isinstance(job, list):
        return [located_job(v, attachments, data_root, f"{where}[{i}]") for i, v in enumerate(job)]
    if not isinstance(job, dict):
        return job
    out = {k: located_job(v, attachments, data_root, f"{where}.{k}") for k, v in job.items()}
    ref = job.get("location") or job.get("path")
    if job.get("class") not in ("File", "Directory") or not isinstance(ref, str):
        return out
    scheme = ref.split(":", 1)[0] if ":" in ref.split("/", 1)[0] else ""
    if scheme and scheme != "file":
        return out
    path = unquote(ref.removeprefix("file://"))
    while path.startswith("./"):
        path = path[2:]
    path = path.rstrip("/") or path
    if data_root is not None and path.startswith("/"):
        real, root = Path(path).resolve(), data_root.resolve()
        if real.is_relative_to(root) and real.exists():  # the server's shared data
            out["location"] = real.as_uri()
            out.pop("path", None)
            return out
    if not path.startswith("/"):
        try:
            name = safe_relative(path)
        except InvalidInput:
            raise InvalidInput(
                f"{where}: {ref!r} is not a safe relative path (no '..', no control characters)",
                field="workflow_params",
            ) from None
        if name not in attachments and not any(a.startswith(f"{name}/") for a in attachments):
            raise InvalidInput(
                f"{where}: {ref!r} is not an attachment (nor a folder of attachments)",
                field="workflow_params",
            )
    else:
        base = PurePosixPath(path).name
        same = [a for a in attachments if PurePosixPath(a).name == base]
        if len(same) != 1 or job.get("class") != "File":
            raise InvalidInput(
                f"{where}: {ref!r} is not an attachment"
                + (" (several attachments have that name)" if len(same) > 1 else "")
                + ": attach it and name it by its attachment's relative path",
                field="workflow_params",
            )
        name = same[0]
    out["location"] = quote(name)  # a relative URI reference, as cwltool reads it
    out.pop("path", None)
    return out


def rewrite_outputs(
    value: Any,
    products: dict[str, Any],
    rundir: Path,
    run_url: str,
    keys: tuple[str, ...] = (),
) -> Any:
    """cwltool's output object with file locations turned into product download URLs
    ending in the file's name (under the WES prefix, where WES clients' credentials are
    accepted); a Directory's location is the URL of a zip of its files, ending in its name
    (``directories/<where it is in the object>/<name>``)."""
    if isinstance(value, list):
        return [
            rewrite_outputs(v, products, rundir, run_url, (*keys, str(i)))
            for i, v in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    out = {
        k: rewrite_outputs(v, products, rundir, run_url, (*keys, str(k))) for k, v in value.items()
    }
    if value.get("class") == "File" and value.get("path"):
        product = products.get(_relative(value["path"], rundir))
        out.pop("path", None)
        if product is not None:
            name = quote(Path(str(value["path"])).name)
            out["location"] = f"{run_url}/products/{product.id}/{name}"
        else:
            out.pop("location", None)
    elif value.get("class") == "Directory":
        out.pop("path", None)
        where = "/".join(quote(k, safe="") for k in keys)
        name = quote(str(value.get("basename") or "directory"), safe="")
        out["location"] = f"{run_url}/directories/{where}/{name}"
    return out


def native_outputs(value: Any, products: dict[str, Any], rundir: Path, run_url: str) -> Any:
    """A flowdeck workflow's outputs with each file (a server path) turned into its
    product's download URL under the WES prefix, ending in the file's name."""
    if isinstance(value, list):
        return [native_outputs(v, products, rundir, run_url) for v in value]
    if isinstance(value, dict):
        return {k: native_outputs(v, products, rundir, run_url) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("/"):
        product = products.get(_relative(value, rundir))
        if product is not None:
            return f"{run_url}/products/{product.id}/{quote(Path(value).name)}"
    return value


def _relative(path: Any, rundir: Path) -> str:
    try:
        return Path(str(path)).relative_to(rundir).as_posix()
    except ValueError:
        return ""


def directory_files(
    cwl_object: Any, where: str, products: dict[str, Any], rundir: Path
) -> tuple[str, list[tuple[str, Path]]]:
    """The Directory at ``where`` (``<keys…>/<name>`` as :func:`rewrite_outputs` wrote it) of
    an output object: its name and its files (products only), each under its path inside
    the Directory."""
    *keys, _name = [unquote(k) for k in where.split("/")]
    node = cwl_object
    for key in keys:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            node = None
            break
    if not keys or not isinstance(node, dict) or node.get("class") != "Directory":
        raise NotFound(f"the run's outputs have no Directory {where!r}")
    members: list[tuple[str, Path]] = []

    def walk(listing: Any, prefix: str) -> None:
        for entry in listing if isinstance(listing, list) else []:
            if not isinstance(entry, dict):
                continue
            name = f"{prefix}{entry.get('basename') or ''}"
            if entry.get("class") == "Directory":
                walk(entry.get("listing"), f"{name}/")
            elif entry.get("class") == "File" and entry.get("path"):
                product = products.get(_relative(entry["path"], rundir))
                if product is not None:
                    members.append((name, Path(str(entry["path"]))))

    walk(node.get("listing"), "")
    return str(node.get("basename") or "directory"), members

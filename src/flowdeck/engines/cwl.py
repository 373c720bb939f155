"""CWL documents as flowdeck workflows.

A CWL workflow is stored as a normal flowdeck workflow with an archive: the CWL files as
they were given, a one-line shim module, and a generated flowdeck spec whose typed inputs
are the CWL inputs and whose single python step (:data:`CWL_STEP`) runs cwltool on them
(:mod:`flowdeck.engines.cwl_runner`, in the step's own process group).  This module reads
CWL as plain YAML: it never imports cwltool (the server stays light).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from flowdeck.domain.spec import NAME_PATTERN, WorkflowSpec
from flowdeck.engines.cwl_names import (
    CWL_STEP,
    CWL_VERSIONS,
    ENGINE_INPUT,
    ENGINE_OPTIONS,
    JOB_INPUT,
    OUTPUT_OBJECT,
    OUTPUTS_DIR,
    REQUEST_INPUT,
    SHIM_FILE,
    SHIM_MODULE,
    SHIM_SOURCE,
    SHIM_TARGET,
    SPEC_FILE,
    TASKS_FILE,
    WORKFLOW_TYPES,
    engine_option_symbols,
)
from flowdeck.errors import CwlUnsupported, InvalidInput
from flowdeck.jsonlimits import check_yaml_depth

__all__ = [
    "CWL_STEP",
    "CWL_VERSIONS",
    "ENGINE_INPUT",
    "ENGINE_OPTIONS",
    "JOB_INPUT",
    "OUTPUTS_DIR",
    "OUTPUT_OBJECT",
    "SHIM_FILE",
    "SHIM_MODULE",
    "SHIM_SOURCE",
    "SHIM_TARGET",
    "SPEC_FILE",
    "TASKS_FILE",
    "WORKFLOW_TYPES",
    "engine_option_symbols",
]

_SCALARS = {
    "string": "string",
    "int": "int",
    "long": "int",
    "float": "float",
    "double": "float",
    "boolean": "bool",
    "File": "file",
    "Directory": "directory",
}
_PORT_BAD = re.compile(r"[^A-Za-z0-9_]")


def looks_like_cwl(data: Any) -> bool:
    """A parsed document is CWL when it has a top-level ``cwlVersion``."""
    return isinstance(data, Mapping) and "cwlVersion" in data


def load_yaml(text: str, where: str) -> Any:
    try:
        check_yaml_depth(text, where=where, field="workflow")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{where} is not YAML or JSON: {exc}", field="workflow") from exc


def main_process(data: Any, where: str, fragment: str = "") -> dict[str, Any]:
    """The process a CWL file runs: the document, or ``#main`` (else ``#fragment``) of a
    packed ``$graph``."""
    if not looks_like_cwl(data):
        raise InvalidInput(f"{where} is not a CWL document (no cwlVersion)", field="workflow")
    version = str(data["cwlVersion"])
    if version not in CWL_VERSIONS:
        raise CwlUnsupported(
            f"{where}: cwlVersion {version!r} is not supported "
            f"(supported: {', '.join(CWL_VERSIONS)})",
            field="cwlVersion",
        )
    if "$graph" in data:
        graph = data["$graph"]
        wanted = fragment or "main"
        found = [
            p
            for p in graph
            if isinstance(p, dict) and str(p.get("id", "")).rsplit("#", 1)[-1] == wanted
        ]
        if not found:
            raise CwlUnsupported(f"{where}: a packed document ($graph) needs a process '#{wanted}'")
        return {**found[0], "cwlVersion": version}
    return dict(data)


def _ports(section: Any, what: str) -> list[tuple[str, Any]]:
    """(id, definition) pairs of a CWL ``inputs``/``outputs`` list or map."""
    if section is None:
        return []
    if isinstance(section, Mapping):
        return [(str(k), v) for k, v in section.items()]
    if isinstance(section, list):
        pairs = []
        for item in section:
            if not isinstance(item, Mapping) or "id" not in item:
                raise CwlUnsupported(f"every entry of {what} needs an id")
            pairs.append((str(item["id"]).rsplit("#", 1)[-1].rsplit("/", 1)[-1], item))
        return pairs
    raise CwlUnsupported(f"{what} must be a list or a mapping")


def _describe(cwl_type: Any) -> str:
    return yaml.safe_dump(cwl_type, default_flow_style=True).strip().removesuffix("...").strip()


def translate_type(cwl_type: Any, where: str) -> tuple[dict[str, Any], bool]:
    """A CWL type as flowdeck input fields, and whether it is optional."""
    optional = False
    t = cwl_type
    if isinstance(t, str) and t.endswith("?"):
        optional, t = True, t[:-1]
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        optional = optional or len(rest) < len(t)
        if len(rest) != 1:
            raise CwlUnsupported(
                f"{where}: union type {_describe(cwl_type)} is not supported "
                "(flowdeck inputs have one type; optional types are fine)",
                field=where,
            )
        t = rest[0]
    if isinstance(t, str) and t.endswith("[]"):
        t = {"type": "array", "items": t[:-2]}
    if isinstance(t, str) and t in _SCALARS:
        return {"type": _SCALARS[t]}, optional
    if isinstance(t, Mapping):
        if t.get("type") == "enum" and isinstance(t.get("symbols"), list):
            return {"type": "enum", "symbols": [_symbol(s) for s in t["symbols"]]}, optional
        if t.get("type") == "array":
            items, _ = translate_type(t.get("items"), where)
            if items["type"] == "array":
                raise CwlUnsupported(f"{where}: arrays of arrays are not supported", field=where)
            return {"type": "array", "items": items["type"], **_only_symbols(items)}, optional
    raise CwlUnsupported(
        f"{where}: CWL type {_describe(cwl_type)} is not supported (supported: string, int, "
        "long, float, double, boolean, File, Directory, enum, arrays of these, optional)",
        field=where,
    )


def _only_symbols(fields: dict[str, Any]) -> dict[str, Any]:
    return {"symbols": fields["symbols"]} if "symbols" in fields else {}


def _symbol(value: Any) -> str:
    return str(value).rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def port_name(cwl_id: str, taken: set[str], where: str) -> str:
    name = _PORT_BAD.sub("_", cwl_id)[:64] or "_"
    if name[0].isdigit():
        name = f"_{name}"[:64]
    if name in taken or name in (OUTPUT_OBJECT, ENGINE_INPUT):
        raise CwlUnsupported(
            f"{where}: {cwl_id!r} clashes with another port once renamed to {name!r}"
        )
    taken.add(name)
    return name


def _has_file(cwl_type: Any) -> bool:
    text = _describe(cwl_type)
    return any(word in text for word in ("File", "stdout", "stderr"))


def _default(fields: dict[str, Any], value: Any) -> dict[str, Any]:
    """A CWL default as a flowdeck default, when it is a plain value of the input's type."""
    if value is None or isinstance(value, Mapping) or fields["type"] in ("file", "directory"):
        return {"required": False}
    if fields["type"] == "array" and (
        fields["items"] in ("file", "directory") or not isinstance(value, list)
    ):
        return {"required": False}
    if fields["type"] == "float" and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads 1.23e5 or 1e-5 as text; CWL (YAML 1.2) as a number
        try:
            return {"default": float(value)}
        except ValueError:
            return {"required": False}
    return {"default": value}


def translate(process: Mapping[str, Any], main: str, name: str, version: str) -> dict[str, Any]:
    """The generated flowdeck spec (as data) of a CWL process stored with its files."""
    taken: set[str] = set()
    inputs: dict[str, Any] = {}
    bindings: dict[str, str] = {}
    file_inputs: dict[str, str] = {}  # CWL id -> File or Directory
    for cwl_id, definition in _ports(process.get("inputs"), "inputs"):
        where = f"inputs.{cwl_id}"
        d = definition if isinstance(definition, Mapping) else {"type": definition}
        fields, optional = translate_type(d.get("type"), where)
        port = port_name(cwl_id, taken, where)
        spec: dict[str, Any] = dict(fields)
        doc = d.get("doc") or d.get("label")
        if doc:
            spec["description"] = str(doc if isinstance(doc, str) else " ".join(map(str, doc)))
        if "default" in d:
            spec.update(_default(fields, d["default"]))
        elif optional:
            spec["required"] = False
        inputs[port] = spec
        bindings[cwl_id] = f"${{{{ inputs.{port} }}}}"
        element = fields.get("items", fields["type"])
        if element in ("file", "directory"):
            file_inputs[cwl_id] = "Directory" if element == "directory" else "File"
    inputs[ENGINE_INPUT] = {
        "type": "array",
        "items": "enum",
        "symbols": engine_option_symbols(),
        "required": False,
        "description": "Options for cwltool (flowdeck runs CWL without containers).",
    }
    step_outputs: dict[str, Any] = {
        "object": {"return": "object", "description": "cwltool's output object"}
    }
    outputs: dict[str, Any] = {
        OUTPUT_OBJECT: {"from": f"${{{{ steps.{CWL_STEP}.outputs.object }}}}"}
    }
    out_taken: set[str] = set()
    file_outputs: dict[str, str] = {}
    for cwl_id, definition in _ports(process.get("outputs"), "outputs"):
        d = definition if isinstance(definition, Mapping) else {"type": definition}
        if not _has_file(d.get("type")):
            continue
        port = port_name(cwl_id, out_taken, f"outputs.{cwl_id}")
        file_outputs[cwl_id] = port
        step_outputs[port] = {
            "glob": f"{OUTPUTS_DIR}/{port}/*",
            "description": f"CWL output {cwl_id}",
        }
        outputs[port] = {"from": f"${{{{ steps.{CWL_STEP}.outputs.{port} }}}}"}
    label = process.get("label") or process.get("doc") or ""
    resources = {"resources": {"network": True}} if _asks_network(process) else {}
    return {
        "flowdeck": 1,
        "name": name,
        "version": version,
        "description": str(label if isinstance(label, str) else " ".join(map(str, label)))[:2000],
        "inputs": inputs,
        "outputs": outputs,
        "steps": {
            CWL_STEP: {
                "description": f"cwltool {main}",
                "python": SHIM_TARGET,
                "with": {
                    "workflow": main,
                    "inputs": bindings,
                    "file_inputs": file_inputs,
                    "file_outputs": file_outputs,
                    ENGINE_INPUT: f"${{{{ inputs.{ENGINE_INPUT} }}}}",
                },
                "outputs": step_outputs,
                **resources,
            }
        },
    }


def translate_job_document(
    process: Mapping[str, Any], main: str, name: str, version: str
) -> dict[str, Any]:
    """The generated spec of a CWL workflow run with its job document as sent (WES): one
    input holds the job (JSON text, every CWL type and field kept for cwltool), and every
    File of the output object is a product under ``outputs/<n>/<its name>``."""
    label = process.get("label") or process.get("doc") or ""
    resources = {"resources": {"network": True}} if _asks_network(process) else {}
    outputs = {OUTPUT_OBJECT: {"from": f"${{{{ steps.{CWL_STEP}.outputs.object }}}}"}}
    for port in ("files", "hidden_files"):
        outputs[port] = {"from": f"${{{{ steps.{CWL_STEP}.outputs.{port} }}}}"}
    return {
        "flowdeck": 1,
        "name": name,
        "version": version,
        "description": str(label if isinstance(label, str) else " ".join(map(str, label)))[:2000],
        "inputs": {
            JOB_INPUT: {
                "type": "string",
                "required": False,
                "description": "The CWL job document (JSON) cwltool runs: as sent, but for "
                "the locations of its files (attachments by their relative paths).",
            },
            REQUEST_INPUT: {
                "type": "string",
                "required": False,
                "description": "The CWL job document (JSON) exactly as sent.",
            },
            ENGINE_INPUT: {
                "type": "array",
                "items": "enum",
                "symbols": engine_option_symbols(),
                "required": False,
                "description": "Options for cwltool (flowdeck runs CWL without containers).",
            },
        },
        "outputs": outputs,
        "steps": {
            CWL_STEP: {
                "description": f"cwltool {main}",
                "python": SHIM_TARGET,
                "with": {
                    "workflow": main,
                    "job": f"${{{{ inputs.{JOB_INPUT} }}}}",
                    "file_outputs": {},
                    ENGINE_INPUT: f"${{{{ inputs.{ENGINE_INPUT} }}}}",
                },
                "outputs": {
                    "object": {"return": "object", "description": "cwltool's output object"},
                    "files": {"glob": f"{OUTPUTS_DIR}/*/*", "description": "output files"},
                    "hidden_files": {
                        "glob": f"{OUTPUTS_DIR}/*/.*",
                        "description": "output files whose names start with a dot",
                    },
                },
                **resources,
            }
        },
    }


def is_job_document(spec: WorkflowSpec) -> bool:
    """Whether a CWL workflow takes its job document as sent (:func:`translate_job_document`)."""
    return is_cwl(spec) and JOB_INPUT in spec.inputs and "job" in spec.steps[CWL_STEP].with_


def _asks_network(node: Any) -> bool:
    """Whether a CWL document (inline steps included) requires or hints ``NetworkAccess``
    with ``networkAccess: true``: the CWL step then asks for network (``step_network``)."""
    if isinstance(node, Mapping):
        if node.get("class") == "NetworkAccess" and node.get("networkAccess") is True:
            return True
        keyed = node.get("NetworkAccess")  # requirements written as a map
        if isinstance(keyed, Mapping) and keyed.get("networkAccess") is True:
            return True
        return any(_asks_network(v) for v in node.values())
    if isinstance(node, list):
        return any(_asks_network(v) for v in node)
    return False


def is_cwl(spec: WorkflowSpec) -> bool:
    step = spec.steps.get(CWL_STEP)
    return len(spec.steps) == 1 and step is not None and step.python == SHIM_TARGET


def main_file(spec: WorkflowSpec) -> str | None:
    """The CWL file a CWL workflow runs (relative to its archive); None for other workflows."""
    return str(spec.steps[CWL_STEP].with_.get("workflow")) if is_cwl(spec) else None


def cwl_version(archive_dir: Path, spec: WorkflowSpec) -> str | None:
    main = main_file(spec)
    if main is None:
        return None
    try:
        data = yaml.safe_load((archive_dir / main_file_path(main)).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return str(data.get("cwlVersion")) if isinstance(data, Mapping) else None


def main_file_path(main: str) -> str:
    """The file of a ``workflow_url``: without its ``#fragment`` nor a leading ``./``."""
    path = main.split("#", 1)[0]
    while path.startswith("./"):
        path = path[2:]
    return path


def default_name(hint: str) -> str:
    """A workflow name (NAME_PATTERN) from a file name or a label."""
    stem = Path(hint).name.rsplit(".", 1)[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")[:60] or "workflow"
    name = name if re.match(NAME_PATTERN, name) else "workflow"
    return name

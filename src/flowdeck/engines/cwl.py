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
    FILES_INPUT,
    JOB_INPUT,
    MORE_FILES_DIR,
    OUTPUT_OBJECT,
    OUTPUTS_DIR,
    REQUEST_INPUT,
    SHIM_FILE,
    SHIM_MODULE,
    SHIM_SOURCE,
    SHIM_TARGET,
    SPEC_FILE,
    STEP_EXTRAS,
    TASKS_FILE,
    WORKFLOW_TYPES,
    engine_option_symbols,
)
from flowdeck.engines.cwl_types import describe, is_optional, output_kind, translate_type
from flowdeck.errors import CwlUnsupported, InvalidInput
from flowdeck.jsonlimits import check_yaml_depth

__all__ = [
    "CWL_STEP",
    "CWL_VERSIONS",
    "ENGINE_INPUT",
    "ENGINE_OPTIONS",
    "FILES_INPUT",
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

_PORT_BAD = re.compile(r"[^A-Za-z0-9_]")
RESERVED_PORTS = (OUTPUT_OBJECT, ENGINE_INPUT, JOB_INPUT, REQUEST_INPUT, FILES_INPUT)


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


def port_name(cwl_id: str, taken: set[str], where: str) -> str:
    name = _PORT_BAD.sub("_", cwl_id)[:64] or "_"
    if name[0].isdigit():
        name = f"_{name}"[:64]
    if name in taken or name in RESERVED_PORTS or name in STEP_EXTRAS:
        raise CwlUnsupported(
            f"{where}: {cwl_id!r} clashes with another port once renamed to {name!r}"
        )
    taken.add(name)
    return name


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


def _doc(d: Mapping[str, Any]) -> str:
    doc = d.get("doc") or d.get("label")
    return str(doc if isinstance(doc, str) else " ".join(map(str, doc))) if doc else ""


def _typed_inputs(
    process: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str], dict[str, str], dict[str, Any]]:
    """The typed flowdeck inputs of a CWL process's inputs, their bindings (CWL id →
    template), the kinds of the file ones, and the inputs given only in a job document
    (CWL id → {type, required})."""
    taken: set[str] = set()
    inputs: dict[str, Any] = {}
    bindings: dict[str, str] = {}
    file_inputs: dict[str, str] = {}  # CWL id -> File or Directory
    job_only: dict[str, Any] = {}
    for cwl_id, definition in _ports(process.get("inputs"), "inputs"):
        where = f"inputs.{cwl_id}"
        d = definition if isinstance(definition, Mapping) else {"type": definition}
        try:
            fields, optional = translate_type(d.get("type"), where)
        except CwlUnsupported:
            job_only[cwl_id] = {"type": describe(d.get("type")), "required": not is_optional(d)}
            continue
        port = port_name(cwl_id, taken, where)
        spec: dict[str, Any] = dict(fields)
        if doc := _doc(d):
            spec["description"] = doc
        if "default" in d:
            spec.update(_default(fields, d["default"]))
        elif optional:
            spec["required"] = False
        inputs[port] = spec
        bindings[cwl_id] = f"${{{{ inputs.{port} }}}}"
        element = fields.get("items", fields["type"])
        if element in ("file", "directory"):
            file_inputs[cwl_id] = "Directory" if element == "directory" else "File"
    return inputs, bindings, file_inputs, job_only


def _engine_input() -> dict[str, Any]:
    return {
        "type": "array",
        "items": "enum",
        "symbols": engine_option_symbols(),
        "required": False,
        "description": "Options for cwltool (flowdeck runs CWL without containers).",
    }


def _job_inputs() -> dict[str, Any]:
    return {
        ENGINE_INPUT: _engine_input(),
        JOB_INPUT: {
            "type": "string",
            "required": False,
            "description": "The CWL job document (JSON) cwltool runs, instead of the typed "
            f"inputs: every CWL type and field; relative locations name files of {FILES_INPUT}.",
        },
        REQUEST_INPUT: {
            "type": "string",
            "required": False,
            "description": "The CWL job document (JSON) exactly as sent.",
        },
        FILES_INPUT: {
            "type": "array",
            "items": "file",
            "required": False,
            "description": "The files the CWL job document names, staged by their relative "
            "paths as the document names them.",
        },
    }


def _output_ports(
    process: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], dict[str, str]]:
    """Step outputs and workflow outputs for every CWL output port, the port of each CWL
    output, and the kind of the File ones."""
    step_outputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    ports: dict[str, str] = {}
    file_ports: dict[str, str] = {}
    taken: set[str] = set()
    for cwl_id, definition in _ports(process.get("outputs"), "outputs"):
        d = definition if isinstance(definition, Mapping) else {"type": definition}
        port = port_name(cwl_id, taken, f"outputs.{cwl_id}")
        ports[cwl_id] = port
        kind = output_kind(d.get("type"))
        out: dict[str, Any] = {"description": _doc(d) or f"CWL output {cwl_id}"}
        if kind["kind"] in ("file", "files"):
            file_ports[cwl_id] = kind["kind"]
            out["glob"] = f"{OUTPUTS_DIR}/{port}/*/*"
            out["type"] = "file" if kind["kind"] == "file" else "array"
            out |= {"items": "file"} if kind["kind"] == "files" else {}
        else:
            out["return"] = port
            out |= {k: kind[k] for k in ("type", "items") if k in kind}
        step_outputs[port] = out
        outputs[port] = {"from": f"${{{{ steps.{CWL_STEP}.outputs.{port} }}}}"}
    return step_outputs, outputs, ports, file_ports


def translate(process: Mapping[str, Any], main: str, name: str, version: str) -> dict[str, Any]:
    """The generated flowdeck spec (as data) of a CWL process stored with its files: a
    typed input per CWL input whose type maps, the job document inputs, and an output per
    CWL output port (File → file, File[] → array of file, values by their types)."""
    inputs, bindings, file_inputs, job_only = _typed_inputs(process)
    inputs |= _job_inputs()
    step_outputs, outputs, ports, file_ports = _output_ports(process)
    step_outputs |= {
        "_object": {"return": "_object", "description": "cwltool's output object"},
        "_files": {"glob": f"{MORE_FILES_DIR}/*/*", "description": "other output files"},
        "_hidden_files": {
            "glob": f"{MORE_FILES_DIR}/*/.*",
            "description": "other output files whose names start with a dot",
        },
    }
    outputs[OUTPUT_OBJECT] = {"from": f"${{{{ steps.{CWL_STEP}.outputs._object }}}}"}
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
                    "file_outputs": {},
                    "job": f"${{{{ inputs.{JOB_INPUT} }}}}",
                    "files": f"${{{{ inputs.{FILES_INPUT} }}}}",
                    "ports": ports,
                    "file_ports": file_ports,
                    "job_only": job_only,
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
            ENGINE_INPUT: _engine_input(),
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
    """Whether a CWL workflow takes its job document as sent (WES attachments:
    :func:`translate_job_document`, stored CWL workflows: :func:`translate`)."""
    return is_cwl(spec) and JOB_INPUT in spec.inputs and "job" in spec.steps[CWL_STEP].with_


def takes_staged_files(spec: WorkflowSpec) -> bool:
    """Whether a CWL workflow's job document names files staged for the run (stored CWL
    workflows) rather than files stored with the workflow (WES attachments)."""
    return is_job_document(spec) and FILES_INPUT in spec.inputs


def job_only_inputs(spec: WorkflowSpec) -> dict[str, Any]:
    """The CWL inputs given only in a job document: CWL id → {type, required}."""
    if not is_cwl(spec):
        return {}
    found = spec.steps[CWL_STEP].with_.get("job_only")
    return dict(found) if isinstance(found, Mapping) else {}


def typed_ports(spec: WorkflowSpec) -> list[str]:
    """The flowdeck inputs of a CWL workflow's own ports (not the generated ones)."""
    return [n for n in spec.inputs if n not in RESERVED_PORTS]


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

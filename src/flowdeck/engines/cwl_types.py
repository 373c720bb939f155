"""CWL types as flowdeck port types (server side, plain YAML: no cwltool).

A CWL input whose type maps (:func:`translate_type`) becomes a typed flowdeck input; any
other (``Any``, records, unions, arrays of arrays, named types) is given only in the
run's CWL job document.  Every CWL output becomes a workflow output (:func:`output_kind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from flowdeck.errors import CwlUnsupported

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


def describe(cwl_type: Any) -> str:
    """A CWL type as one line of YAML."""
    return yaml.safe_dump(cwl_type, default_flow_style=True).strip().removesuffix("...").strip()


def _symbol(value: Any) -> str:
    return str(value).rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def _only_symbols(fields: dict[str, Any]) -> dict[str, Any]:
    return {"symbols": fields["symbols"]} if "symbols" in fields else {}


def strip_optional(cwl_type: Any) -> tuple[Any, bool]:
    """The type without ``?`` nor ``null`` (a union of one type is that type), and whether
    it was optional."""
    t, optional = cwl_type, False
    if isinstance(t, str) and t.endswith("?"):
        optional, t = True, t[:-1]
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        optional = optional or len(rest) < len(t)
        if len(rest) == 1:
            t = rest[0]
    if isinstance(t, str) and t.endswith("[]"):
        t = {"type": "array", "items": t[:-2]}
    return t, optional


def translate_type(cwl_type: Any, where: str) -> tuple[dict[str, Any], bool]:
    """A CWL type as flowdeck input fields, and whether it is optional; CwlUnsupported
    (naming ``where``) for types flowdeck inputs cannot hold."""
    t, optional = strip_optional(cwl_type)
    if isinstance(t, list):
        raise CwlUnsupported(
            f"{where}: union type {describe(cwl_type)} is not a flowdeck input type "
            "(give it in a CWL job document)",
            field=where,
        )
    if isinstance(t, str) and t in _SCALARS:
        return {"type": _SCALARS[t]}, optional
    if isinstance(t, Mapping):
        if t.get("type") == "enum" and isinstance(t.get("symbols"), list):
            return {"type": "enum", "symbols": [_symbol(s) for s in t["symbols"]]}, optional
        if t.get("type") == "array":
            items, _ = translate_type(t.get("items"), where)
            if items["type"] == "array":
                raise CwlUnsupported(
                    f"{where}: arrays of arrays are not a flowdeck input type", field=where
                )
            return {"type": "array", "items": items["type"], **_only_symbols(items)}, optional
    raise CwlUnsupported(
        f"{where}: CWL type {describe(cwl_type)} is not a flowdeck input type (those are: "
        "string, int, long, float, double, boolean, File, Directory, enum, arrays of these, "
        "optional); give it in a CWL job document",
        field=where,
    )


def is_optional(definition: Mapping[str, Any]) -> bool:
    """Whether a CWL input may be left out of a job (nullable, or with a default)."""
    return "default" in definition or strip_optional(definition.get("type"))[1]


def output_kind(cwl_type: Any) -> dict[str, Any]:
    """What a CWL output port is as a flowdeck output: ``{"kind": "file"}`` (File, stdout,
    stderr), ``{"kind": "files"}`` (an array of Files), ``{"kind": "value", "type": …,
    "items": …}`` (a value of a flowdeck type), ``{"kind": "value"}`` (any other value:
    records as objects, Directories as CWL objects)."""
    t, _ = strip_optional(cwl_type)
    if t in ("File", "stdout", "stderr"):
        return {"kind": "file"}
    if isinstance(t, Mapping) and t.get("type") == "array":
        items, _ = strip_optional(t.get("items"))
        if items == "File":
            return {"kind": "files"}
        if isinstance(items, str) and items in _SCALARS and items != "Directory":
            return {"kind": "value", "type": "array", "items": _SCALARS[items]}
        return {"kind": "value"}
    if isinstance(t, Mapping) and t.get("type") == "enum":
        return {"kind": "value", "type": "string"}
    if isinstance(t, str) and t in _SCALARS and t != "Directory":
        return {"kind": "value", "type": _SCALARS[t]}
    return {"kind": "value"}

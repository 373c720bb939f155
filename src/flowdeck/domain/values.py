"""Checking a value against a typed input: used for defaults now, run parameters later."""

from __future__ import annotations

import math
import re
from typing import Any

from flowdeck.domain.spec import InputSpec


def _scalar(kind: str, spec: InputSpec, value: Any) -> str | None:
    if kind in ("string", "file", "directory", "enum") and not isinstance(value, str):
        return f"expected a {kind if kind != 'enum' else 'string'}, got {_typename(value)}"
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected an int, got {_typename(value)}"
    if kind == "float" and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        return f"expected a finite number, got {_typename(value)}"
    if kind == "bool" and not isinstance(value, bool):
        return f"expected true or false, got {_typename(value)}"
    if kind == "enum" and spec.symbols is not None and value not in spec.symbols:
        return f"{value!r} is not one of {', '.join(spec.symbols)}"
    if kind in ("int", "float"):
        if spec.minimum is not None and value < spec.minimum:
            return f"{value} is below the minimum {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return f"{value} is above the maximum {spec.maximum:g}"
    if kind == "string":
        if spec.min_length is not None and len(value) < spec.min_length:
            return f"shorter than {spec.min_length} characters"
        if spec.max_length is not None and len(value) > spec.max_length:
            return f"longer than {spec.max_length} characters"
        if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
            return f"{value!r} does not match the pattern {spec.pattern!r}"
    if kind in ("file", "directory") and (value.startswith("/") or ".." in value.split("/")):
        return f"{value!r}: give a relative path inside the run"
    return None


def check_value(spec: InputSpec, value: Any) -> str | None:
    """None when ``value`` fits the input, else what is wrong with it."""
    if spec.type == "stream":
        return "a stream input takes no value: records are pushed while the run goes on"
    if spec.type != "array":
        return _scalar(spec.type, spec, value)
    if not isinstance(value, list):
        return f"expected an array of {spec.items}, got {_typename(value)}"
    if spec.min_items is not None and len(value) < spec.min_items:
        return f"needs at least {spec.min_items} items, got {len(value)}"
    if spec.max_items is not None and len(value) > spec.max_items:
        return f"takes at most {spec.max_items} items, got {len(value)}"
    assert spec.items is not None
    for i, item in enumerate(value):
        problem = _scalar(spec.items, spec, item)
        if problem is not None:
            return f"item {i}: {problem}"
    return None


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an int",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)

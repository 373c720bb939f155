"""Run parameters from the command line: ``--param k=v`` typed by the workflow's inputs,
``--params-file`` (JSON or YAML), ``--file input=path``."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from flowdeck.cli.common import fail

TRUE = {"true", "yes", "on", "1"}
FALSE = {"false", "no", "off", "0"}
FILE_TYPES = {"file", "directory"}


def split_pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        fail(f"{what} {text!r}: expected NAME=VALUE")
    return name.strip(), value


def _scalar(name: str, type_: str, text: str, symbols: list[str] | None) -> Any:
    try:
        if type_ == "int":
            return int(text)
        if type_ == "float":
            return float(text)
    except ValueError:
        fail(f"--param {name}: {text!r} is not a{'n' if type_ == 'int' else ''} {type_}")
    if type_ == "bool":
        lowered = text.strip().lower()
        if lowered in TRUE | FALSE:
            return lowered in TRUE
        fail(f"--param {name}: {text!r} is not a bool (true/false, yes/no, 1/0)")
    if type_ == "enum" and symbols and text not in symbols:
        fail(f"--param {name}: {text!r} is not one of {', '.join(symbols)}")
    return text


def typed_value(name: str, spec: dict[str, Any], text: str) -> Any:
    """``text`` converted to the input's type (arrays: comma-separated, or JSON)."""
    type_ = str(spec.get("type", "string"))
    if type_ in FILE_TYPES or (type_ == "array" and _item_type(spec) in FILE_TYPES):
        fail(f"--param {name}: {name!r} is a {type_} input: use --file {name}=PATH")
    if type_ == "array":
        if text.lstrip().startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                fail(f"--param {name}: not a JSON array: {exc}")
            if not isinstance(value, list):
                fail(f"--param {name}: expected an array")
            return value
        items = [t.strip() for t in text.split(",")] if text.strip() else []
        item = spec.get("items")
        symbols = item.get("symbols") if isinstance(item, dict) else None
        return [_scalar(name, _item_type(spec), t, symbols) for t in items]
    return _scalar(name, type_, text, spec.get("symbols"))


def _item_type(spec: dict[str, Any]) -> str:
    items = spec.get("items")
    if isinstance(items, dict):
        return str(items.get("type", "string"))
    return str(items or "string")


def _unknown(name: str, inputs: dict[str, Any]) -> None:
    near = difflib.get_close_matches(name, list(inputs), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    known = ", ".join(sorted(inputs)) or "none"
    fail(f"the workflow has no input {name!r}{hint} (inputs: {known})")


def read_params_file(path: Path) -> dict[str, Any]:
    import yaml  # only for a params file: not at every start-up

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        fail(f"--params-file {path}: {exc}")
    if not isinstance(data, dict):
        fail(f"--params-file {path}: expected a mapping of input names to values")
    return data


def collect_params(
    inputs: dict[str, Any], pairs: list[str], params_file: Path | None
) -> dict[str, Any]:
    """The values from the file, then each ``--param`` (typed by its input) over them."""
    values: dict[str, Any] = read_params_file(params_file) if params_file else {}
    for pair in pairs:
        name, text = split_pair(pair, "--param")
        if name not in inputs:
            _unknown(name, inputs)
        values[name] = typed_value(name, inputs[name], text)
    return values


def collect_files(inputs: dict[str, Any], pairs: list[str]) -> list[tuple[str, Path]]:
    files = []
    for pair in pairs:
        name, text = split_pair(pair, "--file")
        if inputs and name not in inputs:
            _unknown(name, inputs)
        path = Path(text).expanduser()
        if not path.is_file():
            fail(f"--file {name}: no such file: {path}")
        files.append((name, path))
    return files

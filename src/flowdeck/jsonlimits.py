"""How deeply JSON read from a request may nest: at most :data:`MAX_DEPTH` arrays and
objects inside one another (and as many sequences and mappings in YAML documents, JSON's
superset).  Deeper values are refused before they are parsed — Python's parsers (and
whatever walks the value after them) recurse once per level, and a thousand levels end in
a ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from flowdeck.errors import InvalidInput, JsonTooDeep

MAX_DEPTH = 64

_ESCAPED = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"\n]*"')
_OTHERS = bytes(sorted(set(range(256)) - set(b'"[]{}\n')))  # all but quotes, brackets, \n
_SQUARE = bytes.maketrans(b"{}", b"[]")  # the depth does not care which kind
# What the exact scan looks at: strings (skipped whole), brackets and line ends.
_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[\[\]{}\n]')


def _shallow(data: bytes, max_depth: int) -> bool:
    """True when ``data`` certainly nests no deeper than ``max_depth``; False when that
    needs :func:`_too_deep_at` (deep, or unbalanced brackets).  Runs at C speed: escapes,
    then everything but quotes and brackets, then strings are dropped (a string's brackets
    do not nest); then each pass removes the innermost bracket pairs."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return True
    if b"\\" in data:
        data = _ESCAPED.sub(b"", data)
    # Two quotes side by side (an empty string's, or a string's end and the next one's
    # start) hide no bracket: dropping them keeps which brackets are in strings.
    quoted = data.translate(_SQUARE, _OTHERS).replace(b'""', b"")
    brackets = _STRING.sub(b"", quoted).translate(None, b'"\n')
    for _ in range(max_depth):
        if not brackets:
            return True
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):
            return False
        brackets = fewer
    return not brackets


def _too_deep_at(data: bytes, max_depth: int, per_line: bool) -> tuple[int, int] | None:
    """(line, column) of the first bracket past ``max_depth``, or None."""
    depth, line, line_start = 0, 1, 0
    for match in _TOKEN.finditer(data):
        char = data[match.start()]
        if char == 0x0A:  # a line ends
            line, line_start = line + 1, match.end()
            if per_line:
                depth = 0
        elif char in b"[{":
            depth += 1
            if depth > max_depth:
                return line, match.start() - line_start + 1
        elif char in b"]}":
            depth = max(0, depth - 1)
    return None


def check_depth(
    data: bytes | str,
    *,
    where: str = "body",
    per_line: bool = False,
    max_depth: int = MAX_DEPTH,
) -> None:
    """Raise :class:`JsonTooDeep` (details: ``field``, ``max_depth``, ``line``, ``column``)
    when the JSON text ``data`` nests deeper than ``max_depth``; ``per_line``: NDJSON, each
    line a value of its own.  Whether the text is JSON at all is left to the parser."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _shallow(raw, max_depth):
        return
    found = _too_deep_at(raw, max_depth, per_line)
    if found is None:
        return
    line, column = found
    raise JsonTooDeep(
        f"{where} is nested deeper than {max_depth} levels of arrays and objects "
        f"(line {line} column {column})",
        field=where,
        max_depth=max_depth,
        line=line,
        column=column,
    )


_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_YAML_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def check_yaml_depth(
    text: str, *, where: str = "the document", field: str = "body", max_depth: int = MAX_DEPTH
) -> None:
    """:func:`check_depth` for a YAML (or JSON) document, from its parse events (the parser
    does not recurse; composing nodes does).  Syntax errors are left to the loader:
    ``yaml.YAMLError`` propagates."""
    depth = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, _YAML_OPEN):
            depth += 1
            if depth > max_depth:
                mark = event.start_mark
                line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
                raise JsonTooDeep(
                    f"{where} is nested deeper than {max_depth} levels of sequences and "
                    f"mappings (line {line} column {column})",
                    field=field,
                    max_depth=max_depth,
                    line=line,
                    column=column,
                )
        elif isinstance(event, _YAML_CLOSE):
            depth -= 1


def reject_constant(name: str) -> Any:
    """For ``json.loads(parse_constant=...)``: ``NaN``, ``Infinity`` are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def loads(text: bytes | str, *, where: str = "body") -> Any:
    """Parse JSON read from a request: nesting bounded (:func:`check_depth`), ``NaN`` and
    ``Infinity`` refused; :class:`InvalidInput` naming ``where`` for what is not JSON."""
    check_depth(text, where=where)
    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{where} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field=where,
            line=exc.lineno,
            column=exc.colno,
        ) from exc
    except ValueError as exc:  # not UTF-8, or a constant
        raise InvalidInput(f"{where} is not JSON: {exc}", field=where) from exc

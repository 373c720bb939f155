"""The nesting bound of JSON (and YAML) read from requests."""

from __future__ import annotations

import json

import pytest

from flowdeck.errors import JsonTooDeep
from flowdeck.jsonlimits import MAX_DEPTH, check_depth, check_yaml_depth


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "text",
    [
        nested(MAX_DEPTH),
        json.dumps({"s": "[" * 500 + "{" * 500}),  # brackets inside strings do not nest
        json.dumps({"s": '\\"[[[[' * 100}),  # nor after escaped quotes
        "[" + ",".join([nested(MAX_DEPTH - 1)] * 200) + "]",  # wide, not deep
        "[[[[",  # not JSON: the parser says so, not this check
    ],
)
def test_within_the_bound(text: str) -> None:
    check_depth(text)
    check_depth(text.encode())


def test_too_deep_says_where() -> None:
    text = '{"a": [1, 2],\n "b": ' + nested(MAX_DEPTH + 10) + "}"
    with pytest.raises(JsonTooDeep) as caught:
        check_depth(text, where="params")
    details = caught.value.details
    assert details == {"field": "params", "max_depth": MAX_DEPTH, "line": 2, "column": 70}
    assert "line 2 column 70" in caught.value.message and caught.value.code == "json_too_deep"


def test_unclosed_brackets_count_too() -> None:
    with pytest.raises(JsonTooDeep):
        check_depth("[" * 5000)


def test_ndjson_counts_each_line_alone() -> None:
    lines = "\n".join(["[" * 40] * 10)  # unclosed, invalid lines: each 40 deep
    check_depth(lines, per_line=True)
    with pytest.raises(JsonTooDeep):
        check_depth(lines)
    with pytest.raises(JsonTooDeep) as caught:
        check_depth('{"n": 1}\n' + nested(100) + "\n", per_line=True)
    assert caught.value.details["line"] == 2


def test_yaml_documents_in_either_style() -> None:
    check_yaml_depth("a:\n  - b: [1, {c: 2}]\n")
    block = "a:\n" + "".join("  " * i + "-\n" for i in range(1, MAX_DEPTH + 5))
    for text in (block, "x: " + nested(MAX_DEPTH + 1)):
        with pytest.raises(JsonTooDeep) as caught:
            check_yaml_depth(text, where="the document", field="workflow")
        assert caught.value.details["field"] == "workflow"

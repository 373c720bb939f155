"""Graph validation and edge conditions, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from flowdeck.domain.graphs import (
    Condition,
    check_graph,
    condition_met,
    find_cycle,
    output_type,
    types_match,
)
from flowdeck.domain.spec import WorkflowSpec


def spec(name: str, inputs: dict[str, Any], outputs: dict[str, Any] | None = None) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": name,
            "version": "1",
            "inputs": inputs,
            "outputs": {k: {"from": f"${{{{ steps.s.outputs.{k} }}}}"} for k in outputs or {}},
            "steps": {"s": {"run": ["true"], "outputs": outputs or {}}},
        }
    )


def definition(nodes: list[str], edges: list[tuple[str, str]] = (), bindings: Any = ()) -> Any:
    return {
        "nodes": {n: {"workflow": "w@1"} for n in nodes},
        "edges": [{"from": a, "to": b, "condition": "succeeded"} for a, b in edges],
        "bindings": [{"from": a, "to": b} for a, b in bindings],
    }


def test_cycles_are_found_with_their_members_and_bindings_count() -> None:
    d = definition(["a", "b", "c"], [("a", "b"), ("b", "c")], [("c.x", "a.y")])
    assert find_cycle(d) == ["a", "b", "c", "a"]
    assert find_cycle(definition(["a", "b"], [("a", "b")])) == []


def test_unknown_nodes_get_a_suggestion() -> None:
    problems = check_graph(definition(["align"], [("align", "alignn")]), {})
    assert problems == [
        {"where": "edges[0]", "message": "edges[0]: unknown node 'alignn'; did you mean 'align'?"}
    ]


def test_binding_types_name_both_ends() -> None:
    specs = {
        "a": spec("src", {}, {"f": {"path": "x.txt"}, "n": {"json": "n.json", "type": "int"}}),
        "b": spec("dst", {"count": {"type": "int"}, "ratio": {"type": "float"}}),
    }
    bad = check_graph(definition(["a", "b"], bindings=[("a.f", "b.count")]), specs)
    assert [p["message"] for p in bad] == [
        "bindings[0] a.f → b.count: output a.f is a file but input b.count is a int"
    ]
    assert check_graph(definition(["a", "b"], bindings=[("a.n", "b.ratio")]), specs) == []
    missing = check_graph(definition(["a", "b"], bindings=[("a.nn", "b.cout")]), specs)
    assert "no output 'nn'; did you mean 'n'?" in missing[0]["message"]


def test_output_types_follow_their_step_output() -> None:
    s = spec("x", {}, {"t": {"stdout": "text"}, "j": {"stdout": "json"}, "g": {"glob": "*.fa"}})
    assert [output_type(s, o) for o in ("t", "j", "g")] == ["string", "any", "array of file"]
    assert types_match("any", "file") and types_match("int", "float")
    assert not types_match("float", "int")


@pytest.mark.parametrize(
    ("condition", "upstream", "met"),
    [
        (Condition.SUCCEEDED, "succeeded", True),
        (Condition.SUCCEEDED, "failed", False),
        (Condition.FAILED, "failed", True),
        (Condition.FAILED, "succeeded", False),
        (Condition.FAILED, "skipped", False),
        (Condition.COMPLETED, "cancelled", True),
        (Condition.COMPLETED, "skipped", False),
    ],
)
def test_conditions(condition: Condition, upstream: str, met: bool) -> None:
    assert condition_met(condition, upstream) is met

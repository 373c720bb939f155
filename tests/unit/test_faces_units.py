"""Pure parts of the faces: typing of --param values, and the step graph's layout."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from flowdeck.cli.params import collect_params, typed_value
from flowdeck.web.dag import NODE_W, layout

INPUTS: dict[str, Any] = {
    "n": {"type": "int"},
    "x": {"type": "float"},
    "ok": {"type": "bool"},
    "mode": {"type": "enum", "symbols": ["fast", "slow"]},
    "names": {"type": "array", "items": "string"},
    "sizes": {"type": "array", "items": {"type": "int"}},
    "reads": {"type": "file"},
    "more": {"type": "array", "items": "file"},
    "label": {"type": "string"},
}


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("n", "42", 42),
        ("x", "2.5", 2.5),
        ("ok", "Yes", True),
        ("ok", "0", False),
        ("mode", "slow", "slow"),
        ("names", "a, b,c", ["a", "b", "c"]),
        ("names", "", []),
        ("sizes", "1,2", [1, 2]),
        ("sizes", "[3, 4]", [3, 4]),
        ("label", "007", "007"),
    ],
)
def test_values_take_their_input_type(name: str, text: str, value: Any) -> None:
    assert typed_value(name, INPUTS[name], text) == value


@pytest.mark.parametrize(
    ("name", "text"),
    [("n", "4.5"), ("x", "many"), ("ok", "maybe"), ("mode", "medium"), ("sizes", "1,b")],
)
def test_bad_values_are_refused(name: str, text: str) -> None:
    with pytest.raises(typer.Exit):
        typed_value(name, INPUTS[name], text)


@pytest.mark.parametrize("name", ["reads", "more"])
def test_file_inputs_want_file(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        typed_value(name, INPUTS[name], "x.txt")
    assert f"--file {name}=PATH" in capsys.readouterr().err


def test_params_file_then_params_override(tmp_path: Any) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"n": 1, "label": "from file"}')
    assert collect_params(INPUTS, ["n=2"], f) == {"n": 2, "label": "from file"}


def test_layout_puts_each_step_right_of_what_it_waits_for() -> None:
    deps = {"a": frozenset(), "b": frozenset({"a"}), "c": frozenset({"a"}), "d": frozenset("bc")}
    graph = layout(deps, ("a", "b", "c", "d"))
    x = {n.name: n.x for n in graph.nodes}
    y = {n.name: n.y for n in graph.nodes}
    assert x["a"] < x["b"] == x["c"] < x["d"]
    assert y["b"] != y["c"]
    assert {(e.source, e.target) for e in graph.edges} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
    }
    assert graph.width >= x["d"] + NODE_W
    assert all(n.y + graph.node_h <= graph.height for n in graph.nodes)

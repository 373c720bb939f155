"""The layout of a workflow's step graph for the run page's SVG: steps in columns by
depth (a step sits right of everything it waits for), edges as curves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NODE_W = 150
NODE_H = 40
GAP_X = 60
GAP_Y = 24
MARGIN = 12


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    path: str


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    node_w: int = NODE_W
    node_h: int = NODE_H


def layout(deps: Mapping[str, frozenset[str]], order: tuple[str, ...]) -> Layout:
    """``deps`` maps each step to the steps it waits for; ``order`` is topological."""
    depth: dict[str, int] = {}
    for step in order:
        depth[step] = 1 + max((depth[d] for d in deps.get(step, ())), default=-1)
    columns: dict[int, list[str]] = {}
    for step in order:
        columns.setdefault(depth[step], []).append(step)
    pos: dict[str, Node] = {}
    for col, steps in columns.items():
        for row, step in enumerate(steps):
            pos[step] = Node(step, MARGIN + col * (NODE_W + GAP_X), MARGIN + row * (NODE_H + GAP_Y))
    edges = []
    for step in order:
        for dep in sorted(deps.get(step, ())):
            a, b = pos[dep], pos[step]
            x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
            x2, y2 = b.x, b.y + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(Edge(dep, step, f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}"))
    cols = max(columns, default=0) + 1
    rows = max((len(s) for s in columns.values()), default=1)
    return Layout(
        nodes=[pos[s] for s in order],
        edges=edges,
        width=2 * MARGIN + cols * NODE_W + (cols - 1) * GAP_X,
        height=2 * MARGIN + rows * NODE_H + (rows - 1) * GAP_Y,
    )

"""Stream ports: records pushed into a run's ``stream`` inputs and read from its stream
outputs, each with its offset in the port (from 0, without gaps).

Inputs feed a step's standard input as JSON lines; a step's standard output, read as JSON
lines, fills the workflow outputs bound to it.  Delivery is at least once: a retried step
reads its input again from offset 0, and output records carry the attempt that wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from flowdeck.domain.expressions import Ref, parse_template
from flowdeck.domain.spec import WorkflowSpec

Direction = Literal["input", "output"]
INPUT: Direction = "input"
OUTPUT: Direction = "output"


@dataclass(frozen=True, slots=True)
class StreamPort:
    run_id: str
    direction: Direction
    name: str
    length: int = 0  # records stored: the next record's offset
    closed: bool = False
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    offset: int
    data: Any
    at: datetime
    attempt: int | None = None  # output records: the attempt of the step that wrote it


def stream_inputs(spec: WorkflowSpec) -> list[str]:
    """The workflow's inputs of type stream."""
    return [name for name, inp in spec.inputs.items() if inp.type == "stream"]


def _source(spec: WorkflowSpec, text: str) -> tuple[str, str] | None:
    tpl = parse_template(text)
    ref = tpl.parts[0] if tpl.is_single else None
    if not isinstance(ref, Ref) or ref.kind != "step":
        return None
    step = spec.steps.get(ref.name)
    out = step.outputs.get(ref.output) if step is not None else None
    return (ref.name, ref.output) if out is not None and out.stdout == "stream" else None


def stream_outputs(spec: WorkflowSpec) -> dict[str, tuple[str, str]]:
    """Workflow outputs that are streams -> the (step, step output) that writes them."""
    found = {}
    for name, out in spec.outputs.items():
        source = _source(spec, out.source)
        if source is not None:
            found[name] = source
    return found


def stdin_input(spec: WorkflowSpec, step: str) -> str | None:
    """The stream input fed to a step's standard input."""
    text = spec.steps[step].stdin
    if text is None:
        return None
    tpl = parse_template(text)
    ref = tpl.parts[0] if tpl.is_single else None
    return ref.name if isinstance(ref, Ref) and ref.kind == "input" else None


def ports_of_step(spec: WorkflowSpec, step: str) -> list[str]:
    """The workflow output ports a step's standard output fills."""
    return [name for name, (s, _o) in stream_outputs(spec).items() if s == step]


def stream_ports(spec: WorkflowSpec) -> list[tuple[Direction, str]]:
    """Every stream port of a workflow: its stream inputs, then its stream outputs."""
    return [(INPUT, n) for n in stream_inputs(spec)] + [(OUTPUT, n) for n in stream_outputs(spec)]

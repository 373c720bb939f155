"""Validate a workflow document: every problem at once, each with its path and its line and
column in the YAML (or JSON) source, near-name suggestions for misspelled references, and
the steps of each cycle.

Library use, offline::

    from flowdeck.domain.validation import validate_file
    report = validate_file("examples/chain/flowdeck.yaml")
    for p in report.problems:
        print(p)
"""

from __future__ import annotations

import contextlib
import difflib
import graphlib
import hashlib
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flowdeck.domain.expressions import (
    ExpressionError,
    Ref,
    Template,
    parse,
    parse_template,
    refs_of,
)
from flowdeck.domain.spec import InputSpec, WorkflowSpec
from flowdeck.domain.values import check_value
from flowdeck.errors import JsonTooDeep, SpecInvalid
from flowdeck.jsonlimits import check_yaml_depth

Path_ = tuple[str | int, ...]
SPEC_FILENAMES = (
    "flowdeck.yaml",
    "flowdeck.yml",
    "flowdeck.json",
    "workflow.yaml",
    "workflow.yml",
    "workflow.json",
)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.line}:{self.column} " if self.line is not None else ""
        return f"{where}{self.path or '<document>'}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


@dataclass(frozen=True)
class ValidWorkflow:
    spec: WorkflowSpec
    dependencies: dict[str, frozenset[str]]  # step -> the steps it waits for
    order: tuple[str, ...]  # a topological order of the steps
    canonical: dict[str, Any]

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.canonical).encode()).hexdigest()


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    workflow: ValidWorkflow | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def require(self) -> ValidWorkflow:
        """The valid workflow, or :class:`SpecInvalid` listing every problem."""
        if self.workflow is None or self.problems:
            raise SpecInvalid(
                f"the workflow has {len(self.problems)} problem(s): "
                + "; ".join(str(p) for p in self.problems[:3]),
                errors=[p.as_dict() for p in self.problems],
            )
        return self.workflow


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- loading with positions ---------------------------------------------------------------

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Positions:
    def __init__(self) -> None:
        self.values: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}

    def of(self, path: Path_, *, key: bool = False) -> tuple[int | None, int | None]:
        table = self.keys if key and path in self.keys else self.values
        probe = path
        while probe not in table and probe:
            probe = probe[:-1]
        found = table.get(probe) or self.values.get(probe)
        return found if found else (None, None)


def _walk(node: yaml.Node, path: Path_, pos: _Positions, problems: list[Problem]) -> None:
    pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                problems.append(
                    Problem(
                        format_path(child),
                        f"duplicate key {key!r}",
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                    )
                )
            seen.add(key)
            pos.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, child, pos, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), pos, problems)


def _mark(mark: Any) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def load_document(text: str) -> tuple[Any, _Positions, list[Problem]]:
    """Parse YAML or JSON; refuse aliases (no "billion laughs") and duplicate keys."""
    pos = _Positions()
    problems: list[Problem] = []
    try:
        check_yaml_depth(text)
    except JsonTooDeep as exc:
        return None, pos, [Problem("", exc.message, exc.details["line"], exc.details["column"])]
    except yaml.YAMLError:
        pass  # reported below, with its position
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                line, col = _mark(event.start_mark)
                return None, pos, [Problem("", "YAML aliases (*name) are not supported", line, col)]
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        line, col = _mark(exc.problem_mark)
        return None, pos, [Problem("", f"not valid YAML or JSON: {exc.problem}", line, col)]
    except yaml.YAMLError as exc:
        return None, pos, [Problem("", f"not valid YAML or JSON: {exc}")]
    if node is not None:
        _walk(node, (), pos, problems)
    if text.lstrip().startswith("{"):
        # JSON: read as JSON, whose numbers YAML 1.1 may take for text (1e-05, 1.23e5)
        with contextlib.suppress(ValueError):
            data = json.loads(text)
    return data, pos, problems


# -- structural problems (pydantic) ---------------------------------------------------------


def _clean_path(data: Any, loc: tuple[Any, ...], kind: str) -> Path_:
    """Drop the union-branch tags pydantic puts in ``loc``; keep real keys and indexes."""
    out: list[str | int] = []
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and part < len(current)
        ):
            out.append(part)
            current = current[part]
        elif last and kind in ("missing", "extra_forbidden"):
            out.append(part)
    return tuple(out)


def _structural(data: Any, pos: _Positions) -> list[Problem]:
    try:
        WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        by_path: dict[Path_, list[str]] = {}
        kinds: dict[Path_, str] = {}
        for err in exc.errors():
            path = _clean_path(data, tuple(err["loc"]), err["type"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field {path[-1]!r}" + _suggest_field(path)
            elif err["type"] == "missing":
                msg = f"missing required field {path[-1]!r}"
            elif err["type"] == "literal_error" and isinstance(err.get("input"), str):
                allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
                msg = f"{err['input']!r} is not one of {', '.join(allowed)}" + _near(
                    err["input"], allowed
                )
            if msg not in by_path.setdefault(path, []):
                by_path[path].append(msg)
            kinds[path] = err["type"]
        problems = []
        for path, messages in by_path.items():
            line, col = pos.of(path, key=kinds[path] == "extra_forbidden")
            problems.append(Problem(format_path(path), " or ".join(messages), line, col))
        return problems
    return []


def _suggest_field(path: Path_) -> str:
    """A near field name for an unknown one, from the model that owns that place."""
    from flowdeck.domain import spec as s

    model: Any = None
    if len(path) == 1:
        model = s.WorkflowSpec
    elif len(path) == 3:
        model = {"inputs": s.InputSpec, "steps": s.StepSpec, "outputs": s.WorkflowOutput}.get(
            str(path[0])
        )
    elif len(path) == 4 and path[0] == "steps":
        nested: dict[str, Any] = {"resources": s.Resources, "retries": s.Retries}
        model = nested.get(str(path[2]))
    elif len(path) == 5 and path[0] == "steps" and path[2] == "outputs":
        model = s.OutputSpec
    if model is None:
        return ""
    return _near(str(path[-1]), [f.alias or n for n, f in model.model_fields.items()])


def _near(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- semantic problems: references, dependencies, cycles -----------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _template_fields(step: dict[str, Any]) -> Iterator[tuple[Path_, str]]:
    """(relative path, text) of every string in a step that may hold expressions."""
    run = step.get("run")
    if isinstance(run, str):
        yield ("run",), run
    elif isinstance(run, list):
        yield from ((("run", i), v) for i, v in enumerate(run) if isinstance(v, str))
    for name, value in _dict(step.get("env")).items():
        if isinstance(value, str):
            yield ("env", name), value
    yield from _nested_strings(("with",), step.get("with"))
    for name, out in _dict(step.get("outputs")).items():
        for key in ("path", "glob", "json"):
            if isinstance(_dict(out).get(key), str):
                yield ("outputs", name, key), out[key]


def _nested_strings(path: Path_, value: Any) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nested_strings((*path, i), v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _nested_strings((*path, str(k)), v)


class _Semantics:
    def __init__(
        self, data: dict[str, Any], pos: _Positions, archive_files: Collection[str] | None
    ) -> None:
        self.data = data
        self.pos = pos
        self.archive_files = archive_files
        self.inputs = _dict(data.get("inputs"))
        self.steps = {k: _dict(v) for k, v in _dict(data.get("steps")).items()}
        self.problems: list[Problem] = []
        self.deps: dict[str, set[str]] = {name: set() for name in self.steps}
        self.stdin_of: dict[str, str] = {}  # stream input -> the step reading it

    def problem(self, path: Path_, message: str) -> None:
        line, col = self.pos.of(path)
        self.problems.append(Problem(format_path(path), message, line, col))

    def port_kind(self, ref: Ref) -> str | None:
        """The type of the referenced port, when known."""
        if ref.kind == "input":
            return _dict(self.inputs.get(ref.name)).get("type")
        if ref.kind == "step":
            out = _dict(_dict(self.steps.get(ref.name, {}).get("outputs")).get(ref.output))
            if out.get("type"):
                return str(out["type"])
            if "glob" in out:
                return "array"
            if "path" in out:
                return "file"
            if out.get("stdout") == "stream":
                return "stream"
        return None

    def check_ref(self, ref: Ref, path: Path_, step: str | None) -> bool:
        if ref.kind == "input":
            if ref.name not in self.inputs:
                self.problem(path, f"unknown input {ref.name!r}" + _near(ref.name, self.inputs))
                return False
        elif ref.kind == "step":
            target = self.steps.get(ref.name)
            if target is None:
                self.problem(path, f"unknown step {ref.name!r}" + _near(ref.name, self.steps))
                return False
            if ref.name == step:
                self.problem(path, f"step {step!r} refers to its own output {ref.output!r}")
                return False
            outputs = _dict(target.get("outputs"))
            if "uses" not in target and ref.output not in outputs:
                self.problem(
                    path,
                    f"step {ref.name!r} has no output {ref.output!r}" + _near(ref.output, outputs),
                )
                return False
            if step is not None:
                self.deps[step].add(ref.name)
        elif ref.kind == "item" and (step is None or "foreach" not in self.steps[step]):
            self.problem(path, "'item' is only defined in a step with foreach")
            return False
        return True

    def template(self, path: Path_, text: str, step: str | None) -> Template | None:
        try:
            tpl = parse_template(text)
        except ExpressionError as exc:
            self.problem(path, f"bad expression: {exc}")
            return None
        for ref in tpl.refs():
            if (
                self.check_ref(ref, path, step)
                and self.port_kind(ref) == "stream"
                and path[-1] != "stdin"
                and not (path[0] == "outputs" and ref.kind == "step")
            ):
                where = "a workflow output's from" if ref.kind == "step" else "a step's stdin"
                self.problem(path, f"{ref} is a stream: bind it to {where}")
        return tpl

    def single_ref(self, path: Path_, text: str, step: str | None, what: str) -> Ref | None:
        tpl = self.template(path, text, step)
        if tpl is None:
            return None
        if not tpl.is_single or not isinstance(tpl.parts[0], Ref):
            self.problem(path, f"{what} must be a single reference like ${{{{ inputs.NAME }}}}")
            return None
        return tpl.parts[0]

    def run(self) -> None:
        for name, step in self.steps.items():
            base: Path_ = ("steps", name)
            for rel, text in _template_fields(step):
                self.template((*base, *rel), text, name)
            self.when(base, step, name)
            if isinstance(step.get("foreach"), str):
                ref = self.single_ref((*base, "foreach"), step["foreach"], name, "foreach")
                kind = self.port_kind(ref) if ref and ref.kind != "item" else None
                if ref is not None and ref.kind == "item":
                    self.problem((*base, "foreach"), "foreach cannot iterate over 'item'")
                elif kind not in (None, "array", "any"):
                    self.problem((*base, "foreach"), f"foreach needs an array; {ref} is a {kind}")
            if isinstance(step.get("stdin"), str):
                self.stdin(base, step, name)
            self.stream_outputs(base, step)
            for i, need in enumerate(step.get("needs") or []):
                if not isinstance(need, str):
                    continue
                if need not in self.steps:
                    self.problem(
                        (*base, "needs", i), f"unknown step {need!r}" + _near(need, self.steps)
                    )
                elif need == name:
                    self.problem((*base, "needs", i), f"step {name!r} cannot need itself")
                else:
                    self.deps[name].add(need)
            self.python(base, step)
        for out_name, out in _dict(self.data.get("outputs")).items():
            source = _dict(out).get("from")
            if isinstance(source, str):
                path: Path_ = ("outputs", out_name, "from")
                ref = self.single_ref(path, source, None, "a workflow output")
                if ref is not None and ref.kind == "item":
                    self.problem(path, "'item' is only defined in a step with foreach")
        for in_name, spec in self.inputs.items():
            spec = _dict(spec)
            if spec.get("default") is not None:
                self.default(in_name, spec)
        self.cycles()

    def stdin(self, base: Path_, step: dict[str, Any], name: str) -> None:
        path = (*base, "stdin")
        ref = self.single_ref(path, step["stdin"], name, "stdin")
        if ref is None:
            return
        if self.port_kind(ref) not in (None, "stream"):
            self.problem(path, f"stdin takes a stream port; {ref} is not one")
        elif ref.kind == "step":
            self.problem(
                path, f"stdin takes a stream input of the workflow; {ref} is a step's output"
            )
        elif "run" not in step:
            self.problem(path, "stdin is for run steps")
        elif "foreach" in step:
            self.problem(path, "a foreach step cannot read a stream: its instances would share it")
        elif ref.kind == "input":
            first = self.stdin_of.setdefault(ref.name, name)
            if first != name:
                self.problem(path, f"{ref} is already the stdin of step {first!r}")

    def stream_outputs(self, base: Path_, step: dict[str, Any]) -> None:
        for out_name, out in _dict(step.get("outputs")).items():
            if _dict(out).get("stdout") != "stream":
                continue
            path = (*base, "outputs", out_name, "stdout")
            if "run" not in step:
                self.problem(path, "stdout: stream is for run steps")
            elif "foreach" in step:
                self.problem(path, "a foreach step cannot write a stream output")

    def when(self, base: Path_, step: dict[str, Any], name: str) -> None:
        text = step.get("when")
        if not isinstance(text, str):
            return
        if "${{" in text:
            self.template((*base, "when"), text, name)
            return
        try:
            expr = parse(text)
        except ExpressionError as exc:
            self.problem((*base, "when"), f"bad expression: {exc}")
            return
        for ref in refs_of(expr):
            self.check_ref(ref, (*base, "when"), name)

    def python(self, base: Path_, step: dict[str, Any]) -> None:
        target = step.get("python")
        if not isinstance(target, str) or ":" not in target or self.archive_files is None:
            return
        module = target.split(":", 1)[0].replace(".", "/")
        if f"{module}.py" not in self.archive_files and (
            f"{module}/__init__.py" not in self.archive_files
        ):
            self.problem(
                (*base, "python"),
                f"module {module.replace('/', '.')!r} is not in "
                "the workflow archive (python steps run code shipped with it)",
            )

    def default(self, name: str, spec: dict[str, Any]) -> None:
        try:
            model = InputSpec.model_validate(spec)
        except ValidationError:
            return  # reported by the structural pass
        problem = check_value(model, spec["default"])
        if problem is not None:
            self.problem(("inputs", name, "default"), f"default does not fit: {problem}")

    def cycles(self) -> None:
        remaining = {k: set(v) for k, v in self.deps.items()}
        while True:
            try:
                graphlib.TopologicalSorter(remaining).prepare()
                return
            except graphlib.CycleError as exc:
                cycle: list[str] = exc.args[1]
                self.problem(("steps", cycle[0]), "steps form a cycle: " + " → ".join(cycle))
                # Break one edge of this cycle (whichever way it points) and look again.
                first, second = cycle[0], cycle[1]
                remaining[first].discard(second)
                remaining[second].discard(first)


def validate_data(
    data: Any, pos: _Positions | None = None, archive_files: Collection[str] | None = None
) -> Report:
    pos = pos or _Positions()
    if not isinstance(data, dict):
        return Report([Problem("", "a workflow is a mapping with name, version and steps")])
    problems = _structural(data, pos)
    sem = _Semantics(data, pos, archive_files)
    sem.run()
    problems += sem.problems
    problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.path))
    if problems:
        return Report(problems)
    spec = WorkflowSpec.model_validate(data)
    deps = {k: frozenset(v) for k, v in sem.deps.items()}
    order = tuple(graphlib.TopologicalSorter(deps).static_order())
    canonical = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return Report([], ValidWorkflow(spec, deps, order, canonical))


def validate_text(text: str, archive_files: Collection[str] | None = None) -> Report:
    """Validate a YAML or JSON document; ``archive_files`` (relative paths) enables the
    check that python steps' modules are shipped with the workflow."""
    data, pos, problems = load_document(text)
    if data is None and problems:
        return Report(problems)
    report = validate_data(data, pos, archive_files)
    if problems:
        report.problems[:0] = problems
        report.workflow = None
    return report


def validate_file(path: str | Path) -> Report:
    """Validate a spec file; files beside it count as the archive's content."""
    path = Path(path)
    root = path.parent
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return validate_text(path.read_text(encoding="utf-8"), files)

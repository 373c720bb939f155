"""Turning a step of a spec into a launch (rendering its templates), and collecting its
outputs once it ended."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowdeck.domain.expressions import ExpressionError, Ref, evaluate, parse, parse_template
from flowdeck.domain.spec import OutputSpec, StepSpec
from flowdeck.executors.base import Outcome

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
TAIL_BYTES = 2000
# Programs whose first argument that is not an option is a script they run; the options
# after which code (or a module), not a script, follows.
INTERPRETER = re.compile(r"(python|pypy)[0-9.]*|sh|bash|dash|zsh|perl|ruby|node|Rscript")
CODE_OPTIONS = {"-c", "-m", "-e", "-E", "--eval", "-r"}
VALUE_OPTIONS = {"-X", "-W", "-o", "-O", "-I"}  # their value is the next word


class StepError(Exception):
    """The step cannot be launched, or its outputs cannot be collected."""


Resolve = Callable[[Ref], Any]


def resolver(inputs: dict[str, Any], outputs: dict[str, dict[str, Any]], item: Any) -> Resolve:
    def resolve(ref: Ref) -> Any:
        if ref.kind == "input":
            if ref.name not in inputs:
                raise StepError(f"input {ref.name!r} has no value")
            return inputs[ref.name]
        if ref.kind == "step":
            try:
                return outputs[ref.name][ref.output]
            except KeyError as exc:
                raise StepError(f"{ref} has no value") from exc
        return item

    return resolve


def _render_text(text: str, resolve: Resolve, *, quote: bool = False) -> Any:
    tpl = parse_template(text)
    if quote and not tpl.is_single:
        parts = [p if isinstance(p, str) else _quoted(evaluate(p, resolve)) for p in tpl.parts]
        return "".join(parts)
    return tpl.render(resolve)


def _quoted(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(shlex.quote(_text(v)) for v in value)
    return shlex.quote(_text(value))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def render_argv(step: StepSpec, resolve: Resolve) -> list[str]:
    """The argv of a run step; an array given as a whole argument expands into several."""
    try:
        if step.shell == "bash":
            assert isinstance(step.run, str)
            return ["bash", "-c", _render_text(step.run, resolve, quote=True)]
        words = shlex.split(step.run) if isinstance(step.run, str) else list(step.run or [])
        argv: list[str] = []
        for word in words:
            value = _render_text(word, resolve)
            if isinstance(value, list):
                argv.extend(_text(v) for v in value)
            else:
                argv.append(_text(value))
    except (ExpressionError, ValueError) as exc:
        raise StepError(f"cannot build the command: {exc}") from exc
    if not argv:
        raise StepError("the command is empty")
    return argv


def from_archive(argv: list[str], code_dir: Path) -> list[str]:
    """``argv`` with the workflow's archive files made absolute: a relative program that
    names a file of the archive (``[tool.sh, x]``), or the script given to an interpreter
    (``[python3, -u, tool.py, x]``), runs from ``code_dir``."""

    def archived(word: str) -> str | None:
        if not word or word.startswith("-") or os.path.isabs(word):
            return None
        path = Path(os.path.normpath(code_dir / word))
        if not path.is_relative_to(code_dir) or not path.is_file():
            return None
        return str(path)

    out = list(argv)
    program = archived(out[0])
    if program is not None:
        out[0] = program
        return out
    name = Path(out[0]).name
    if not INTERPRETER.fullmatch(name):
        return out
    skip = False
    for i, word in enumerate(out[1:], 1):
        if skip:
            skip = False
            continue
        if word in CODE_OPTIONS and not (word == "-e" and name.endswith("sh")):
            break
        if word.startswith("-"):
            skip = word in VALUE_OPTIONS
            continue
        script = archived(word)
        if script is not None:
            out[i] = script
        break
    return out


def render_value(value: Any, resolve: Resolve) -> Any:
    """``with:`` values: strings rendered (keeping types), containers walked."""
    if isinstance(value, str):
        return _render_text(value, resolve)
    if isinstance(value, list):
        return [render_value(v, resolve) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, resolve) for k, v in value.items()}
    return value


def render_env(step: StepSpec, resolve: Resolve, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for key, value in step.env.items():
        env[key] = _text(_render_text(value, resolve))
    return env


def evaluate_condition(text: str, resolve: Resolve) -> bool:
    try:
        value = _render_text(text, resolve) if "${{" in text else evaluate(parse(text), resolve)
    except ExpressionError as exc:
        raise StepError(f"cannot evaluate when: {exc}") from exc
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "null")
    return bool(value)


def foreach_items(text: str, resolve: Resolve) -> list[Any]:
    value = _render_text(text, resolve)
    if not isinstance(value, list):
        raise StepError(f"foreach needs an array, got {type(value).__name__}")
    return value


def _inside(cwd: Path, relative: str) -> Path:
    path = (cwd / relative).resolve()
    try:
        path.relative_to(cwd.resolve())
    except ValueError as exc:
        raise StepError(f"output path {relative!r} leaves the step's directory") from exc
    return path


def collect_output(
    name: str, spec: OutputSpec, cwd: Path, outcome: Outcome, stdout: Path, resolve: Resolve
) -> Any:
    """The value of one output of a finished instance."""
    if spec.path is not None:
        path = _inside(cwd, _text(_render_text(spec.path, resolve)))
        if not path.is_file():
            raise StepError(f"output {name!r}: the step did not write {spec.path!r}")
        return str(path)
    if spec.glob is not None:
        pattern = _text(_render_text(spec.glob, resolve))
        _inside(cwd, pattern.split("*", 1)[0] or ".")
        found = [p for p in sorted(glob.glob(str(cwd / pattern))) if Path(p).is_file()]
        if spec.type == "file":  # one file (or none)
            if len(found) > 1:
                raise StepError(f"output {name!r}: {len(found)} files match {spec.glob!r}")
            return found[0] if found else None
        return found
    if spec.json_file is not None:
        path = _inside(cwd, _text(_render_text(spec.json_file, resolve)))
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise StepError(f"output {name!r}: the step did not write {spec.json_file!r}") from exc
        except ValueError as exc:
            raise StepError(f"output {name!r}: {spec.json_file!r} is not JSON: {exc}") from exc
        if spec.key is not None:
            if not isinstance(value, dict) or spec.key not in value:
                raise StepError(f"output {name!r}: no key {spec.key!r} in {spec.json_file!r}")
            value = value[spec.key]
        return value
    if spec.stdout == "text":
        return stdout.read_text(encoding="utf-8", errors="replace").rstrip("\n")
    if spec.stdout == "json":
        try:
            return json.loads(stdout.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise StepError(f"output {name!r}: standard output is not JSON: {exc}") from exc
    if spec.returns is not None or spec.stdout is None:
        key = spec.returns or name
        result = outcome.result
        if not isinstance(result, dict) or key not in result:
            raise StepError(f"output {name!r}: the function returned no {key!r}")
        return result[key]
    return None  # stdout: stream — its records are in the output ports it fills


def output_files(spec: OutputSpec, value: Any) -> list[str]:
    """The files of an output's value (its products)."""
    if spec.path is not None:
        return [value]
    if spec.glob is not None:
        return [str(v) for v in value] if isinstance(value, list) else [value] if value else []
    return []


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""

"""The expression language inside ``${{ … }}``.

    ${{ inputs.reads }}                      a workflow input
    ${{ steps.split.outputs.chunks }}        an output of another step (a dependency)
    ${{ item }}                              the current element of a step's ``foreach``
    ${{ inputs.mode == 'fast' && !inputs.dry_run }}

Operators: ``||``, ``&&``, ``!``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` and
parentheses; literals: numbers, single- or double-quoted strings, ``true``, ``false``,
``null``.  Parsing is pure; evaluation takes the values of the references.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "${{", "}}"
TEMPLATE_RE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<op>\|\||&&|==|!=|<=|>=|<|>|!|\(|\))
      | (?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)
    )""",
    re.VERBOSE,
)


class ExpressionError(ValueError):
    """An expression could not be parsed or evaluated."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference: ``inputs.NAME``, ``steps.STEP.outputs.NAME`` or ``item``."""

    kind: str  # "input" | "step" | "item"
    name: str = ""  # input name, or step name
    output: str = ""  # step output name

    def __str__(self) -> str:
        if self.kind == "input":
            return f"inputs.{self.name}"
        if self.kind == "step":
            return f"steps.{self.name}.outputs.{self.output}"
        return "item"


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr


Expr = Ref | Literal | Not | Binary


def _ref(dotted: str) -> Ref:
    parts = dotted.split(".")
    if parts == ["item"]:
        return Ref("item")
    if parts[0] == "inputs" and len(parts) == 2:
        return Ref("input", parts[1])
    if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
        return Ref("step", parts[1], parts[3])
    raise ExpressionError(
        f"unknown reference {dotted!r}: use inputs.NAME, steps.STEP.outputs.NAME or item"
    )


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"unexpected character {text[pos:].strip()[:1]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ExpressionError("the expression ends too early")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        if not self.tokens:
            raise ExpressionError("empty expression")
        expr = self.binary(0)
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return expr

    LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">="))

    def binary(self, level: int) -> Expr:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in self.LEVELS[level]:
            self.take()
            left = Binary(tok[1], left, self.binary(level + 1))
        return left

    def unary(self) -> Expr:
        kind, text = self.take()
        if kind == "op" and text == "!":
            return Not(self.unary())
        if kind == "op" and text == "(":
            inner = self.binary(0)
            if self.take() != ("op", ")"):
                raise ExpressionError("missing ')'")
            return inner
        if kind == "number":
            return Literal(float(text) if "." in text else int(text))
        if kind == "string":
            return Literal(text[1:-1])
        if kind == "name":
            words = {"true": True, "false": False, "null": None}
            return Literal(words[text]) if text in words else _ref(text)
        raise ExpressionError(f"unexpected {text!r}")


def parse(text: str) -> Expr:
    """Parse the inside of one ``${{ … }}``."""
    return _Parser(text).parse()


def refs_of(expr: Expr) -> Iterator[Ref]:
    if isinstance(expr, Ref):
        yield expr
    elif isinstance(expr, Not):
        yield from refs_of(expr.operand)
    elif isinstance(expr, Binary):
        yield from refs_of(expr.left)
        yield from refs_of(expr.right)


@dataclass(frozen=True, slots=True)
class Template:
    """A string with embedded expressions, parsed."""

    parts: tuple[str | Expr, ...]

    @property
    def is_single(self) -> bool:
        """The whole string is one expression: its value keeps its type."""
        return len(self.parts) == 1 and not isinstance(self.parts[0], str)

    def refs(self) -> Iterator[Ref]:
        for part in self.parts:
            if not isinstance(part, str):
                yield from refs_of(part)

    def render(self, resolve: Callable[[Ref], Any]) -> Any:
        values = [p if isinstance(p, str) else evaluate(p, resolve) for p in self.parts]
        if self.is_single:
            return values[0]
        return "".join(v if isinstance(v, str) else _text(v) for v in values)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return str(value)


@functools.lru_cache(maxsize=4096)
def parse_template(text: str) -> Template:
    """Split ``text`` into literal parts and parsed expressions (immutable: each text is
    parsed once, not at every start of a step)."""
    parts: list[str | Expr] = []
    pos = 0
    for m in TEMPLATE_RE.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(parse(m.group(1)))
        pos = m.end()
    rest = text[pos:]
    if OPEN in rest:
        raise ExpressionError("'${{' without a closing '}}'")
    if rest or not parts:
        parts.append(rest)
    return Template(tuple(parts))


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def evaluate(expr: Expr, resolve: Callable[[Ref], Any]) -> Any:
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Ref):
        return resolve(expr)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, resolve)
    if expr.op == "||":
        return evaluate(expr.left, resolve) or evaluate(expr.right, resolve)
    if expr.op == "&&":
        return evaluate(expr.left, resolve) and evaluate(expr.right, resolve)
    left, right = evaluate(expr.left, resolve), evaluate(expr.right, resolve)
    try:
        return _COMPARE[expr.op](left, right)
    except TypeError as exc:
        raise ExpressionError(
            f"cannot compare {type(left).__name__} with {type(right).__name__} using {expr.op}"
        ) from exc

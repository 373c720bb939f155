"""The workflow format and its offline validator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowdeck.domain.expressions import ExpressionError, Ref, parse, parse_template
from flowdeck.domain.spec import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    json_schema,
    parse_duration,
    parse_size,
)
from flowdeck.domain.validation import validate_file, validate_text
from flowdeck.errors import SpecInvalid

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*/flowdeck.yaml"))

FIVE_MISTAKES = """\
name: broken
version: "1"
inputs:
  reads:
    type: file
  chunks:
    type: integer
steps:
  split:
    run: [split, "${{ inputs.raeds }}"]
    outputs:
      parts: {glob: "part-*"}
  align:
    run: [align, "${{ steps.merge.outputs.bam }}"]
    outputs:
      bam: {path: out.bam}
  merge:
    run: [merge, "${{ steps.align.outputs.bam }}", "${{ steps.nothere.outputs.x }}"]
    outputs:
      bam: {path: merged.bam}
  report:
    outputs:
      html: {path: report.html}
"""


def test_examples_validate_offline() -> None:
    assert {p.parent.name for p in EXAMPLES} >= {"chain", "fanout", "files", "wordcount"}
    for path in EXAMPLES:
        report = validate_file(path)
        assert report.ok, [str(p) for p in report.problems]


def test_five_mistakes_give_five_located_errors_in_one_report() -> None:
    report = validate_text(FIVE_MISTAKES)
    found = [(p.path, p.line, p.column) for p in report.problems]
    assert found == [
        ("inputs.chunks.type", 7, 11),
        ("steps.split.run[1]", 10, 18),
        ("steps.align", 14, 5),
        ("steps.merge.run[2]", 18, 52),
        ("steps.report", 22, 5),
    ]
    messages = [p.message for p in report.problems]
    assert "did you mean 'int'" in messages[0]  # bad type
    assert "unknown input 'raeds'; did you mean 'reads'?" in messages[1]  # misspelled input
    assert messages[2] == "steps form a cycle: align → merge → align"
    assert "unknown step 'nothere'" in messages[3]  # unknown reference
    assert "exactly one of run, python or uses" in messages[4]  # missing required field
    with pytest.raises(SpecInvalid) as caught:
        report.require()
    assert len(caught.value.details["errors"]) == 5


def spec(steps: str, inputs: str = "", head: str = 'name: t\nversion: "1"\n') -> str:
    return head + (f"inputs:\n{inputs}" if inputs else "") + f"steps:\n{steps}"


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("name: t\nsteps:\n  a: {run: [true]}\n", "version", "missing required field 'version'"),
        ("name: t\nversion: 1.10\nsteps:\n  a: {run: [true]}\n", "version", "quote it"),
        (spec("  a: {run: [true], retires: 2}\n"), "steps.a.retires", "did you mean 'retries'"),
        (spec("  a: {run: [true], needs: [b]}\n"), "steps.a.needs[0]", "unknown step 'b'"),
        (spec("  a: {run: [true], needs: [a]}\n"), "steps.a.needs[0]", "cannot need itself"),
        (spec("  a: {run: ['${{ item }}']}\n"), "steps.a.run[0]", "only defined in a step"),
        (
            spec(
                "  a: {run: ['${{ inputs.x }}'], foreach: '${{ inputs.x }}'}\n",
                "  x: {type: string}\n",
            ),
            "steps.a.foreach",
            "needs an array",
        ),
        (
            spec("  a: {run: ['${{ inputs.s }}']}\n", "  s: {type: stream}\n"),
            "steps.a.run[0]",
            "bind it to a step's stdin",
        ),
        (
            spec("  a: {run: [cat], stdin: '${{ inputs.s }}'}\n", "  s: {type: string}\n"),
            "steps.a.stdin",
            "takes a stream port",
        ),
        (
            spec(
                "  a: {run: [cat], stdin: '${{ inputs.s }}'}\n"
                "  b: {run: [cat], stdin: '${{ inputs.s }}'}\n",
                "  s: {type: stream}\n",
            ),
            "steps.b.stdin",
            "already the stdin of step 'a'",
        ),
        (
            spec("  a: {python: 'm:f', stdin: '${{ inputs.s }}'}\n", "  s: {type: stream}\n"),
            "steps.a.stdin",
            "for run steps",
        ),
        (
            spec(
                "  a: {run: [cat], outputs: {o: {stdout: stream}}}\n"
                "  b: {run: [cat], stdin: '${{ steps.a.outputs.o }}'}\n"
            ),
            "steps.b.stdin",
            "a step's output",
        ),
        (
            spec(
                "  a: {run: [cat], foreach: '${{ inputs.x }}', outputs: {o: {stdout: stream}}}\n",
                "  x: {type: array, items: int}\n",
            ),
            "steps.a.outputs.o.stdout",
            "cannot write a stream",
        ),
        (
            spec("  a: {run: [cat], stdin: '${{ input.s }}'}\n", "  s: {type: stream}\n"),
            "steps.a.stdin",
            "bad expression",
        ),
        (
            spec("  a: {run: ['${{ inputs.n == }}']}\n", "  n: {type: int}\n"),
            "steps.a.run[0]",
            "bad expression",
        ),
        (
            spec("  a: {run: [true]}\n", "  n: {type: int, default: many}\n"),
            "inputs.n.default",
            "expected an int",
        ),
        (spec("  a: {run: [true]}\n", "  e: {type: enum}\n"), "inputs.e", "needs 'symbols'"),
        (spec("  a: {python: 'tools:go'}\n"), "steps.a.python", "not in the workflow archive"),
        (
            spec("  a: {run: [true], outputs: {o: {path: x, glob: y}}}\n"),
            "steps.a.outputs.o",
            "one source",
        ),
        (
            spec("  a: {run: [true], secrets: [{name: t, env: T, file: t.pem}]}\n"),
            "steps.a.secrets[0]",
            "exactly one of env or file",
        ),
        (
            spec("  a: {run: [true], secrets: [{name: t, env: FLOWDECK_T}]}\n"),
            "steps.a.secrets[0]",
            "flowdeck's own",
        ),
        (
            spec("  a: {run: [true], secrets: [{name: 9t, env: T}]}\n"),
            "steps.a.secrets[0].name",
            "",
        ),
        (
            spec("  a: {run: [true], secrets: [{name: t, file: ../etc/x}]}\n"),
            "steps.a.secrets[0].file",
            "",
        ),
        (
            spec("  a: {run: [true], env: {T: x}, secrets: [{name: t, env: T}]}\n"),
            "steps.a",
            "also set in env",
        ),
        (
            spec("  a: {uses: w@1, secrets: [{name: t, env: T}]}\n"),
            "steps.a",
            "a uses step has no secrets",
        ),
        (spec("  a: {run: [true]}\n  a: {run: [false]}\n"), "steps.a", "duplicate key"),
        ("name: t\nversion: '1'\nsteps:\n  a: &x {run: [true]}\n  b: *x\n", "", "aliases"),
        ("name: [unclosed\n", "", "not valid YAML"),
    ],
)
def test_each_mistake_is_named_where_it_is(text: str, path: str, words: str) -> None:
    report = validate_text(text, archive_files=[])
    assert not report.ok
    assert any(p.path == path and words in p.message for p in report.problems), [
        str(p) for p in report.problems
    ]
    assert all(p.line is not None for p in report.problems if p.path)


def test_json_documents_work_too() -> None:
    doc = {"name": "j", "version": "2", "steps": {"a": {"run": ["echo", "hi"]}}}
    report = validate_text(json.dumps(doc))
    assert report.ok and report.workflow is not None
    assert report.workflow.spec.ref == "j@2"


def test_dependencies_come_from_references_and_needs() -> None:
    text = spec(
        "  a: {run: [true], outputs: {o: {path: f}}}\n"
        "  b: {run: [cat, '${{ steps.a.outputs.o }}']}\n"
        "  c: {run: [true], needs: [b]}\n"
    )
    wf = validate_text(text).require()
    assert wf.dependencies == {"a": frozenset(), "b": {"a"}, "c": {"b"}}
    assert wf.order == ("a", "b", "c")


def test_spec_hash_ignores_formatting_but_not_content() -> None:
    a = validate_text(spec("  a: {run: [echo, hi]}\n")).require()
    b = validate_text('{"name":"t","version":"1","steps":{"a":{"run":["echo","hi"]}}}').require()
    c = validate_text(spec("  a: {run: [echo, ho]}\n")).require()
    assert a.spec_hash == b.spec_hash != c.spec_hash


def test_expressions() -> None:
    assert list(parse_template("x-${{ inputs.n }}.txt").refs()) == [Ref("input", "n")]
    cond = parse("inputs.mode == 'fast' && !inputs.dry || steps.a.outputs.n >= 3")
    values = {"inputs.mode": "fast", "inputs.dry": False, "steps.a.outputs.n": 1}
    from flowdeck.domain.expressions import evaluate

    assert evaluate(cond, lambda r: values[str(r)]) is True
    assert parse_template("${{ item }}").render(lambda r: [1, 2]) == [1, 2]
    assert parse_template("n=${{ item }}").render(lambda r: 3) == "n=3"
    for bad in ("inputs.x ==", "input.x", "(inputs.x", "inputs.x $"):
        with pytest.raises(ExpressionError):
            parse(bad)


def test_sizes_and_durations() -> None:
    assert parse_size(512) == 512 * 2**20
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("500M") == 500 * 10**6
    assert parse_duration("10m") == 600 and parse_duration(5) == 5
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_json_schema_describes_the_format() -> None:
    schema = json_schema()
    assert schema["required"] == ["name", "version", "steps"]
    step = schema["$defs"]["StepSpec"]["properties"]
    for reserved in ("uses", "stdin", "foreach", "when", "retries", "resources", "python"):
        assert reserved in step
    assert "stream" in schema["$defs"]["InputSpec"]["properties"]["type"]["enum"]


def test_examples_match_the_json_schema() -> None:
    import jsonschema_rs
    import yaml

    validator = jsonschema_rs.validator_for(json_schema())
    for path in EXAMPLES:
        validator.validate(yaml.safe_load(path.read_text()))


def test_a_streaming_workflow_is_valid() -> None:
    text = (
        "name: t\nversion: '1'\n"
        "inputs:\n  records: {type: stream}\n"
        "outputs:\n  results: {from: '${{ steps.a.outputs.out }}'}\n"
        "steps:\n"
        "  a:\n    run: [cat]\n    stdin: ${{ inputs.records }}\n"
        "    outputs: {out: {stdout: stream}}\n"
    )
    report = validate_text(text)
    assert report.ok, [str(p) for p in report.problems]


def test_sizes_in_bytes_and_the_run_resources_patterns() -> None:
    """A ``B`` unit is bytes (it was read as MiB); a part of a byte is a byte; the patterns
    a run's resources accept as text match only positive sizes and durations."""
    assert parse_size("512B") == 512 and parse_size("0.5b") == 1
    assert parse_size("1.5KiB") == 1536
    for good in ("2GiB", "512", " 1 gb ", "0.25T", "999999.9TiB"):
        assert re.match(SIZE_PATTERN, good), good
        assert 0 < parse_size(good) <= 2**62
    for bad in ("0", "0MiB", "0.0G", ".5G", "1000000", "1e3", "\u0663", "2 GiB\n", "-1"):
        assert not re.fullmatch(SIZE_PATTERN, bad), bad
    for good in ("90", "0.5s", "10m", "2h", "1d"):
        assert re.match(DURATION_PATTERN, good) and parse_duration(good) > 0
    for bad in ("0", "0.0ms", "nan", "inf", "1e999", "-5", "9" * 16):
        assert not re.fullmatch(DURATION_PATTERN, bad), bad

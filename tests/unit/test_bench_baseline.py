"""``make bench`` against the committed baseline: a figure more than 20 % worse than the
baseline's, on the same kind of machine, is printed as a regression; a baseline from
another machine is not compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import common, goals
from bench.common import Figure, worse_by


def test_rates_are_better_higher_and_times_lower() -> None:
    assert worse_by(75.0, 100.0, "runs/s") == pytest.approx(1 / 3)  # fewer per second
    assert worse_by(125.0, 100.0, "runs/s") == pytest.approx(-0.2)
    assert worse_by(13.0, 10.0, "ms") == pytest.approx(0.3)  # slower
    assert worse_by(8.0, 10.0, "MiB") == pytest.approx(-0.2)
    assert worse_by(1.0, 0.0, "ms") is None  # nothing to compare with
    assert worse_by(1.0, 2.0, "") is None  # a count, not a figure of merit


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "RESULTS", tmp_path / "latest.json")
    monkeypatch.setattr(common, "BASELINE", tmp_path / "baseline.json")
    monkeypatch.setenv("FLOWDECK_BENCH_DIR", str(tmp_path / "scratch"))
    return tmp_path


def write_baseline(folder: Path, machine: dict[str, object]) -> None:
    figures = [
        {"name": "chain latency", "value": 10.0, "unit": "ms"},
        {"name": "submissions", "value": 1000.0, "unit": "runs/s"},
    ]
    data = {"machine": machine, "benchmarks": {"demo": {"figures": figures}}}
    (folder / "baseline.json").write_text(json.dumps(data))


def test_a_regression_is_printed(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_baseline(results, common.machine())
    common.report(
        "demo",
        [
            Figure("chain latency", 13.0, "ms", "spawn", 5.0),  # 30 % slower
            Figure("submissions", 900.0, "runs/s", "healthz", 3000.0),  # 11 %: within
        ],
    )
    out = capsys.readouterr().out
    assert "REGRESSION: 30% worse than bench/results/baseline.json" in out
    assert "[demo: chain latency]" in out and "[demo: submissions]" not in out
    latest = json.loads((results / "latest.json").read_text())
    assert latest["machine"]["cpu"] == common.cpu_model()


def test_another_machines_baseline_is_not_compared(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_baseline(results, {"cpu": "Some Other CPU", "cores": 64})
    common.report("demo", [Figure("chain latency", 99.0, "ms", "spawn", 5.0)])
    out = capsys.readouterr().out
    assert "another kind of machine (Some Other CPU, 64 cores): not compared" in out
    assert "REGRESSION" not in out


def test_the_goals_table_judges_each_figure_it_finds(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common.report(
        "runs",
        [
            Figure("chain-40: latency per step, sandbox on", 6.0, "ms", "bwrap", 5.0),  # 1.2x
            Figure("fan-out-1000: overhead per step above the floor, sandbox on", 0.9, "ms", "", 1),
        ],
    )
    capsys.readouterr()
    goals.print_goals(markdown=True)
    lines = {line.split(" | ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["| chain step latency, sandbox on"].endswith("| met |")
    assert lines["| fan-out overhead per step above the floor, sandbox on"].endswith("| MISSED |")
    assert (
        "not run (python -m bench --only runtime)"
        in lines["| server CPU per single-step run (no HTTP), SQLite"]
    )

"""Print bench/results/latest.json as the Markdown table of docs/performance.md:
``python -m bench.table``."""

from __future__ import annotations

import json

from bench.common import RESULTS


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def main() -> None:
    data = json.loads(RESULTS.read_text())
    print("| benchmark | figure | goal | baseline (same run) | ratio |")
    print("|---|---|---|---|---|")
    for bench, result in data.get("benchmarks", {}).items():
        for f in result["figures"]:
            unit = f" {f['unit']}" if f["unit"] else ""
            print(
                f"| {bench} | {f['name']}: **{_num(f['value'])}{unit}** | {f['goal'] or '—'} "
                f"| {f['baseline_name']}: {_num(f['baseline'])}{unit} | {f['ratio']:.2f} |"
            )


if __name__ == "__main__":
    main()

"""Run every benchmark: ``python -m bench``."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = [
    "bench.auth_overhead",
    "bench.runs",
    "bench.events",
    "bench.webhooks",
    "bench.ports",
    "bench.graphs",
    "bench.faces",
    "bench.faces_ports",
    "bench.wes",
]

for module in BENCHMARKS:
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__")

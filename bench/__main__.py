"""Run every benchmark: ``python -m bench [--quick] [--million] [--only NAME ...]``.

Each figure is compared with ``bench/results/baseline.json`` (committed) where that comes
from the same kind of machine: one more than 20 % worse is printed as a REGRESSION.
``python -m bench --save-baseline`` makes the latest results (``latest.json``) the
baseline.

At the end it prints the performance goals beside the figures that answer them
(bench/goals.py).

``--quick`` runs each with smaller counts (a minute or two in all: a smoke run, not figures
to quote); ``--million`` adds the 1,000,000-run query figures (minutes of bulk loading) and
submits 1,000,000 runs in ``bench.queue`` (hours, and ~8 GiB of disk; never in CI).
"""

from __future__ import annotations

import argparse
import runpy
import sys

BENCHMARKS = [
    "auth_overhead",
    "submit",
    "runs",
    "queue",
    "sandbox",
    "spawn",
    "runtime",
    "purge",
    "fairshare",
    "sqlite_sync",
    "queries",
    "runs_list",
    "events",
    "webhooks",
    "ports",
    "graphs",
    "faces",
    "faces_ports",
    "wes",
    "cwl_pool",
    "cli",
    "slurm",
    "peers",
    "wes_status",
    "dask",
]

QUICK = {
    "auth_overhead": ["--requests", "500"],
    "submit": ["--seconds", "2", "--rounds", "1"],
    "runs": ["--runs", "200", "--fanout", "200", "--chain", "20"],
    "queue": ["--runs", "5000"],
    "sandbox": ["--chain", "20", "--fanout", "100", "--repeat", "1"],
    "spawn": ["--n", "50"],
    "runtime": ["--runs", "300", "--fanout", "300"],
    "purge": ["--ended", "5000", "--runs", "200"],
    "fairshare": ["--runs", "300"],
    "sqlite_sync": ["--runs", "200"],
    "queries": ["--rows", "20000"],
    "runs_list": ["--rows", "20000"],
    "events": ["--runs", "50", "--clients", "200"],
    "webhooks": ["--deliveries", "300", "--events", "1000"],
    "ports": ["--records", "100"],
    "graphs": ["--nodes", "10", "--chain", "10"],
    "faces": ["--runs", "10"],
    "faces_ports": [],
    "wes": ["--runs", "10", "--clients", "4", "--rounds", "1"],
    "cwl_pool": ["--runs", "10", "--clients", "4"],
    "cli": ["--repeat", "5"],
    "slurm": ["--chain", "4", "--fanout", "8"],
    "peers": ["--chain", "10", "--fanout", "100"],
    "wes_status": ["--requests", "300"],
    "dask": ["--items", "100"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    parser.add_argument("--million", action="store_true", help="add 1,000,000-run queries")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="just these benchmarks")
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help="copy bench/results/latest.json to baseline.json (run nothing)",
    )
    args = parser.parse_args()
    if args.save_baseline:
        from bench.common import BASELINE, RESULTS

        part = BASELINE.with_suffix(".part")
        part.write_text(RESULTS.read_text())
        part.replace(BASELINE)
        print(f"{RESULTS} -> {BASELINE}")
        return
    for name in args.only or BENCHMARKS:
        argv = list(QUICK[name]) if args.quick else []
        if name in ("queries", "queue") and args.million:
            argv.append("--million")
        sys.argv = [f"bench.{name}", *argv]
        runpy.run_module(f"bench.{name}", run_name="__main__")
    from bench.goals import print_goals

    print_goals()


if __name__ == "__main__":
    main()

"""The CWL v1.2 conformance tests through flowdeck, next to bare cwltool on this machine.

``python -m tests.conformance [--tags required] [-j 2]`` (``make conformance``) starts
``flowdeck serve`` as users start it (a real process on a fresh data directory), runs
cwltest with ``flowdeck-cwl-runner`` against it, runs cwltest with bare ``cwltool
--no-container --relax-path-checks`` on the same tests, and names by test id every test
that cwltool passes and flowdeck does not (a regression).  Only the Docker-free tests
run: not tagged ``docker``, no ``DockerRequirement`` in the tool's file.

The suite is read from ``FLOWDECK_CWL_TESTS`` or ``../shared/cwl-v1.2`` next to the
repository.  Bare cwltool's results are kept (by cwltool version and selection) under the
cache directory: ``--fresh-baseline`` runs it again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers import STRONG as PASSWORD
from tests.serving import serve

REPO = Path(__file__).resolve().parents[1]
SUITE = Path(os.environ.get("FLOWDECK_CWL_TESTS") or REPO.parent / "shared" / "cwl-v1.2")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowdeck-tests"
CWLTOOL_ARGS = ("--no-container", "--relax-path-checks")
FAILED_LINE = re.compile(r"^Test (\d+) failed:", re.M)


def missing_reason() -> str | None:
    if not (SUITE / "conformance_tests.yaml").is_file():
        return (
            f"the CWL v1.2 conformance tests are not at {SUITE} (clone "
            "https://github.com/common-workflow-language/cwl-v1.2 there, or set "
            "FLOWDECK_CWL_TESTS)"
        )
    if shutil.which("cwltest", path=_bin_path()) is None:
        return "cwltest is not installed (pip install -e '.[dev]')"
    return None


def _bin_path() -> str:
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def load_tests(index: Path) -> list[dict[str, Any]]:
    """The tests of a cwltest index, ``$import``-ed indexes included (tool paths made
    absolute)."""
    entries = yaml.safe_load(index.read_text(encoding="utf-8")) or []
    tests: list[dict[str, Any]] = []
    for entry in entries:
        if "$import" in entry:
            tests.extend(load_tests(index.parent / entry["$import"]))
            continue
        test = dict(entry)
        for key in ("tool", "job"):
            if test.get(key):
                test[key] = str((index.parent / test[key]).resolve())
        tests.append(test)
    return tests


def docker_free(test: dict[str, Any]) -> bool:
    if "docker" in (test.get("tags") or []):
        return False
    tool = Path(str(test["tool"]).split("#", 1)[0])
    try:
        return not _requires_docker(yaml.safe_load(tool.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError):
        return True


def _requires_docker(node: Any) -> bool:
    """Whether a document has DockerRequirement under some ``requirements`` (hints are
    ignored by ``--no-container``)."""
    if isinstance(node, list):
        return any(_requires_docker(v) for v in node)
    if not isinstance(node, dict):
        return False
    reqs = node.get("requirements")
    if isinstance(reqs, dict) and "DockerRequirement" in reqs:
        return True
    if isinstance(reqs, list) and any(
        isinstance(r, dict) and r.get("class") == "DockerRequirement" for r in reqs
    ):
        return True
    return any(_requires_docker(v) for k, v in node.items() if k != "hints")


def selected(tags: str | None) -> list[str]:
    wanted = set(tags.split(",")) if tags else None
    ids = []
    for test in load_tests(SUITE / "conformance_tests.yaml"):
        if not docker_free(test):
            continue
        if wanted is not None and not wanted & set(test.get("tags") or []):
            continue
        ids.append(str(test["id"]))
    return ids


def numbers(ids: list[str]) -> str:
    """cwltest's ``-n`` for these tests (its ``-s`` misses some ids): their places in the
    index, counted from 1 in the order cwltest reads it."""
    place = {str(t["id"]): i for i, t in enumerate(load_tests(SUITE / "conformance_tests.yaml"), 1)}
    return ",".join(str(place[i]) for i in ids)


@dataclass
class Outcome:
    passed: set[str]
    failed: set[str]
    unsupported: set[str]
    warm: int | None = None  # flowdeck's CWL runs that a warm cwltool worker ran

    def figures(self) -> dict[str, int]:
        total = len(self.passed) + len(self.failed) + len(self.unsupported)
        return {"total": total, "passed": len(self.passed), "failed": len(self.failed)} | {
            "unsupported": len(self.unsupported)
        }


def read_junit(path: Path, ids: list[str]) -> Outcome:
    """cwltest's results of ``ids``: its report has one test case per test run, in the
    order of ``-n``, but names them after the first tests of the whole index."""
    out = Outcome(set(), set(), set())
    cases = list(ET.parse(path).getroot().iter("testcase"))
    if len(cases) != len(ids):
        raise RuntimeError(f"{path}: {len(cases)} results for {len(ids)} tests")
    for name, case in zip(ids, cases, strict=True):
        if case.find("failure") is not None or case.find("error") is not None:
            out.failed.add(name)
        elif case.find("skipped") is not None:
            out.unsupported.add(name)
        else:
            out.passed.add(name)
    return out


def cwltest(tool: str, ids: list[str], jobs: int, xml: Path, cwd: Path, *args: str) -> Outcome:
    cmd = [
        shutil.which("cwltest", path=_bin_path()) or "cwltest",
        "--test",
        str(SUITE / "conformance_tests.yaml"),
        "--tool",
        tool,
        "-j",
        str(jobs),
        "--timeout",
        "600",
        "-n",
        numbers(ids),
        "--junit-xml",
        str(xml),
    ]
    if args:
        cmd += ["--", *args]
    # one PATH for bare cwltool and for flowdeck's server (whose steps get it): this
    # interpreter's folder first, so that tools calling `python` find the same one
    env = {**os.environ, "PATH": _bin_path()}
    done = subprocess.run(
        cmd, cwd=cwd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = done.stderr.decode(errors="replace")
    sys.stderr.write(log)
    out = read_junit(xml, ids)
    # cwltest's report leaves out some failures (a should_fail test that returned 0): its
    # log names every one
    at = {place: i for i, place in zip(ids, numbers(ids).split(","), strict=True)}
    for number in FAILED_LINE.findall(log):
        name = at.get(number)
        if name is not None:
            out.passed.discard(name)
            out.unsupported.discard(name)
            out.failed.add(name)
    return out


def baseline(ids: list[str], jobs: int, fresh: bool, work: Path) -> Outcome:
    chosen = hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:12]
    key = f"cwltool-{version('cwltool')}-{chosen}"
    cached = CACHE / f"cwl-baseline-{key}.json"
    if not fresh and cached.is_file():
        kept = json.loads(cached.read_text())
        return Outcome(set(kept["passed"]), set(kept["failed"]), set(kept["unsupported"]))
    cwltool = shutil.which("cwltool", path=_bin_path()) or "cwltool"
    out = cwltest(cwltool, ids, jobs, work / "cwltool.xml", work, *CWLTOOL_ARGS)
    CACHE.mkdir(parents=True, exist_ok=True)
    kept = {k: sorted(getattr(out, k)) for k in ("passed", "failed", "unsupported")}
    cached.write_text(json.dumps(kept))
    return out


def runner_script(work: Path, url: str, token: str) -> Path:
    """``flowdeck-cwl-runner`` of this checkout, pointed at the server."""
    script = work / "flowdeck-cwl-runner"
    pythonpath = os.pathsep.join([str(REPO / "src"), str(REPO)])
    script.write_text(
        "#!/bin/sh\n"
        f"export FLOWDECK_URL='{url}' FLOWDECK_TOKEN='{token}' PYTHONPATH='{pythonpath}'\n"
        f"exec '{sys.executable}' -m flowdeck.cli.cwl_runner \"$@\"\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def flowdeck_run(
    ids: list[str], jobs: int, work: Path, settings: dict[str, str] | None = None
) -> Outcome:
    env = {
        **{f"FLOWDECK_{k.upper()}": v for k, v in (settings or {}).items()},
        "FLOWDECK_DATA_DIR": str(work / "data"),
        "FLOWDECK_REGISTRATION": "open",
        "FLOWDECK_SUPERVISOR_IDLE_S": "3",  # the step supervisor ends soon after the server
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        # the CWL step imports flowdeck too: this checkout's, not an installed one
        "FLOWDECK_STEP_ENV_PASSTHROUGH": "PATH,PYTHONPATH",
        "PATH": _bin_path(),
    }
    with serve(work, env=env) as (url, _log):
        account = {"username": "conformance", "password": PASSWORD}
        r = httpx.post(f"{url}/api/v1/auth/register", json=account, timeout=60)
        r.raise_for_status()
        r = httpx.post(f"{url}/api/v1/auth/login", json=account, timeout=60)
        r.raise_for_status()
        script = runner_script(work, url, str(r.json()["token"]))
        outcome = cwltest(str(script), ids, jobs, work / "flowdeck.xml", work)
    outcome.warm = sum(
        "cwltool from a warm worker" in p.read_text(errors="replace")
        for p in (work / "data" / "runs").glob("*/logs/**/*stderr*")
    )
    return outcome


def compare(ids: list[str], mine: Outcome, theirs: Outcome) -> dict[str, Any]:
    return {
        "selected": len(ids),
        "cwltool": theirs.figures(),
        "flowdeck": mine.figures(),
        "regressions": sorted(theirs.passed - mine.passed),
        "flowdeck_only": sorted(mine.passed - theirs.passed),
        "flowdeck_warm_runs": mine.warm,
    }


def run(
    tags: str | None,
    only: str | None,
    jobs: int,
    fresh: bool,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Both runs of the selected tests, compared (``settings``: the server's, by name)."""
    ids = selected(tags)
    if only:
        ids = [i for i in ids if i in set(only.split(","))]
    with tempfile.TemporaryDirectory(prefix="flowdeck-conformance-") as tmp:
        work = Path(tmp)
        theirs = baseline(ids, jobs, fresh, work)
        mine = flowdeck_run(ids, jobs, work, settings)
    return compare(ids, mine, theirs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", help="only tests with one of these tags (comma list)")
    parser.add_argument("-s", dest="only", help="only these test ids (comma list)")
    parser.add_argument("-j", dest="jobs", type=int, default=2)
    parser.add_argument("--fresh-baseline", action="store_true")
    parser.add_argument("--report", type=Path, help="write the comparison here (JSON)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the server (docs/configuration.md), e.g. sandbox=off",
    )
    args = parser.parse_args(argv)
    reason = missing_reason()
    if reason:
        print(f"conformance: skipped: {reason}", file=sys.stderr)
        return 2
    settings = dict(item.split("=", 1) for item in args.setting)
    report = run(args.tags, args.only, args.jobs, args.fresh_baseline, settings)
    text = json.dumps(report, indent=2)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 1 if report["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())

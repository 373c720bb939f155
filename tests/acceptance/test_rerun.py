"""Rerun and the step cache through HTTP with real subprocesses: steps whose inputs did
not change are reused (per-step execution counters prove it), from_step forces the rest,
memoization across runs when a workflow asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import LiveServer, live_server, make_settings, register_and_login, wait_ended

API = "/api/v1"


def five_steps(counters: Path, name: str = "five", extra: str = "") -> str:
    def step(n: int, script: str, needs: str = "") -> str:
        return (
            f"  s{n}:\n    shell: bash\n    run: |\n"
            f"      umask 0; echo x >> {counters}/{name}-s{n}\n"
            f"      {script}\n    outputs:\n      out: {{path: out{n}.txt}}\n{needs}"
        )

    return (
        f'name: {name}\nversion: "1"\n{extra}inputs:\n  text: {{type: string}}\n'
        "  ok: {type: bool, default: true}\n"
        'outputs:\n  final: {from: "${{ steps.s5.outputs.out }}"}\nsteps:\n'
        + step(1, 'echo "${{ inputs.text }}" > out1.txt')
        + step(2, 'tr a-z A-Z < "${{ steps.s1.outputs.out }}" > out2.txt')
        + step(3, 'test "${{ inputs.ok }}" = true && rev "${{ steps.s2.outputs.out }}" > out3.txt')
        + step(4, 'cat "${{ steps.s3.outputs.out }}" "${{ steps.s3.outputs.out }}" > out4.txt')
        + step(5, 'wc -c < "${{ steps.s4.outputs.out }}" > out5.txt')
    )


@pytest.fixture(scope="module")
def counters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("counters")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, counters: Path) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("rerun") / "data",
        login_max_failures_per_address=10**6,
        sandbox_extra_rw=[counters],  # the steps count their executions there
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def user(srv: LiveServer, counters: Path) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "rerunner")) as client:
        for text in (five_steps(counters), five_steps(counters, "memo", "cache: true\n")):
            r = client.post(
                f"{API}/workflows", content=text, headers={"content-type": "application/yaml"}
            )
            assert r.status_code in (200, 201), r.text
        yield client


def counts(counters: Path, name: str = "five") -> list[int]:
    out = []
    for n in range(1, 6):
        path = counters / f"{name}-s{n}"
        out.append(len(path.read_text().splitlines()) if path.exists() else 0)
    return out


def states(c: httpx.Client, run_id: str) -> dict[str, str]:
    return {s["label"]: s["state"] for s in c.get(f"{API}/runs/{run_id}/steps").json()}


def products(c: httpx.Client, run_id: str) -> set[tuple[str, str]]:
    return {(p["name"], p["sha256"]) for p in c.get(f"{API}/runs/{run_id}/products").json()}


def test_rerun_after_a_fix_executes_only_the_failed_step_and_what_follows(
    user: httpx.Client, counters: Path
) -> None:
    r = user.post(
        f"{API}/runs",
        json={"workflow": "five@1", "params": {"text": "abc", "ok": False}, "start": True},
    )
    first = r.json()["id"]
    status = wait_ended(user, first)
    assert status["state"] == "failed" and status["error"]["step"] == "s3"
    assert counts(counters) == [1, 1, 1, 0, 0]

    r = user.post(f"{API}/runs/{first}/rerun", json={"params": {"ok": True}})
    assert r.status_code == 201, r.text
    second = r.json()["id"]
    status = wait_ended(user, second)
    assert status["state"] == "succeeded", status
    assert counts(counters) == [1, 1, 2, 1, 1]  # steps 3 to 5 only
    assert states(user, second) == {
        "s1": "cached",
        "s2": "cached",
        "s3": "succeeded",
        "s4": "succeeded",
        "s5": "succeeded",
    }
    assert status["steps"] == {"cached": 2, "succeeded": 3}
    cached = user.get(f"{API}/runs/{second}/events", params={"type": "step.cached"}).json()
    assert [(e["data"]["step"], e["data"]["from_run"]) for e in cached] == [
        ("s1", first),
        ("s2", first),
    ]

    # the same products as a clean run
    r = user.post(
        f"{API}/runs", json={"workflow": "five@1", "params": {"text": "abc"}, "start": True}
    )
    clean = r.json()["id"]
    assert wait_ended(user, clean)["state"] == "succeeded"
    assert products(user, second) == products(user, clean)
    assert len(products(user, clean)) == 5
    r = user.get(f"{API}/runs/{second}/products")
    s1 = next(p for p in r.json() if p["name"] == "s1.out")
    assert user.get(s1["url"]).text == "abc\n"  # the reused file is the new run's own
    before = counts(counters)

    # from_step: that step and its dependents run again, the rest is reused
    r = user.post(f"{API}/runs/{second}/rerun", json={"from_step": "s4"})
    third = r.json()["id"]
    assert wait_ended(user, third)["state"] == "succeeded"
    after = counts(counters)
    assert [a - b for a, b in zip(after, before, strict=True)] == [0, 0, 0, 1, 1]
    assert states(user, third)["s3"] == "cached" and states(user, third)["s4"] == "succeeded"


def test_rerun_refuses_unknown_steps_and_active_runs(user: httpx.Client) -> None:
    r = user.post(
        f"{API}/runs", json={"workflow": "five@1", "params": {"text": "q"}, "start": True}
    )
    run_id = r.json()["id"]
    wait_ended(user, run_id)
    r = user.post(f"{API}/runs/{run_id}/rerun", json={"from_step": "s9"})
    assert r.status_code == 422 and "s9" in r.json()["error"]["message"]
    r = user.post(f"{API}/runs/{run_id}/rerun", json={"params": {"nope": 1}})
    assert r.status_code == 422
    r = user.post(f"{API}/runs/run_doesnotexist/rerun")
    assert r.status_code == 404


def test_memoization_across_runs_only_when_the_workflow_asks(
    user: httpx.Client, counters: Path
) -> None:
    for _ in range(2):
        r = user.post(
            f"{API}/runs", json={"workflow": "memo@1", "params": {"text": "m"}, "start": True}
        )
        assert wait_ended(user, r.json()["id"])["state"] == "succeeded"
    assert counts(counters, "memo") == [1, 1, 1, 1, 1]
    r = user.post(
        f"{API}/runs", json={"workflow": "memo@1", "params": {"text": "other"}, "start": True}
    )
    assert wait_ended(user, r.json()["id"])["state"] == "succeeded"
    assert counts(counters, "memo") == [2, 2, 2, 2, 2]
    # five@1 does not memoize: a second identical run executes everything again
    before = counts(counters)
    for _ in range(1):
        r = user.post(
            f"{API}/runs", json={"workflow": "five@1", "params": {"text": "zz"}, "start": True}
        )
        wait_ended(user, r.json()["id"])
    r = user.post(
        f"{API}/runs", json={"workflow": "five@1", "params": {"text": "zz"}, "start": True}
    )
    wait_ended(user, r.json()["id"])
    assert [a - b for a, b in zip(counts(counters), before, strict=True)] == [2] * 5

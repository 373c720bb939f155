"""Per-request cost of bearer-token authentication.

The same trivial route is served twice, once open and once behind flowdeck's token
dependency; both are driven (1) in-process through the ASGI interface, which isolates the
server-side cost, and (2) over real HTTP to uvicorn with a keep-alive client.  The
difference is the authentication overhead (goal: under 1 ms).

    python -m bench.auth_overhead [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import uvicorn
from fastapi import Depends, FastAPI

from bench.common import Figure, median, percentile, report, scratch_dir
from flowdeck.api import create_app
from flowdeck.api.deps import current_principal
from flowdeck.config import load_settings
from flowdeck.services.accounts import Principal

PASSWORD = "timing passphrase 1234"


def build(data_dir: Path) -> tuple[FastAPI, str]:
    app = create_app(load_settings(None, data_dir=data_dir, registration="open"))

    @app.get("/bench/open")
    def open_route() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/bench/auth")
    def auth_route(_p: Annotated[Principal, Depends(current_principal)]) -> dict[str, str]:
        return {"hello": "world"}

    accounts = app.state.ctx.accounts
    accounts.register("bench", PASSWORD)
    return app, accounts.login("bench", PASSWORD).secret


async def _drive(client: httpx.AsyncClient, path: str, token: str, n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.get(path, headers=headers)
        samples.append((time.perf_counter() - t0) * 1e6)
        assert r.status_code == 200, r.text
    return samples


async def _compare(
    client: httpx.AsyncClient, token: str, n: int
) -> tuple[list[float], list[float]]:
    await _drive(client, "/bench/open", token, 200)  # warm-up
    await _drive(client, "/bench/auth", token, 200)
    open_s: list[float] = []
    auth_s: list[float] = []
    for _ in range(5):  # interleave rounds so drift affects both alike
        open_s += await _drive(client, "/bench/open", token, n // 5)
        auth_s += await _drive(client, "/bench/auth", token, n // 5)
    return open_s, auth_s


def in_process(app: FastAPI, token: str, n: int) -> tuple[list[float], list[float]]:
    async def go() -> tuple[list[float], list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await _compare(client, token, n)

    return asyncio.run(go())


def over_http(app: FastAPI, token: str, n: int) -> tuple[list[float], list[float]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    async def go() -> tuple[list[float], list[float]]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            return await _compare(client, token, n)

    try:
        return asyncio.run(go())
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        app, token = build(Path(tmp))
        figures = []
        for label, fn in (("in-process ASGI", in_process), ("HTTP to uvicorn", over_http)):
            open_s, auth_s = fn(app, token, args.requests)
            figures.append(
                Figure(
                    f"{label}: authenticated route p50",
                    median(auth_s),
                    "us",
                    "same route, no auth",
                    median(open_s),
                )
            )
            figures.append(
                Figure(
                    f"{label}: authenticated route p99",
                    percentile(auth_s, 99),
                    "us",
                    "same route, no auth",
                    percentile(open_s, 99),
                )
            )
            figures.append(
                Figure(
                    f"{label}: auth overhead p50",
                    median(auth_s) - median(open_s),
                    "us",
                    "same route, no auth",
                    median(open_s),
                    goal="< 1000 us",
                )
            )
        app.state.ctx.close()
    report(
        "auth_overhead",
        figures,
        {"requests": args.requests, "store": "SQLite (WAL, synchronous=NORMAL)"},
    )


if __name__ == "__main__":
    main()

"""A load generator for request rates: ``wrk`` when it is installed (``apt-get install wrk``),
else the raw keep-alive client of :mod:`bench.rawhttp` in this process.

The machine's cores are shared by the server and the load generator, so the generator's own
cost caps every rate measured: httpx spends 1 to 7 ms of CPU per request here, wrk and
rawhttp ~0.05 to 0.2 ms.  Each figure says which generator produced it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import rawhttp

WRK_SCRIPT = """
wrk.method = %(method)s
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(auth)s
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout))
end
"""


def generator() -> str:
    return "wrk" if shutil.which("wrk") else "rawhttp"


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for ASCII text


def rate(
    url: str,
    token: str,
    method: str,
    path: str,
    body: object | None = None,
    *,
    concurrency: int = 16,
    seconds: float = 5.0,
) -> float:
    """Requests per second at ``concurrency`` in flight for ``seconds``; raises if any
    request failed."""
    if generator() == "wrk":
        return _wrk(url, token, method, path, body, concurrency, seconds)
    return asyncio.run(_raw(url, token, method, path, body, concurrency, seconds))


def _wrk(
    url: str,
    token: str,
    method: str,
    path: str,
    body: object | None,
    concurrency: int,
    seconds: float,
) -> float:
    script = WRK_SCRIPT % {
        "method": _lua(method),
        "body": _lua(json.dumps(body)) if body is not None else "nil",
        "auth": _lua(f"Bearer {token}"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "load.lua"
        lua.write_text(script)
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                str(lua),
                url + path,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, duration_us, status_errors, io_errors, timeouts = map(int, line.split()[1:])
    if status_errors or io_errors or timeouts:
        raise RuntimeError(
            f"wrk: {status_errors} non-2xx, {io_errors} I/O errors, {timeouts} timeouts"
        )
    return requests / (duration_us / 1e6)


async def _raw(
    url: str,
    token: str,
    method: str,
    path: str,
    body: object | None,
    concurrency: int,
    seconds: float,
) -> float:
    req = rawhttp.request(url, token, method, path, body)
    t0 = time.perf_counter()
    done = await rawhttp.for_duration(url, req, seconds, concurrency)
    return done / (time.perf_counter() - t0)

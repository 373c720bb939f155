"""A flowdeck server in its own process for benchmarks (the load generator must not share
its interpreter)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import file_create_us, scratch_dir

PASSWORD = "timing passphrase 1234"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextmanager
def server(*, module: str = "flowdeck", **settings: str) -> Iterator[tuple[str, str, Path, int]]:
    """(url, token of user 'bench', data dir, pid) of a fresh server; ``module`` is run as
    ``python -m MODULE serve`` (another than flowdeck's: one that wraps its ``serve``)."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        data = Path(settings.get("data_dir") or Path(tmp) / "data")  # shared: several servers
        port = _port()
        env = {
            **os.environ,
            "FLOWDECK_DATA_DIR": str(data),
            "FLOWDECK_PORT": str(port),
            "FLOWDECK_REGISTRATION": "open",
            "FLOWDECK_LOG_LEVEL": "warning",
            "FLOWDECK_SUPERVISOR_IDLE_S": "5",
            **{f"FLOWDECK_{k.upper()}": v for k, v in settings.items()},
        }
        log = (Path(tmp) / "server.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            httpx.post(
                f"{url}/api/v1/auth/register", json={"username": "bench", "password": PASSWORD}
            )
            token = httpx.post(
                f"{url}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
            ).json()["token"]
            probe = file_create_us(data)
            print(f"  server data in {data}: {probe:.0f} us to create a file", flush=True)
            yield url, token, data, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()

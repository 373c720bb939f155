"""Peer systems installed from PyPI into their own virtual environments, made once under
the cache directory (``$XDG_CACHE_HOME/flowdeck-tests``, else ``~/.cache/flowdeck-tests``)
with the package index pip is configured with: Prefect (bench.peers), wes-service where the
dev environment lacks it (bench.wes_service), Sapporo (bench.sapporo)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowdeck-tests"


class PeerUnavailable(RuntimeError):
    """A peer system could not be installed or started: its figures are left out (the
    message says why), the benchmark goes on without it."""


def venv_program(
    venv_name: str, requirements: Sequence[str], program: str, timeout: float = 1800
) -> Path:
    """The program ``program`` of the virtual environment ``CACHE/venv_name``, which is
    made and given ``requirements`` on first use.  Raises :class:`PeerUnavailable` when
    the environment cannot be made (no index reached, no release fits, ...)."""
    venv = CACHE / venv_name
    exe = venv / "bin" / program
    if exe.exists():
        return exe
    shutil.rmtree(venv, ignore_errors=True)  # what an interrupted install left
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "pip"), "install", "-q", *requirements]
        subprocess.run(pip, check=True, timeout=timeout, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(venv, ignore_errors=True)
        # (pip's warnings about the configured indexes say nothing about the failure)
        lines = [x for x in (exc.stderr or "").splitlines() if x and not x.startswith("WARNING")]
        tail = lines[-3:]
        raise PeerUnavailable(
            f"pip install {' '.join(requirements)} failed (exit {exc.returncode}): "
            + " / ".join(tail)
        ) from exc
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        raise PeerUnavailable(f"{venv_name} could not be made: {exc}") from exc
    if not exe.exists():
        raise PeerUnavailable(f"{' '.join(requirements)} installed no {program} program")
    return exe

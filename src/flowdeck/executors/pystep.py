"""Run one python step in a child process (stdlib only, kept light to start fast).

``python -m flowdeck.executors.pystep MODULE:FUNC CODE_DIR ARGS_JSON RESULT_JSON`` calls
``FUNC(**kwargs)`` and writes ``{"ok": true, "result": ...}`` (exit 0) or
``{"ok": false, "error": "<traceback>"}`` (exit 1) to RESULT_JSON, atomically.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import traceback
from typing import Any

USAGE = "usage: python -m flowdeck.executors.pystep MODULE:FUNC CODE_DIR ARGS_JSON RESULT_JSON"


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def call(target: str, code_dir: str, args_path: str) -> Any:
    """Import ``module:function`` (from ``code_dir`` first) and call it with the kwargs."""
    if code_dir:
        sys.path.insert(0, code_dir)
    module_name, sep, func_name = target.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"a python step must be 'module:function', not {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in func_name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    with open(args_path, encoding="utf-8") as f:
        kwargs = json.load(f)
    if not isinstance(kwargs, dict):
        raise TypeError(f"the arguments of {target} must be a JSON object")
    return obj(**kwargs)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(USAGE, file=sys.stderr)
        return 2
    target, code_dir, args_path, result_path = argv
    try:
        value = call(target, code_dir, args_path)
    except BaseException:  # the step's own failure, SystemExit included: report it
        error = traceback.format_exc()
        sys.stderr.write(error)
        write_atomically(result_path, json.dumps({"ok": False, "error": error}))
        return 1
    try:
        text = json.dumps({"ok": True, "result": value}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        error = f"the return value of {target} is not JSON-serialisable: {exc}"
        print(error, file=sys.stderr)
        write_atomically(result_path, json.dumps({"ok": False, "error": error}))
        return 1
    write_atomically(result_path, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

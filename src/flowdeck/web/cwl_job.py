"""A CWL run's job document on the dashboard: pretty-printed as sent, each File's relative
location a link to the file staged for it."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from flowdeck.engines.cwl_names import FILES_INPUT

_LOCATION = re.compile(r'^(\s*"(?:location|path)": )("(?:[^"\\]|\\.)*")(,?)$')


def job_lines(job: dict[str, Any], files: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The document's lines (``text``); a line naming a staged file also has ``link`` (the
    location as written), ``url`` (the staged file) and ``after`` (what follows it)."""
    urls = {f["filename"]: f["url"] for f in files if f.get("input") == FILES_INPUT}
    lines: list[dict[str, str]] = []
    for line in json.dumps(job, indent=2, ensure_ascii=False).splitlines():
        m = _LOCATION.match(line)
        if m is not None:
            written = json.loads(m.group(2))
            name = unquote(written)
            while name.startswith("./"):
                name = name[2:]
            if name in urls:
                after = '"' + m.group(3)
                lines.append(
                    {"text": m.group(1) + '"', "link": written, "url": urls[name], "after": after}
                )
                continue
        lines.append({"text": line})
    return lines

"""Text that names things — file names, archive members, run tags, graph names: no control
characters (Unicode category Cc: C0, DEL, C1) and no bidirectional embeddings, overrides or
isolates (U+202A to U+202E, U+2066 to U+2069), which break log lines and headers or make a name
read differently from what it is (``invoice<U+202E>txt.exe`` shows as ``invoiceexe.txt``)."""

from __future__ import annotations

import re
import unicodedata

from flowdeck.errors import InvalidInput

# Cc is exactly U+0000 to U+001F and U+007F to U+009F.
_CLASS = r"\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CLASS}]")
# The same, for documents (JSON Schema, ECMA-262 syntax): a name without such characters;
# a file name, moreover, without '/' and '\\' and not '.' or '..'.
SAFE_TEXT_PATTERN = f"^[^{_CLASS}]*$"
_PLAIN = f"[^/\\\\{_CLASS}]"
FILE_NAME_PATTERN = f"^({_PLAIN}{{3,}}|[^./\\\\{_CLASS}]{_PLAIN}?|\\.[^./\\\\{_CLASS}])$"


def unsafe_character(text: str) -> str | None:
    """A description of the first character a name may not contain, or None."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    ch = found.group()
    kind = "control character" if unicodedata.category(ch) == "Cc" else "bidirectional control"
    name = unicodedata.name(ch, "")
    return f"{kind} U+{ord(ch):04X}" + (f" ({name})" if name else "")


def check_name(value: str, *, field: str, what: str) -> None:
    """Raise :class:`InvalidInput` (``details.field``) when ``value`` holds a character
    :func:`unsafe_character` refuses; ``what`` names the value in the message."""
    why = unsafe_character(value)
    if why is not None:
        raise InvalidInput(
            f"{what} {value!r} contains a {why}: control characters and bidirectional "
            "controls are not allowed",
            field=field,
        )

"""flowdeck: a long-running, stateful workflow job manager."""

from __future__ import annotations

__version__ = "0.1.0"

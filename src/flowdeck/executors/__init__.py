"""Executors run one step attempt each: a local process, or a worker of the in-server pool."""

from __future__ import annotations

from flowdeck.executors.base import Executor, Launch, Outcome, StepProcess

__all__ = ["Executor", "Launch", "Outcome", "StepProcess"]

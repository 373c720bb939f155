"""Per-user quotas: the most active runs, CPU slots at once and stored bytes a user may
have.  A default for everyone comes from the settings; an admin may override any of them
for one user (``None`` in an override: the default applies)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Quota:
    max_active_runs: int | None = None  # running, paused or stopping runs
    max_cpus: float | None = None  # slots of the user's running steps, added up
    max_stored_bytes: int | None = None  # staged uploads and products of the user's runs

    def over(self, defaults: Quota) -> Quota:
        """This override on top of ``defaults``: its values where it has them."""
        return replace(
            defaults,
            **{k: v for k, v in self.as_dict().items() if v is not None},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_active_runs": self.max_active_runs,
            "max_cpus": self.max_cpus,
            "max_stored_bytes": self.max_stored_bytes,
        }

    @property
    def empty(self) -> bool:
        return all(v is None for v in self.as_dict().values())


def human_bytes(n: float) -> str:
    """``1.2 GB``: bytes for people (powers of 1000, as in the quota messages)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def parse_bytes(text: str) -> int:
    """``10G``, ``500M``, ``1.5T``, ``4096``: a size in bytes (binary multiples: K = 1024).

    Raises ValueError for anything else."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1:] if s[-1:] in units and s[-1:] else ""
    number = s[: len(s) - len(unit)].strip()
    value = float(number)  # ValueError for junk
    if value < 0:
        raise ValueError(f"negative size: {text}")
    return int(value * units[unit])


def active_runs_reason(active: int, limit: int) -> str:
    return f"quota: {active} of {limit} active runs"


def cpus_reason(holding: float, limit: float) -> str:
    return f"quota: {holding:g} of {limit:g} CPU slots in use"


def stored_bytes_message(used: int, adding: int, limit: int) -> str:
    return (
        f"quota exceeded: stored bytes {human_bytes(used + adding)} of {human_bytes(limit)} "
        f"(now {human_bytes(used)}, this adds {human_bytes(adding)})"
    )

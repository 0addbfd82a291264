"""What the command line asks `dhr edit` for, typed (torch-free: the CLI builds it before any
model loads). `DirectionLibrary` resolves it against a pack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..packs.settings import DEFAULT_PACK, pack_settings
from .naming import fmt_strength, safe_name

__all__ = [
    "DIRECTION_OPTIONS",
    "DIRECTION_SUFFIXES",
    "GANSPACE_PRESETS",
    "EditRequest",
    "GanspaceSpec",
    "Sweep",
]

# first-class CLI options (`--smile 1.5`); every other pack direction goes through --edit
DIRECTION_OPTIONS: tuple[str, ...] = ("smile", "age", "pose")


# named GANSpace edits the command line knows before it meets a project: the default pack's
# (the e4e release's editings/ganspace.py examples: component, start, end, strength)
_default_ganspace = pack_settings(DEFAULT_PACK).ganspace
GANSPACE_PRESETS: dict[str, tuple[int, int, int, float]] = (
    dict(_default_ganspace.presets) if _default_ganspace is not None else {}
)


DIRECTION_SUFFIXES = (".pt", ".pth", ".npy", ".safetensors")


@dataclass(frozen=True)
class GanspaceSpec:
    """A parsed --ganspace value (component, rows START..END-1, target strength)."""

    component: int
    start: int
    end: int
    strength: float
    preset: str | None = None


@dataclass(frozen=True)
class Sweep:
    """--sweep 'NAME=START:STOP:N': N strengths from START to STOP (both included)."""

    name: str
    start: float
    stop: float
    count: int

    @property
    def values(self) -> list[float]:
        if self.count == 1:
            return [self.start]
        return [float(f"{v:.10g}") for v in np.linspace(self.start, self.stop, self.count)]

    @property
    def tag(self) -> str:
        start, stop = fmt_strength(self.start), fmt_strength(self.stop)
        return f"sweep-{safe_name(self.name)}{start}to{stop}x{self.count}"


@dataclass
class EditRequest:
    """What the command line asked for, before it is resolved against a project's pack."""

    named: list[tuple[str, float]] = field(default_factory=list)  # (name, strength) in order
    ganspace: list[GanspaceSpec] = field(default_factory=list)
    directions: list[tuple[Path, float]] = field(default_factory=list)
    layers: tuple[int, int | None] | None = None  # W+ rows A..B-1 (B None: to the end)
    sweep: Sweep | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name, _ in self.named:
            if name in seen:
                raise UsageError(f"the {name} edit is given twice")
            seen.add(name)
        if self.sweep is not None and self.sweep.name in seen:
            # the sweep sets that strength in every frame: the fixed value would be dropped
            raise UsageError(
                f"the {self.sweep.name} edit is given twice: as a fixed strength and by --sweep",
                hint=f"drop the fixed {self.sweep.name} strength; other edits apply to every frame",
            )

    @property
    def empty(self) -> bool:
        return not (self.named or self.ganspace or self.directions or self.sweep)

"""What a benchmark measures: its options (`BenchConfig`, stored in the results) and its images
in order (`bench_items`: synthetic scenes by index, or photos)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..synthetic.benchset import strata_for

FORMAT = "dhr-bench"
VERSION = 1
METHODS: tuple[str, ...] = ("encoder", "pti", "feature", "dhr")
DEFAULT_DIR = Path("dhr-bench")
# step options: None = the method's published default
STEP_OPTIONS = ("steps", "coarse_steps", "pivot_steps", "weight_steps")
# config fields that must agree for shards to be merged (they change the numbers)
MERGE_KEYS = ("methods", "pack", "synthetic", "seed", *STEP_OPTIONS, "grid_edit")


@dataclass
class BenchConfig:
    """What one benchmark measures (JSON-able; stored in the results)."""

    methods: tuple[str, ...] = METHODS
    pack: str = "synthetic"
    synthetic: int | None = None  # N scenes of the synthetic benchmark set
    images: tuple[str, ...] = ()  # photo paths (when not synthetic)
    seed: int = 0  # benchmark set seed and engine seed
    grid: int = 6  # thumbnails for the comparison grid: the first K images
    grid_edit: tuple[str, float] = ("smile", 2.0)  # the edit shown in the grid
    reuse: bool = False
    projects: str | None = None  # folder of per-method project files (with reuse)
    identity: bool = True
    aligned: bool = False  # photos are aligned square crops (FFHQ / CelebA-HQ test sets)
    steps: int | None = None
    coarse_steps: int | None = None
    pivot_steps: int | None = None
    weight_steps: int | None = None
    device: str = "cpu"
    models_dir: str | None = None
    offline: bool | None = None

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.images = tuple(str(p) for p in self.images)
        self.grid_edit = (str(self.grid_edit[0]), float(self.grid_edit[1]))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            problem = f"unknown method(s): {', '.join(unknown)}" if unknown else None
            raise UsageError(
                problem or "--methods names no method",
                hint="--methods takes a comma-separated list of " + ", ".join(METHODS),
            )
        if len(set(self.methods)) != len(self.methods):
            raise UsageError("a method is listed twice in --methods")
        if (self.synthetic is None) == (not self.images):
            raise UsageError(
                "give photos or --synthetic N (not both)",
                hint="dhr bench --synthetic 24, or dhr bench photos/*.jpg",
            )
        if self.synthetic is not None and self.synthetic < 1:
            raise UsageError("--synthetic needs at least 1 scene")

    def overrides(self) -> dict[str, int]:
        """Engine options that deviate from the published defaults."""
        return {k: getattr(self, k) for k in STEP_OPTIONS if getattr(self, k) is not None}

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class BenchItem:
    """One image of the benchmark: a synthetic scene (by index) or a photo."""

    position: int
    id: str
    stratum: str | None = None
    path: Path | None = None


def bench_items(config: BenchConfig) -> list[BenchItem]:
    """Every item of the benchmark in order (scenes are described, not rendered)."""
    if config.synthetic is not None:
        strata = strata_for(config.synthetic, config.seed)
        return [BenchItem(i, f"{i:05d}", s) for i, s in enumerate(strata)]
    items: list[BenchItem] = []
    seen: set[str] = set()
    for i, p in enumerate(config.images):
        path = Path(p)
        sid = path.name
        if sid in seen:  # same file name in two folders
            sid = f"{i:05d}-{path.name}"
        seen.add(sid)
        items.append(BenchItem(i, sid, None, path))
    return items

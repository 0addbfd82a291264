"""What a pack offers, read from its description alone (torch-free, so `dhr edit --list` and a
misspelt direction answer at once): the listing of its directions and GANSpace presets, and the
check of a direction's name. `DirectionLibrary` loads the directions themselves."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from .. import hub
from ..errors import BadData, UsageError
from ..packs.settings import PACK_NAMES, DirectionInfo, FileRef, PackSettings, pack_settings
from .request import DIRECTION_OPTIONS

__all__ = ["check_direction_name", "is_local", "listing"]


def is_local(ref: FileRef, models_dir: Path | None = None) -> bool:
    """The file is at hand without a download."""
    return ref.path is not None or hub.local_path(ref.model, models_dir=models_dir) is not None


def _known_elsewhere(name: str, pack: str) -> str | None:
    """Another built-in pack that has a direction or preset called `name` (a clearer error)."""
    for other in PACK_NAMES:
        s = pack_settings(other)
        presets = s.ganspace.presets if s.ganspace is not None else {}
        if other != pack and (name in s.directions or name in presets):
            return other
    return None


def check_direction_name(settings: PackSettings, name: str) -> None:
    """UsageError (misspelt) or BadData (a direction of another pack) unless the pack offers
    `name`; reads no file."""
    names = list(settings.directions)
    if name in names:
        return
    other = _known_elsewhere(name, settings.label)
    if other is not None:
        raise BadData(
            f"{name!r} is a direction of the {other} pack, but the project was made with "
            f"the {settings.label} pack",
            hint=f"directions of the {settings.label} pack: {', '.join(names)}",
        )
    close = difflib.get_close_matches(name, names, n=2)
    raise UsageError(
        f"unknown direction {name!r} for the {settings.label} pack",
        hint=(f"did you mean {', '.join(close)}? " if close else "")
        + f"available: {', '.join(names)} (`dhr edit --list`)",
    )


def _shape(info: DirectionInfo) -> list[int] | None:
    """A direction's shape: as described, else read from its file's header (no tensors)."""
    if info.shape:
        return list(info.shape)
    path = info.file.path
    if path is None or not path.is_file():
        return None
    try:
        if path.suffix == ".npy":
            return list(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                key = info.key or next(iter(f.keys()))
                return list(f.get_slice(key).get_shape())
    except (OSError, ValueError, StopIteration):
        return None
    return None  # a .pt file: only known once loaded


def listing(settings: PackSettings, models_dir: Path | None = None) -> dict[str, Any]:
    """What `dhr edit --list` shows for a pack (nothing is read or downloaded; files show as
    at hand or not)."""
    rows: list[dict[str, Any]] = []
    for name, info in settings.directions.items():
        rows.append(
            {
                "name": name,
                "option": f"--{name}" if name in DIRECTION_OPTIONS else f"--edit {name}=S",
                "shape": _shape(info),
                "unit": info.unit,
                "source": info.source,
                "detail": info.detail,
                "file": info.file.label,
                "cached": is_local(info.file, models_dir),
            }
        )
    extra: dict[str, Any] = {}
    g = settings.ganspace
    if g is not None:
        cached = is_local(g.file, models_dir)
        for name, (k, a, b, s) in g.presets.items():
            rows.append(
                {
                    "name": name,
                    "option": f"--ganspace {name}[:STRENGTH]",
                    "shape": [1, settings.style_dim],
                    "unit": f"target std-units on component {k}, rows {a}:{b} (preset {s:g})",
                    "source": g.source_short,
                    "detail": g.detail,
                    "file": g.file.label,
                    "cached": cached,
                }
            )
        extra["ganspace"] = (
            f"--ganspace IDX:START:END:STRENGTH ({g.components} components, W+ rows "
            "START..END-1; STRENGTH = target coordinate in std units, e4e convention)"
        )
    n = settings.n_latent
    return {
        "pack": settings.label,
        "n_latent": n,
        "directions": rows,
        **extra,
        "user_directions": f"--direction FILE[:STRENGTH] ([D], [1, D] or [{n}, D]; .pt, .npy or "
        ".safetensors)",
    }

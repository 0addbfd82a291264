"""Values the shell completions offer (typer's `autocompletion`): methods, detectors, devices,
packs, formats, direction names and model names. Torch-free and quick: a TAB runs `dhr` with
`_DHR_COMPLETE` set, which imports this and nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import hub, packs
from ..app.request import GANSPACE_PRESETS
from ..errors import DhrError

METHODS = {
    "dhr": "Domain-Specific Hybrid Refinement (default)",
    "pti": "pivotal tuning of the generator weights",
    "feature": "feature modulation of the whole image",
    "encoder": "e4e alone",
}
DETECTORS = {"retinaface": "RetinaFace (default)", "mtcnn": "MTCNN (facenet-pytorch weights)"}
DEVICES = {"auto": "cuda or mps when present, else cpu", "cpu": "", "cuda": "", "mps": ""}
FORMATS = ("jpg", "png", "webp", "tif", "bmp")
PIVOTS = {"w": "450-step W projection (default)", "e4e": "the encoder's W+"}


def _matching(choices: dict[str, str] | tuple[str, ...], incomplete: str) -> list[Any]:
    if isinstance(choices, dict):
        return [(c, h) if h else c for c, h in choices.items() if c.startswith(incomplete)]
    return [c for c in choices if c.startswith(incomplete)]


def methods(incomplete: str) -> list[Any]:
    return _matching(METHODS, incomplete)


def detectors(incomplete: str) -> list[Any]:
    return _matching(DETECTORS, incomplete)


def devices(incomplete: str) -> list[Any]:
    return _matching(DEVICES, incomplete)


def formats(incomplete: str) -> list[Any]:
    return _matching(FORMATS, incomplete)


def pivots(incomplete: str) -> list[Any]:
    return _matching(PIVOTS, incomplete)


def pack_names(incomplete: str) -> list[Any]:
    """The built-in packs, and folders below `incomplete` that hold a pack description."""
    found: list[Any] = [n for n in packs.PACK_NAMES if n.startswith(incomplete)]
    folder, _, stem = incomplete.rpartition("/")
    base = Path(folder or ".")
    if "/" in incomplete or incomplete.startswith("."):
        try:
            for p in sorted(base.iterdir()):
                if p.is_dir() and p.name.startswith(stem) and (p / "pack.json").is_file():
                    found.append(f"{folder}/{p.name}" if folder else p.name)
        except OSError:
            pass
    return found


def _pack_directions(name: str) -> list[str]:
    """A pack's direction names and GANSpace presets, from its description (no file read)."""
    try:
        settings = packs.pack_settings(name)
    except DhrError:
        return []
    ganspace = getattr(settings, "ganspace", None)
    return [*settings.directions, *(ganspace.presets if ganspace is not None else ())]


def _packs_of(ctx: Any) -> list[str]:
    """The pack given with --pack on the line so far, else every built-in pack."""
    chosen = (ctx.params or {}).get("pack") if ctx is not None else None
    return [chosen] if chosen else list(packs.PACK_NAMES)


def direction_edits(ctx: Any, incomplete: str) -> list[Any]:
    """NAME= for --edit and --sweep: the directions and GANSpace presets of --pack (else of
    every built-in pack)."""
    names: list[str] = []
    for p in _packs_of(ctx):
        names += _pack_directions(p)
    return [f"{n}=" for n in dict.fromkeys(names) if n.startswith(incomplete)]


def ganspace_presets(incomplete: str) -> list[Any]:
    return [n for n in GANSPACE_PRESETS if n.startswith(incomplete)]


def model_names(incomplete: str) -> list[Any]:
    """Registry names of model files, with their role."""
    try:
        entries = hub.registry().values()
    except DhrError:
        return []
    return [(e.name, e.role) for e in entries if e.name.startswith(incomplete)]


def download_names(incomplete: str) -> list[Any]:
    """What `dhr models download` takes: a pack's name (all its files) or a model's."""
    found: list[Any] = [
        (p, f"every file of the {p} pack") for p in hub.PACKS if p.startswith(incomplete)
    ]
    return found + model_names(incomplete)

"""The edit directions a pack offers, and the user's own direction files.

`DirectionLibrary` resolves an `EditRequest` (what the command line asked for) against one
pack: named directions (FFHQ: the InterFaceGAN age / smile / pose directions of the e4e release,
unit-norm, strength = distance moved in W; the synthetic pack: its own, strength 1.0 = +1
std-unit of the attribute), GANSpace components and presets (FFHQ), and `--direction` files
([D], [1, D] or [n_latent, D] in .pt / .npy / .safetensors, read without executing code, used
at their own scale). The edit arithmetic itself is `method/edits.py`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError, safe_open

from .. import hub
from ..errors import BadData, ParameterError, UsageError, not_found
from ..method.edits import Direction, Edit, GanspaceEdit, GanspacePCA, LinearEdit, as_rows
from ..nets.checkpoints import torch_load
from ..packs import Pack, read_manifest
from .request import DIRECTION_OPTIONS, GANSPACE_PRESETS, GanspaceSpec

if TYPE_CHECKING:
    from .request import EditRequest

__all__ = [
    "DIRECTION_OPTIONS",
    "FFHQ_DIRECTIONS",
    "GANSPACE_PRESETS",
    "DirectionLibrary",
    "GanspaceSpec",
    "load_direction_file",
    "rows_in",
]



# FFHQ: name -> (hub registry name, shape as published, source)
FFHQ_DIRECTIONS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "smile": ("interfacegan-smile", (1, 512), "e4e release, interfacegan_directions/smile.pt"),
    "age": ("interfacegan-age", (1, 512), "e4e release, interfacegan_directions/age.pt"),
    "pose": ("interfacegan-pose", (1, 18, 512), "e4e release, interfacegan_directions/pose.pt"),
}


FFHQ_UNIT = "distance in W (unit-norm direction)"


GANSPACE_FILE = "ganspace-ffhq-pca"








def load_direction_file(path: Path) -> tuple[Any, dict[str, str]]:
    """The tensor in a user direction file (.pt/.pth via weights-only torch.load, .npy without
    pickle, .safetensors) and its metadata ({} unless safetensors). A file holding several
    tensors must name one 'direction'."""
    path = Path(path)
    if not path.is_file():
        raise not_found(path, "direction file")
    suffix = path.suffix.lower()
    meta: dict[str, str] = {}
    if suffix == ".npy":
        try:
            obj: Any = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise BadData(f"cannot read {path} as a .npy array: {e}") from e
    elif suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                obj = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise BadData(f"cannot read {path} as safetensors: {e}") from e
    elif suffix in (".pt", ".pth"):
        obj = torch_load(path)
    else:
        raise UsageError(
            f"{path}: unknown direction format {suffix or '(no suffix)'}",
            hint="use a .pt, .npy or .safetensors file",
        )
    if isinstance(obj, dict):
        arrays = {k: v for k, v in obj.items() if hasattr(v, "shape")}
        if "direction" in arrays:
            obj = arrays["direction"]
        elif len(arrays) == 1:
            obj = next(iter(arrays.values()))
        else:
            raise BadData(
                f"{path} holds {len(arrays)} tensors ({', '.join(list(arrays)[:6])}); "
                "a direction file must hold one (or one called 'direction')"
            )
    if not hasattr(obj, "shape"):
        raise BadData(f"{path} holds a {type(obj).__name__}, not a direction tensor")
    return obj, meta


def _ffhq_file(name: str, pack: Pack) -> Path:
    """The one place the edit module asks the hub for an FFHQ direction file."""
    return hub.fetch(name, models_dir=pack.models_dir, offline=pack.offline)


def _known_elsewhere(name: str, pack_name: str) -> str | None:
    """The other pack that has a direction called `name` (for a clearer error)."""
    if pack_name != "ffhq" and (name in FFHQ_DIRECTIONS or name in GANSPACE_PRESETS):
        return "ffhq"
    if pack_name != "synthetic" and name in (read_manifest().get("directions") or {}):
        return "synthetic"
    return None


class DirectionLibrary:
    """The directions a pack offers (loaded on first use, once per pack)."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self.n_latent = pack.settings.n_latent
        self._cache: dict[str, Direction] = {}
        self._pca: GanspacePCA | None = None

    @property
    def style_dim(self) -> int:
        """Width of the pack's W (FFHQ: 512, known without loading the generator)."""
        if self.pack.name == "ffhq":
            return 512
        return int(self.pack.generator.style_dim)

    def names(self) -> list[str]:
        if self.pack.name == "ffhq":
            return list(FFHQ_DIRECTIONS)
        return list(self.pack.directions)

    def has_ganspace(self) -> bool:
        return self.pack.name == "ffhq"

    def check_name(self, name: str) -> None:
        """UsageError (misspelt) or BadData (a direction of the other pack) unless the pack
        offers `name`; reads no file."""
        if name in self.names():
            return
        other = _known_elsewhere(name, self.pack.name)
        if other is not None:
            raise BadData(
                f"{name!r} is a direction of the {other} pack, but the project was made with "
                f"the {self.pack.name} pack",
                hint=f"directions of the {self.pack.name} pack: {', '.join(self.names())}",
            )
        close = difflib.get_close_matches(name, self.names(), n=2)
        raise UsageError(
            f"unknown direction {name!r} for the {self.pack.name} pack",
            hint=(f"did you mean {', '.join(close)}? " if close else "")
            + f"available: {', '.join(self.names())} (`dhr edit --list`)",
        )

    def get(self, name: str) -> Direction:
        if name in self._cache:
            return self._cache[name]
        self.check_name(name)
        if self.pack.name == "ffhq":
            reg, _, source = FFHQ_DIRECTIONS[name]
            raw = torch_load(_ffhq_file(reg, self.pack))
            unit = FFHQ_UNIT
        else:
            raw = self.pack.directions[name]
            source = f"{self.pack.name} pack, directions.safetensors"
            unit = self._synthetic_unit(name)
        vec = as_rows(
            raw,
            n_latent=self.n_latent,
            style_dim=self.style_dim,
            name=name,
            pack=self.pack.name,
        )
        d = Direction(name, vec, source, unit)
        self._cache[name] = d
        return d

    def _synthetic_unit(self, name: str) -> str:
        info = (read_manifest().get("directions") or {}).get(name) or {}
        return str(info.get("unit", "std-units of the attribute (1.0 = +1 std)"))

    def user(self, path: Path) -> Direction:
        """A direction from a user file, checked against this pack (read once)."""
        key = f"file:{Path(path).resolve()}"
        if key not in self._cache:
            self._cache[key] = self._read_user(Path(path))
        return self._cache[key]

    def _read_user(self, path: Path) -> Direction:
        raw, meta = load_direction_file(path)
        declared = meta.get("pack")
        if declared and declared != self.pack.name:
            raise BadData(
                f"{path} is a direction for the {declared} pack, but the project was made with "
                f"the {self.pack.name} pack"
            )
        vec = as_rows(
            raw,
            n_latent=self.n_latent,
            style_dim=self.style_dim,
            name=str(path),
            pack=self.pack.name,
        )
        return Direction(Path(path).stem, vec, str(path), "as stored in the file")

    def pca(self) -> GanspacePCA:
        if not self.has_ganspace():
            raise UsageError(
                f"GANSpace edits need the ffhq pack; the {self.pack.name} pack has no PCA file",
                hint=f"use its directions instead: {', '.join(self.names())}",
            )
        if self._pca is None:
            state = torch_load(_ffhq_file(GANSPACE_FILE, self.pack))
            self._pca = GanspacePCA.from_state(state, 512)
        return self._pca

    def ganspace(self, spec: GanspaceSpec) -> GanspaceEdit:
        pca = self.pca()
        k = pca.comp.shape[0]
        if spec.component >= k:
            raise UsageError(f"--ganspace: component {spec.component} out of range (0..{k - 1})")
        if spec.end > self.n_latent:
            raise UsageError(
                f"--ganspace: rows {spec.start}:{spec.end} exceed the {self.n_latent} W+ rows"
            )
        return GanspaceEdit(
            spec.component, spec.start, spec.end, spec.strength, pca, preset=spec.preset
        )

    def named(self, name: str, strength: float, rows: tuple[int, int] | None) -> Edit:
        """A named edit: a pack direction, or (FFHQ) a GANSpace preset by name."""
        if name in GANSPACE_PRESETS and name not in self.names() and self.has_ganspace():
            k, a, b, _ = GANSPACE_PRESETS[name]
            return self.ganspace(GanspaceSpec(k, a, b, strength, preset=name))
        return LinearEdit(self.get(name), strength, rows)

    def resolve(
        self, request: EditRequest, overrides: dict[str, float] | None = None
    ) -> list[Edit]:
        """The request's edits for this pack. `overrides` replaces the strength of the edit with
        that name (a pack direction, a GANSpace preset or a --direction file's stem) or adds it:
        one frame of a sweep."""
        rows = rows_in(request.layers, self.n_latent)
        overrides = dict(overrides or {})
        used: set[str] = set()
        edits: list[Edit] = []
        for name, strength in request.named:
            used.add(name)
            edits.append(self.named(name, overrides.get(name, strength), rows))
        for spec in request.ganspace:
            if spec.preset is not None and spec.preset in overrides:
                used.add(spec.preset)
                spec = GanspaceSpec(
                    spec.component, spec.start, spec.end, overrides[spec.preset], spec.preset
                )
            edits.append(self.ganspace(spec))
        for path, strength in request.directions:
            d = self.user(path)
            used.add(d.name)
            edits.append(LinearEdit(d, overrides.get(d.name, strength), rows))
        for name, strength in overrides.items():
            if name not in used:
                edits.append(self.named(name, strength, rows))
        return edits

    def listing(self) -> dict[str, Any]:
        """What `dhr edit --list` shows for this pack."""
        rows: list[dict[str, Any]] = []
        if self.pack.name == "ffhq":
            for name, (reg, shape, source) in FFHQ_DIRECTIONS.items():
                cached = hub.local_path(reg, models_dir=self.pack.models_dir) is not None
                rows.append(
                    {
                        "name": name,
                        "option": f"--{name}",
                        "shape": list(shape),
                        "unit": FFHQ_UNIT,
                        "source": "e4e release",
                        "detail": source,
                        "file": reg,
                        "cached": cached,
                    }
                )
            cached = hub.local_path(GANSPACE_FILE, models_dir=self.pack.models_dir) is not None
            for name, (k, a, b, s) in GANSPACE_PRESETS.items():
                rows.append(
                    {
                        "name": name,
                        "option": f"--ganspace {name}[:STRENGTH]",
                        "shape": [1, 512],
                        "unit": f"target std-units on component {k}, rows {a}:{b} (preset {s:g})",
                        "source": "e4e release",
                        "detail": "GANSpace preset, e4e release ganspace_pca/ffhq_pca.pt",
                        "file": GANSPACE_FILE,
                        "cached": cached,
                    }
                )
            extra = {
                "ganspace": "--ganspace IDX:START:END:STRENGTH (80 components, W+ rows "
                "START..END-1; STRENGTH = target coordinate in std units, e4e convention)"
            }
        else:
            for name in self.names():
                d = self.get(name)
                rows.append(
                    {
                        "name": name,
                        "option": f"--{name}" if name in DIRECTION_OPTIONS else f"--edit {name}=S",
                        "shape": list(d.vector.shape),
                        "unit": "std-units of the attribute",
                        "source": f"{self.pack.name} pack",
                        "detail": f"{d.source}; {d.unit}",
                        "file": self.pack.settings.models.get("directions"),
                        "cached": True,
                    }
                )
            extra = {}
        return {
            "pack": self.pack.name,
            "n_latent": self.n_latent,
            "directions": rows,
            **extra,
            "user_directions": f"--direction FILE[:STRENGTH] ([D], [1, D] or "
            f"[{self.n_latent}, D]; .pt, .npy or .safetensors)",
        }



def rows_in(layers: tuple[int, int | None] | None, n_latent: int) -> tuple[int, int] | None:
    """The W+ rows A..B-1 of a `layers` range (B None: to the last row) for a code of
    `n_latent` rows."""
    if layers is None:
        return None
    a, b = layers
    text = f"{a}:{'' if b is None else b}"
    b = n_latent if b is None else b
    if b > n_latent:
        raise ParameterError(
            f"{{layers}} {text}: the W+ code has only {n_latent} rows (0..{n_latent})"
        )
    if a >= b:
        raise ParameterError(f"{{layers}} {text}: empty row range (need A < B)")
    return a, b

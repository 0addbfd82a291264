"""The edit directions a pack offers, and the user's own direction files.

`DirectionLibrary` resolves an `EditRequest` (what the command line asked for) against one
pack: named directions (FFHQ: the InterFaceGAN age / smile / pose directions of the e4e release,
unit-norm, strength = distance moved in W; the synthetic pack: its own, strength 1.0 = +1
std-unit of the attribute), GANSpace components and presets (FFHQ), and `--direction` files
([D], [1, D] or [n_latent, D] in .pt / .npy / .safetensors, read without executing code, used
at their own scale). The edit arithmetic itself is `method/edits.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadData, ParameterError, UsageError, not_found
from ..method.edits import Direction, Edit, GanspaceEdit, GanspacePCA, LinearEdit, as_rows
from ..nets.checkpoints import read_tensor_file
from ..packs.pack import Pack
from .catalog import check_direction_name, listing
from .request import GanspaceSpec

if TYPE_CHECKING:
    from .request import EditRequest

__all__ = [
    "DirectionLibrary",
    "GanspaceSpec",
    "load_direction_file",
    "rows_in",
]


def load_direction_file(path: Path) -> tuple[Any, dict[str, str]]:
    """The tensor in a user direction file (.pt/.pth via weights-only torch.load, .npy without
    pickle, .safetensors) and its metadata ({} unless safetensors). A file holding several
    tensors must name one 'direction'."""
    path = Path(path)
    if not path.is_file():
        raise not_found(path, "direction file")
    obj, meta = read_tensor_file(path)
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


class DirectionLibrary:
    """The directions a pack offers, as its description lists them (files read on first use,
    once per pack)."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self.settings = pack.settings
        self.n_latent = pack.settings.n_latent
        self.style_dim = pack.settings.style_dim
        self._cache: dict[str, Direction] = {}
        self._pca: GanspacePCA | None = None

    def names(self) -> list[str]:
        return list(self.settings.directions)

    @property
    def presets(self) -> dict[str, tuple[int, int, int, float]]:
        g = self.settings.ganspace
        return dict(g.presets) if g is not None else {}

    def has_ganspace(self) -> bool:
        return self.settings.ganspace is not None

    def check_name(self, name: str) -> None:
        """UsageError (misspelt) or BadData (a direction of another pack) unless the pack
        offers `name`; reads no file."""
        check_direction_name(self.settings, name)

    def get(self, name: str) -> Direction:
        if name in self._cache:
            return self._cache[name]
        self.check_name(name)
        info = self.settings.directions[name]
        vec = as_rows(
            self.pack.direction(name),
            n_latent=self.n_latent,
            style_dim=self.style_dim,
            name=name,
            pack=self.pack.name,
        )
        d = Direction(name, vec, info.origin or info.detail, info.meaning or info.unit)
        self._cache[name] = d
        return d

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
        g = self.settings.ganspace
        if g is None:
            raise UsageError(
                f"GANSpace edits need a pack with a PCA file; the {self.pack.name} pack has none",
                hint=f"use its directions instead: {', '.join(self.names())}",
            )
        if self._pca is None:
            self._pca = GanspacePCA.from_state(self.pack.read(g.file), self.style_dim, g.source)
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
        """A named edit: a pack direction, or a GANSpace preset by name."""
        if name in self.presets and name not in self.names():
            k, a, b, _ = self.presets[name]
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
        """What `dhr edit --list` shows for this pack (`catalog.listing`)."""
        return listing(self.settings, self.pack.models_dir)


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

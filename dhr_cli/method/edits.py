"""Edit arithmetic in W+ (DHR, Cao et al., Sec. 3.4; InterFaceGAN and GANSpace directions)::

    w_edit = w + sum_i strength_i * d_i  (rows A..B-1 only when given)  + GANSpace deltas

- `LinearEdit`: a [1, D] direction moves every W+ row, an [n_latent, D] one moves each row by
  its own vector; strength is in the direction's own unit.
- `GanspaceEdit` (the e4e release's convention, editings/ganspace.py): with the PCA's mean,
  unit components comp[k] and per-component std, the coordinate of W+ row 0 along comp[k] in
  std units is c = <w_0 - mean, comp[k]> / std[k]; the edit sets it to STRENGTH on rows
  START..END-1: delta = (STRENGTH - c) * std[k] * comp[k]. STRENGTH is a target coordinate,
  not a step (0 moves to the mean, not nowhere).
- `apply_edits`: every edit's delta, each computed on the unedited code, added together.

Rendering an edited code is `render.render_edit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import BadData

__all__ = [
    "Direction",
    "Edit",
    "GanspaceEdit",
    "GanspacePCA",
    "LinearEdit",
    "apply_edits",
    "as_rows",
]


@dataclass(frozen=True)
class Direction:
    """A latent direction: [1, D] (moves every W+ row) or [n_latent, D] (one vector per row)."""

    name: str
    vector: torch.Tensor
    source: str
    unit: str = ""


@dataclass(frozen=True)
class LinearEdit:
    """w + strength * direction, on W+ rows `rows` (None = all)."""

    direction: Direction
    strength: float
    rows: tuple[int, int] | None = None

    def delta(self, wplus: torch.Tensor) -> torch.Tensor:
        v = self.direction.vector.to(wplus.device, wplus.dtype)
        d = (self.strength * v).expand(wplus.shape[1], -1)[None].clone()
        if self.rows is not None:
            keep = torch.zeros(wplus.shape[1], dtype=torch.bool, device=wplus.device)
            keep[self.rows[0] : self.rows[1]] = True
            d[:, ~keep] = 0
        return d

    @property
    def name(self) -> str:
        return self.direction.name

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "direction",
            "name": self.name,
            "strength": self.strength,
            "rows": list(self.rows) if self.rows else None,
            "source": self.direction.source,
        }


@dataclass(frozen=True)
class GanspacePCA:
    """The GANSpace PCA of W: mean [1, D], unit components [K, D], std [K]."""

    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor
    source: str = "GANSpace PCA"

    @classmethod
    def from_state(cls, state: Any, style_dim: int, source: str = "GANSpace PCA") -> GanspacePCA:
        if not isinstance(state, dict) or not {"mean", "comp", "std"} <= set(state):
            raise BadData("the GANSpace file must hold 'mean', 'comp' and 'std'")
        mean, comp, std = (torch.as_tensor(state[k]).float() for k in ("mean", "comp", "std"))
        comp = comp.reshape(comp.shape[0], -1)
        if comp.shape[1] != style_dim or mean.numel() != style_dim or std.numel() != comp.shape[0]:
            raise BadData(
                f"GANSpace PCA shapes mean {list(mean.shape)}, comp {list(comp.shape)}, "
                f"std {list(std.shape)} do not fit a W of {style_dim}"
            )
        return cls(mean.reshape(1, style_dim), comp, std.reshape(-1), source)


@dataclass(frozen=True)
class GanspaceEdit:
    """GANSpace edit (e4e convention): set the std-unit coordinate of W+ row 0 along
    comp[component] to `strength`, applied to rows start..end-1."""

    component: int
    start: int
    end: int
    strength: float
    pca: GanspacePCA
    preset: str | None = None

    def delta(self, wplus: torch.Tensor) -> torch.Tensor:
        dev, dt = wplus.device, wplus.dtype
        comp = self.pca.comp[self.component].to(dev, dt)
        std = self.pca.std[self.component].to(dev, dt)
        coord = torch.dot(wplus[0, 0] - self.pca.mean[0].to(dev, dt), comp) / std
        d = torch.zeros_like(wplus)
        d[:, self.start : self.end] = (self.strength - coord) * std * comp
        return d

    @property
    def name(self) -> str:
        return self.preset or f"ganspace{self.component}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ganspace",
            "name": self.name,
            "component": self.component,
            "rows": [self.start, self.end],
            "strength": self.strength,
            "source": self.pca.source,
        }


Edit = LinearEdit | GanspaceEdit


def apply_edits(wplus: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """W+ [1, n_latent, D] plus every edit's delta (each computed on the unedited code).
    Linear edits of strength 0 add nothing at all, so the code stays bit-identical."""
    out = wplus.clone()
    for e in edits:
        if isinstance(e, LinearEdit) and e.strength == 0:
            continue
        out = out + e.delta(wplus)
    return out


def as_rows(t: Any, *, n_latent: int, style_dim: int, name: str, pack: str = "") -> torch.Tensor:
    """A direction as [1, D] or [n_latent, D] float32 (BadData for any other shape)."""
    if not isinstance(t, torch.Tensor):
        a = np.asarray(t)
        if a.dtype.kind not in "biufc":  # strings, bytes, dates: torch cannot even hold them
            raise BadData(f"direction {name} holds {a.dtype} values, not numbers")
        t = torch.as_tensor(a)
    if not t.is_floating_point():
        raise BadData(f"direction {name} is not a floating-point tensor ({t.dtype})")
    shape = list(t.shape)
    v = t.detach().to("cpu", torch.float32)
    while v.ndim > 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim == 1:
        v = v[None]
    accepted = f"[{style_dim}], [1, {style_dim}] or [{n_latent}, {style_dim}]"
    if v.ndim != 2 or v.shape[0] not in (1, n_latent):
        raise BadData(
            f"direction {name} has shape {shape}; the {pack or 'project'} pack needs {accepted}"
        )
    if v.shape[1] != style_dim:
        raise BadData(
            f"direction {name} has shape {shape}: {v.shape[1]} columns, but the "
            f"{pack or 'project'} pack's W has {style_dim} (a direction for another pack?)",
            hint=f"a direction for this pack is {accepted}",
        )
    if not bool(torch.isfinite(v).all()):
        raise BadData(f"direction {name} contains NaN or infinite values")
    return v.contiguous()

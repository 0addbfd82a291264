"""Rendering a result (DHR, Cao et al., Sec. 3.3-3.4): the one path from a stored inversion to
pixels, for `dhr invert`'s reconstruction and for every edit.

- `tuned`: the generator with theta + the stored weight delta, restored exactly afterwards;
- `render`: W+ through the tuned generator with the stored feature f at layer l, mixed with the
  generator's own f_l by the in-domain mask m (Eq. 4, f' = f_l m + f (1 - m)) or replacing it;
- `render_stored`: the same for a stored result, as its `RenderRecipe` says;
- `render_edit`: an edited W+ rendered the way the result's method renders, and for DHR with the
  out-of-domain pixels held (`edit_blend_mask`);
- `to_uint8` / `from_uint8`: images as the files hold them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadData
from ..nets.weight_delta import apply_delta, restore, snapshot
from .recipe import RenderRecipe

__all__ = [
    "StoredResult",
    "edit_blend_mask",
    "from_uint8",
    "render",
    "render_edit",
    "render_stored",
    "stored_feature_mask",
    "to_uint8",
    "tuned",
]


class StoredResult(Protocol):
    """What rendering reads of a stored inversion (a project file, or one in memory)."""

    wplus: torch.Tensor
    deltas: dict[str, torch.Tensor]
    feature: torch.Tensor | None
    mask: torch.Tensor | None
    recipe: RenderRecipe


@contextlib.contextmanager
def tuned(
    generator: torch.nn.Module, deltas: Mapping[str, torch.Tensor] | None
) -> Iterator[torch.nn.Module]:
    """The generator with theta + delta applied for the duration of the block (restored
    exactly afterwards)."""
    if not deltas:
        yield generator
        return
    names = dict(generator.named_parameters())
    unknown = [n for n in deltas if n not in names]
    if unknown:  # a project of another generator, or edited by hand: bad data, not a bug
        raise ValueError(f"delta for {unknown[0]!r}, a parameter the generator does not have")
    base = snapshot(generator, list(deltas))
    try:
        apply_delta(generator, dict(deltas))
        yield generator
    finally:
        restore(generator, base)


@torch.no_grad()
def render(
    generator: torch.nn.Module,
    wplus: torch.Tensor,
    *,
    deltas: Mapping[str, torch.Tensor] | None = None,
    feature: torch.Tensor | None = None,
    layer: int | None = None,
    feature_mask: torch.Tensor | None = None,
    stop_at: int | None = None,
) -> torch.Tensor:
    """Image [B, 3, S, S] of W+ through theta + delta with the stored feature (Eq. 4 with
    `feature_mask`, or a plain replacement without). The one rendering path for invert's
    reconstruction and for edits (pass the edited W+)."""
    device = next(generator.parameters()).device
    with tuned(generator, deltas):
        if feature is None:
            return generator(wplus.to(device), stop_at=stop_at)
        return generator(
            wplus.to(device),
            stop_at=stop_at,
            feature_layer=layer,
            feature=feature.to(device),
            feature_mask=None if feature_mask is None else feature_mask.to(device),
        )


def stored_feature_mask(project: StoredResult) -> torch.Tensor | None:
    """The in-domain mask a project's stored feature is mixed by (Eq. 4), or None when the
    project has no feature, no mask, or replaces f_l everywhere (`feature`)."""
    if project.feature is None or project.recipe.feature_mask != "in_domain":
        return None
    return project.mask


def render_stored(
    generator: torch.nn.Module, project: StoredResult, *, wplus: torch.Tensor | None = None
) -> torch.Tensor:
    """Render a project file's result (any method), optionally with another W+ (an edit).

    `project` is anything with `wplus`, `deltas`, `feature`, `mask` and a `recipe`
    (`RenderRecipe`: how the feature enters), as `dhr_cli.project.Project` has.
    """
    feature = project.feature
    mask = stored_feature_mask(project)
    layer = project.recipe.layer
    if feature is not None and layer is None:
        raise ValueError("project has a feature but no feature layer in its invert params")
    return render(
        generator,
        project.wplus if wplus is None else wplus,
        deltas=project.deltas,
        feature=feature,
        layer=layer,
        feature_mask=mask,
    )


def render_edit(
    generator: torch.nn.Module,
    project: StoredResult,
    wplus: torch.Tensor,
    *,
    keep_out_of_domain: bool = True,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The aligned image [1, 3, S, S] of an edited W+ rendered the way the project's method
    renders (theta + stored delta; stored feature with the stored mask for DHR).

    keep_out_of_domain: for projects rendered with Eq. 4 (a stored feature mixed by a stored
    mask, i.e. DHR), also hold the out-of-domain *pixels*: out = r + m_e (edit - r), with r the
    unedited reconstruction and m_e the in-domain mask feathered inwards (`edit_blend_mask`).
    Holding the feature at layer l alone leaves the later layers and the RGB skip of the
    earlier ones free to follow the edited code, which moves occluders and backgrounds by a
    few grey levels (measured in benchmarks/edit_synthetic.py). A zero edit returns r exactly.
    reference: the unedited reconstruction when already rendered (sweeps reuse it).
    """
    mask = stored_feature_mask(project) if keep_out_of_domain else None
    try:
        img = render_stored(generator, project, wplus=wplus)
        if mask is None:
            return img
        if reference is None:
            reference = render_stored(generator, project)
    except ValueError as e:
        raise BadData(f"the project cannot be rendered: {e}") from e
    m = edit_blend_mask(mask, img.shape[-1]).to(img)
    return reference + m * (img - reference)


def edit_blend_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Where an edit may change pixels: the in-domain mask [1, 1, h, w] (1 = in-domain) at
    `size`, feathered *inwards* only (min of the mask and its Gaussian blur, sigma = size/64)
    so out-of-domain pixels keep exactly their reconstruction and the seam falls inside the
    face."""
    m = mask.to(torch.float32)
    if m.shape[-1] != size:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    sigma = size / 64
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    padded = F.pad(m, (r, r, r, r), mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return torch.minimum(m, blurred).clamp(0, 1)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> [H, W, 3] uint8 (round half away, clamp)."""
    x = ((img[0].detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def from_uint8(rgb: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1.0

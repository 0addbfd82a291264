"""Edit error on the synthetic benchmark set: every true edit of a scene (attribute x delta)
rendered from one method's project the way `dhr edit` renders it and compared with the true
edited image, plus what doing nothing scores (the input image vs each true edit)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DhrError
from .metrics import grey_change, mse, nanmean

if TYPE_CHECKING:
    import torch

    from .run import Bench

EDIT_KEYS = ("mse", "mse_in", "mse_out", "ood_change")


def _edit_names(bench: Bench, sample: Any) -> list[tuple[str, float]]:
    names = set(bench.library.names())
    if sample is None:
        return []
    return [k for k in sample.edits if k[0] in names]


def _render(bench: Bench, project: Any, name: str, strength: float) -> np.ndarray:
    from ..app.request import EditRequest
    from ..method.edits import apply_edits
    from ..method.render import render_edit, to_uint8

    edits = bench.library.resolve(EditRequest(named=[(name, strength)]))
    w = apply_edits(project.wplus, edits)
    return to_uint8(render_edit(bench.pack.generator, project, w))


def _vs_truth(a: torch.Tensor, truth: Any, ood_change: float) -> dict[str, float]:
    """One image ([1, 3, H, W] in [-1, 1]) vs a true edit: MSE over the whole image, its true
    in-domain and its true out-of-domain pixels; with the occluder pixels' grey-level change."""
    from ..method.render import from_uint8

    b = from_uint8(truth.image)
    return {
        "mse": mse(a, b),
        "mse_in": mse(a, b, ~truth.ood_mask),
        "mse_out": mse(a, b, truth.ood_mask),
        "ood_change": ood_change,
    }


def _means(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    rows = list(rows)
    return {k: nanmean(r[k] for r in rows) for k in EDIT_KEYS}


def edit_errors(
    bench: Bench, project: Any, recon: np.ndarray, sample: Any
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Edit error of one method's project vs the true edits (synthetic), and the grid edit."""
    from ..method.render import from_uint8

    grid_edit = bench.config.grid_edit
    grid_img = None
    rows: dict[str, dict[str, float]] = {}
    for attr, d in _edit_names(bench, sample):
        img = _render(bench, project, attr, d)
        if (attr, d) == grid_edit:
            grid_img = img
        truth = sample.edit(attr, d)
        # occluder pixels out-of-domain before and after the true edit: they should not move
        change = grey_change(recon, img, truth.ood_mask & sample.ood_mask)
        rows[f"{attr}:{d:+g}"] = _vs_truth(from_uint8(img), truth, change)
    if grid_img is None:
        try:
            grid_img = _render(bench, project, *grid_edit)
        except DhrError:
            grid_img = None
    if not rows:
        return {}, grid_img
    out: dict[str, Any] = _means(rows.values())
    attrs = sorted({name.split(":")[0] for name in rows})
    out["by_attribute"] = {
        a: _means(r for n, r in rows.items() if n.split(":")[0] == a) for a in attrs
    }
    out["by_edit"] = rows
    return out, grid_img


def no_edit_reference(sample: Any, library: Any) -> dict[str, Any]:
    """What doing nothing scores: the input image vs each true edit (and how much the true
    edit itself moves the occluder pixels)."""
    from ..method.render import from_uint8

    names = set(library.names()) if library is not None else set()
    x = from_uint8(sample.image)
    rows = {}
    for (attr, d), truth in sample.edits.items():
        if attr not in names:
            continue
        change = grey_change(sample.image, truth.image, truth.ood_mask & sample.ood_mask)
        rows[f"{attr}:{d:+g}"] = _vs_truth(x, truth, change)
    return _means(rows.values()) if rows else {}

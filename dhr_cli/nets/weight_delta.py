"""Generator weight deltas: what DHR's weight refinement changed, stored compactly.

Hybrid Modulation Refinement tunes the generator's weights per photo (theta -> theta*).
Instead of a whole generator, a project stores delta = theta* - theta for the tuned
parameters and re-applies it to the pristine pretrained generator:

    base = snapshot(G)                 # before tuning
    ... optimise G ...
    delta = compute_delta(G, base, dtype=torch.float16)
    project.deltas = delta             # "delta.<param name>" tensors in the project file
    G0 = load_generator(...)           # later, a fresh pretrained generator
    apply_delta(G0, project.deltas)    # G0 now renders like the tuned G

float16 storage halves the size; the delta is small relative to the weights, so its
rounding error is negligible (the round-trip test bounds the image error below 1e-3).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["apply_delta", "compute_delta", "delta_nbytes", "restore", "snapshot"]


def snapshot(module: nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of `module`'s parameters (all, or only `names`)."""
    params = dict(module.named_parameters())
    keys = list(params) if names is None else list(names)
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"no parameter named {missing[0]!r}")
    return {k: params[k].detach().clone() for k in keys}


def compute_delta(
    module: nn.Module,
    base: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    include_unchanged: bool = False,
) -> dict[str, torch.Tensor]:
    """{name: theta* - theta} for the parameters in `base` that changed.

    dtype: storage dtype of the deltas (e.g. torch.float16); default the parameter's.
    include_unchanged: also keep all-zero deltas (default: only tuned parameters).
    Returned tensors are contiguous CPU tensors, ready for safetensors.
    """
    params = dict(module.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, before in base.items():
        if name not in params:
            raise KeyError(f"module has no parameter {name!r}")
        d = params[name].detach() - before.to(params[name].device)
        if not include_unchanged and not bool(d.any()):
            continue
        out[name] = d.to("cpu", dtype or d.dtype).contiguous()
    return out


@torch.no_grad()
def apply_delta(module: nn.Module, delta: dict[str, torch.Tensor], *, alpha: float = 1.0) -> None:
    """theta += alpha * delta, in place (alpha=-1 undoes it). Unknown names raise KeyError."""
    params = dict(module.named_parameters())
    for name, d in delta.items():
        if name not in params:
            raise KeyError(f"module has no parameter {name!r}")
        p = params[name]
        if tuple(d.shape) != tuple(p.shape):
            raise ValueError(f"delta {name} has shape {tuple(d.shape)}, parameter {tuple(p.shape)}")
        p.add_(d.to(p.device, p.dtype), alpha=alpha)


@torch.no_grad()
def restore(module: nn.Module, base: dict[str, torch.Tensor]) -> None:
    """Copy a `snapshot` back into the module's parameters."""
    params = dict(module.named_parameters())
    for name, v in base.items():
        params[name].copy_(v)


def delta_nbytes(delta: dict[str, torch.Tensor]) -> int:
    """Storage size of a delta in bytes."""
    return sum(t.numel() * t.element_size() for t in delta.values())

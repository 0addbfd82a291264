"""Optimisation-based projection of an image into W (Karras et al. 2020, rosinality's projector).

Used twice: DHR's coarse inversion (40 steps at lr 0.1, whose final LPIPS maps drive
Domain-Specific Segmentation) and PTI's pivot (450 steps at lr 5e-3).

Recipe (both projectors of the StyleGAN2 family):
- start from the mean latent w_avg of 10,000 mapped samples (a single W, not W+);
- Adam; learning rate lr * ramp with ramp = min(1, (1 - t) / 0.25) -> 0.5 - 0.5 cos(pi ramp),
  times min(1, t / 0.05) (t = step / steps);
- latent noise: w + N(0,1) * w_std * 0.05 * max(0, 1 - t / 0.75)^2, w_std the RMS distance
  of the samples from w_avg;
- the per-layer noise maps are re-drawn N(0,1), optimised too, penalised by the multi-scale
  autocorrelation regulariser (weight 1e5) and re-normalised to zero mean, unit variance after
  every step;
- loss: LPIPS-VGG at `lpips_res` (256 px by default) + noise regularisation.
The generator runs at `work_res` through its early exit (`stop_at`), so 1024-px generators are
projected at 256 px at a fraction of the cost. Everything random comes from one seeded
`torch.Generator`: the same seed gives the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..nets.perceptual import resize_image
from .losses import TargetLPIPS

__all__ = [
    "ProjectorConfig",
    "Projection",
    "lr_at",
    "noise_regularization",
    "normalize_noise_",
    "project_w",
]


@dataclass(frozen=True)
class ProjectorConfig:
    """Hyperparameters of the W projector (defaults: DHR's coarse inversion)."""

    steps: int = 40
    lr: float = 0.1
    lr_rampdown: float = 0.25
    lr_rampup: float = 0.05
    noise_strength: float = 0.05
    noise_ramp: float = 0.75
    noise_regularize: float = 1e5
    work_res: int | None = 256  # generator early exit (None = full size)
    lpips_res: int | None = 256  # LPIPS-VGG input size (None = work_res)


@dataclass
class Projection:
    """Result of `project_w`: the latent, the optimised noise, the final image and loss maps."""

    w: torch.Tensor  # [1, D]
    noises: list[torch.Tensor]  # per styled conv (optimised ones for the layers that ran)
    image: torch.Tensor  # [1, 3, r, r] at work_res, the final latent's render
    maps: list[torch.Tensor]  # per-stage LPIPS-VGG maps [1, 1, h_s, w_s] of the final render
    loss: float  # final LPIPS


def lr_at(t: float, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """Learning rate at progress t in [0, 1]: cosine ramp-down over the last `rampdown`,
    linear warm-up over the first `rampup`."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Multi-scale autocorrelation penalty of noise maps: the squared mean of each map times
    its one-pixel shift (both axes), repeated on 2x2-averaged maps down to 8x8."""
    loss = noises[0].new_zeros(())
    for noise in noises:
        n = noise
        while True:
            loss = loss + (n * torch.roll(n, shifts=1, dims=3)).mean().pow(2)
            loss = loss + (n * torch.roll(n, shifts=1, dims=2)).mean().pow(2)
            size = n.shape[-1]
            if size <= 8:
                break
            n = n.reshape(-1, 1, size // 2, 2, size // 2, 2).mean(dim=(3, 5))
    return loss


@torch.no_grad()
def normalize_noise_(noises: list[torch.Tensor]) -> None:
    """Zero mean, unit variance per noise map, in place."""
    for n in noises:
        n.sub_(n.mean()).div_(n.std())


def project_w(
    generator: torch.nn.Module,
    target: torch.Tensor,
    lpips_vgg: torch.nn.Module,
    *,
    config: ProjectorConfig = ProjectorConfig(),
    w_mean: torch.Tensor,
    w_std: float,
    seed: int = 0,
    w_init: torch.Tensor | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> Projection:
    """Project `target` [1, 3, H, W] in [-1, 1] into W of `generator` (frozen).

    w_mean [1, D], w_std: the latent statistics (`Pack.latent_stats`); w_init overrides the
    start (default w_mean). callback(step, lpips) is called after every step.
    """
    g = generator
    device = target.device
    work = config.work_res or g.size
    if work not in g.channels:
        raise ValueError(f"work_res must be one of {sorted(g.channels)}, got {work}")
    stop_at = None if work == g.size else work
    lp_res = config.lpips_res or work
    goal = TargetLPIPS(lpips_vgg, resize_image(target, work), lp_res)
    rng = torch.Generator(device="cpu").manual_seed(int(seed))

    last = g.last_layer(stop_at)
    noises: list[torch.Tensor] = []
    opt_noises: list[torch.Tensor] = []
    for i in range(g.num_layers):
        buf = getattr(g.noises, f"noise_{i}")
        if i <= last:
            n = torch.randn(buf.shape, generator=rng).to(device).requires_grad_(True)
            opt_noises.append(n)
            noises.append(n)
        else:
            noises.append(buf)
    w = (w_init if w_init is not None else w_mean).detach().clone().to(device)
    w = w.reshape(1, -1).requires_grad_(True)
    opt = torch.optim.Adam([w, *opt_noises], lr=config.lr)

    loss_val = float("nan")
    for step in range(config.steps):
        t = step / config.steps
        for group in opt.param_groups:
            group["lr"] = lr_at(t, config.lr, config.lr_rampdown, config.lr_rampup)
        strength = w_std * config.noise_strength * max(0.0, 1.0 - t / config.noise_ramp) ** 2
        w_noisy = w + torch.randn(w.shape, generator=rng).to(device) * strength
        img = g(w_noisy, noise=noises, stop_at=stop_at)
        p_loss = goal.distance(img).sum()
        loss = p_loss + config.noise_regularize * noise_regularization(opt_noises)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        normalize_noise_(opt_noises)
        loss_val = float(p_loss.detach())
        if callback is not None:
            callback(step, loss_val)

    with torch.no_grad():
        final_noises = [n.detach() for n in noises]
        img = g(w.detach(), noise=final_noises, stop_at=stop_at)
        maps = [m.detach() for m in goal.maps(img)]
        final = float(sum(m.mean() for m in maps))
    return Projection(w=w.detach(), noises=final_noises, image=img, maps=maps, loss=final)

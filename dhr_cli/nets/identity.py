"""Identity similarity with ArcFace IR-SE50 (the fidelity metric of the paper's Table 1).

The network is facexlib's `arcface_arch.Backbone(num_layers=50, mode="ir_se")`, whose weights
(recognition_arcface_ir_se50.pth) are TreB1eN's InsightFace_Pytorch IR-SE50 model — the one
pSp/e4e/PTI/HFGI use for their identity loss and metric. It is built here on the requested
device; facexlib's `init_recognition_model` moves it to CUDA unconditionally.

What the weights expect: RGB, 112x112, pixel values scaled to [-1, 1] (mean 0.5, std 0.5), a face
aligned to the ArcFace template. (facexlib's other ArcFace, ResNetArcFace, takes 128x128
grayscale; it is a different model.) The 512-d output is L2-normalised.

Crop convention (`crop`):
- "ffhq" (default): the input is an FFHQ-aligned face at any square resolution (the frame the
  generator draws and `faces.py` aligns to). As in pSp's and the inversion papers' ID metric it is
  average-pooled to 256x256, cropped to rows 35:223 and columns 32:220 (the inner face), and
  average-pooled to 112x112.
- "arcface": the input is already aligned to the ArcFace 112 template; it is only resized to 112.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_state_strict, read_state_dict

ARCFACE_INPUT_SIZE = 112
EMBEDDING_DIM = 512
# inner-face box of an FFHQ-aligned crop at 256 px: rows 35:223, columns 32:220
FFHQ_FACE_BOX_256 = (35, 223, 32, 220)
CROPS = ("ffhq", "arcface")


class IdentityEncoder(nn.Module):
    """Frozen ArcFace IR-SE50: face crops in [-1, 1] -> unit-length 512-d embeddings."""

    def __init__(self, *, crop: str = "ffhq", device: torch.device | str | None = None) -> None:
        super().__init__()
        from facexlib.recognition.arcface_arch import Backbone

        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.crop = crop
        with torch.device(device if device is not None else "cpu"):
            self.net = Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> IdentityEncoder:
        """Always stays in eval mode (BatchNorm statistics fixed, dropout off)."""
        return super().train(False)

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """The network input [B,3,112,112] for face crops [B,3,H,W] in [-1, 1]."""
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"expected [B,3,H,W] images, got {tuple(img.shape)}")
        if self.crop == "ffhq":
            if img.shape[-2] != img.shape[-1]:
                raise ValueError(f"an FFHQ-aligned crop is square, got {tuple(img.shape[-2:])}")
            if img.shape[-1] != 256:
                img = (
                    F.adaptive_avg_pool2d(img, 256) if img.shape[-1] > 256 else _bilinear(img, 256)
                )
            top, bottom, left, right = FFHQ_FACE_BOX_256
            img = img[:, :, top:bottom, left:right]
            return F.adaptive_avg_pool2d(img, ARCFACE_INPUT_SIZE)
        if tuple(img.shape[-2:]) == (ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE):
            return img
        if img.shape[-2] > ARCFACE_INPUT_SIZE and img.shape[-1] > ARCFACE_INPUT_SIZE:
            return F.adaptive_avg_pool2d(img, ARCFACE_INPUT_SIZE)
        return _bilinear(img, ARCFACE_INPUT_SIZE)

    def embed(self, img: torch.Tensor) -> torch.Tensor:
        """L2-normalised identity embeddings [B,512]."""
        return F.normalize(self.net(self.preprocess(img)), dim=1)

    forward = embed

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine identity similarity [B] between two batches of face crops."""
        if a.shape != b.shape:
            raise ValueError(f"image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        ea, eb = self.embed(torch.cat([a, b])).chunk(2)  # one pass for both
        return cosine_similarity(ea, eb)


def cosine_similarity(ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity [B] of two embedding batches [B,D]."""
    return F.cosine_similarity(ea, eb, dim=1)


def _bilinear(img: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)


def load_identity(
    path: Path, *, crop: str = "ffhq", device: torch.device | str | None = None
) -> IdentityEncoder:
    """IdentityEncoder with facexlib's recognition_arcface_ir_se50.pth state dict."""
    path = Path(path)
    state = read_state_dict(path)
    encoder = IdentityEncoder(crop=crop, device=device)
    load_state_strict(encoder.net, state, source=path, what="an ArcFace IR-SE50 state dict")
    return encoder

"""Face parsing (BiSeNet, 19 CelebAMask-HQ classes) and DHR's parsing mask.

The network is facexlib's `BiSeNet` (the face-parsing.PyTorch model that facexlib ships as
parsing_bisenet.pth), built here directly on the requested device: facexlib's
`init_parsing_model` downloads weights and defaults to CUDA.

Preprocessing follows facexlib's parsing inference: RGB resized to 512x512, scaled to [0, 1],
normalised with ImageNet mean/std; the main (fused) output's logits are used.

In Domain-Specific Segmentation the parsing mask m_p marks as out-of-domain every pixel
where P(background) + P(cloth) + P(necklace) + P(earring) + P(hat) >= 0.5
(`in_domain_mask`), and the superpixel thresholds depend on each superpixel's majority class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_state_strict, read_state_dict

# CelebAMask-HQ label order used by face-parsing.PyTorch / facexlib's BiSeNet
CELEBAMASK_HQ_CLASSES: tuple[str, ...] = (
    "background",  # 0
    "skin",  # 1
    "l_brow",  # 2
    "r_brow",  # 3
    "l_eye",  # 4
    "r_eye",  # 5
    "eye_g",  # 6 eyeglasses
    "l_ear",  # 7
    "r_ear",  # 8
    "ear_r",  # 9 earring
    "nose",  # 10
    "mouth",  # 11
    "u_lip",  # 12
    "l_lip",  # 13
    "neck",  # 14
    "neck_l",  # 15 necklace
    "cloth",  # 16
    "hair",  # 17
    "hat",  # 18
)
# classes the generator cannot draw well; their summed probability decides out-of-domain
DHR_OUT_OF_DOMAIN_CLASSES: tuple[str, ...] = ("background", "cloth", "neck_l", "ear_r", "hat")
PARSING_INPUT_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def class_indices(
    classes: Sequence[int | str], class_names: Sequence[str] = CELEBAMASK_HQ_CLASSES
) -> list[int]:
    """Indices of `classes` (names or indices) in the class table `class_names`."""
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in class_names:
                raise ValueError(f"unknown parsing class {c!r}; known: {', '.join(class_names)}")
            out.append(list(class_names).index(c))
        else:
            if not 0 <= int(c) < len(class_names):
                raise ValueError(f"parsing class index {c} out of range 0..{len(class_names) - 1}")
            out.append(int(c))
    return out


def in_domain_mask(
    probs: torch.Tensor,
    out_of_domain: Sequence[int | str] = DHR_OUT_OF_DOMAIN_CLASSES,
    *,
    class_names: Sequence[str] = CELEBAMASK_HQ_CLASSES,
    threshold: float = 0.5,
) -> torch.Tensor:
    """DHR's parsing mask m_p from class probabilities [B,C,H,W]: [B,1,H,W] float.

    1 = in-domain, 0 = out-of-domain where the summed probability of the `out_of_domain`
    classes is >= `threshold`. A pack with its own class map passes its own names/classes.
    """
    if probs.dim() != 4 or probs.shape[1] != len(class_names):
        raise ValueError(
            f"expected [B,{len(class_names)},H,W] class probabilities, got {tuple(probs.shape)}"
        )
    idx = class_indices(out_of_domain, class_names)
    ood = probs[:, idx].sum(dim=1, keepdim=True)
    return (ood < threshold).to(probs.dtype)


class FaceParser(nn.Module):
    """Frozen BiSeNet face parser on images in [-1, 1] (any size; resized to 512 inside)."""

    def __init__(
        self,
        *,
        num_classes: int = len(CELEBAMASK_HQ_CLASSES),
        input_size: int = PARSING_INPUT_SIZE,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        from facexlib.parsing.bisenet import BiSeNet

        self.num_classes = num_classes
        self.input_size = input_size
        with torch.device(device if device is not None else "cpu"):
            self.net = BiSeNet(num_class=num_classes)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FaceParser:
        """Always stays in eval mode (BatchNorm statistics are fixed)."""
        return super().train(False)

    def logits(self, img: torch.Tensor) -> torch.Tensor:
        """Class logits [B,C,H,W] at the input's resolution."""
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"expected [B,3,H,W] images, got {tuple(img.shape)}")
        h, w = img.shape[-2:]
        s = self.input_size
        x = (img + 1) / 2
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        out = self.net(x)[0]  # fused head; the x16/x32 auxiliary heads are for training
        if (h, w) != (s, s):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def probabilities(self, img: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B,C,H,W] (softmax over classes) at the input's resolution."""
        return self.logits(img).softmax(dim=1)

    def labels(self, img: torch.Tensor) -> torch.Tensor:
        """Most likely class per pixel [B,H,W] (int64)."""
        return self.logits(img).argmax(dim=1)

    forward = probabilities


def load_parser(path: Path, *, device: torch.device | str | None = None) -> FaceParser:
    """FaceParser with facexlib's parsing_bisenet.pth state dict (torch or safetensors)."""
    path = Path(path)
    state = read_state_dict(path)
    parser = FaceParser(device=device)
    load_state_strict(
        parser.net, state, source=path, what="facexlib's BiSeNet parsing model (19 classes)"
    )
    return parser


class _DoubleConv(nn.Sequential):
    # no normalisation layers and plain ReLU: on CPU GroupNorm/BatchNorm and LeakyReLU's
    # backward cost several times the convolutions at this size
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(),
        )


class SmallParser(nn.Module):
    """A tiny U-Net face parser over a pack's own class table (the synthetic pack's 15 classes).

    Same inference API as `FaceParser` (`logits`, `probabilities`, `labels` on images in
    [-1, 1], any size; resized to `input_size` inside). `class_names` names the output
    channels, so DHR's parsing mask is
    `in_domain_mask(probs, out_of_domain=..., class_names=parser.class_names)`.
    """

    def __init__(
        self,
        num_classes: int = 15,
        *,
        width: int = 24,
        input_size: int = 64,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.width = width
        self.input_size = input_size
        self.class_names: tuple[str, ...] = tuple(
            class_names if class_names is not None else (str(i) for i in range(num_classes))
        )
        w = width
        self.enc = nn.ModuleList(
            [_DoubleConv(3, w), _DoubleConv(w, 2 * w), _DoubleConv(2 * w, 4 * w)]
        )
        self.bottleneck = _DoubleConv(4 * w, 4 * w)
        self.dec = nn.ModuleList(
            [_DoubleConv(8 * w, 2 * w), _DoubleConv(4 * w, w), _DoubleConv(2 * w, w)]
        )
        self.head = nn.Conv2d(w, num_classes, 1)

    def config(self) -> dict:
        """Constructor arguments (stored with the weights)."""
        return {
            "num_classes": self.num_classes,
            "width": self.width,
            "input_size": self.input_size,
            "class_names": list(self.class_names),
        }

    def logits(self, img: torch.Tensor) -> torch.Tensor:
        """Class logits [B,C,H,W] at the input's resolution."""
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"expected [B,3,H,W] images, got {tuple(img.shape)}")
        h, w = img.shape[-2:]
        s = self.input_size
        x = img
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.bottleneck(x)
        for block, skip in zip(self.dec, reversed(skips), strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        out = self.head(x)
        if (h, w) != (s, s):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def probabilities(self, img: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B,C,H,W] (softmax over classes) at the input's resolution."""
        return self.logits(img).softmax(dim=1)

    def labels(self, img: torch.Tensor) -> torch.Tensor:
        """Most likely class per pixel [B,H,W] (int64)."""
        return self.logits(img).argmax(dim=1)

    forward = probabilities

"""e4e encoder (Tov et al. 2021, "Designing an Encoder for StyleGAN Image Manipulation").

A plain `nn.Module`, no I/O. Parameter names follow the released Encoder4Editing
checkpoints (`input_layer`, `body.N.{shortcut_layer,res_layer}`, `styles.N.{convs,linear}`,
`latlayer1/2`) so they load by name; see `checkpoints.py`.

Architecture:
  backbone  IR-SE50 (ArcFace's improved residual units with squeeze-and-excitation):
            a 3x3 stem, then 4 stages of bottleneck units (3, 4, 14, 3 for 50 layers),
            each stage halving the resolution; taps c1 (end of stage 2, 1/4 res),
            c2 (stage 3, 1/8) and c3 (stage 4, 1/16).
  FPN       p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1) (bilinear, aligned corners).
  map2style one GradualStyleBlock per W+ row: strided 3x3 convs + leaky ReLU down to 1x1,
            then an equalized linear layer. Rows 0-2 read c3, rows 3-6 read p2, the rest p1.
  e4e       ("progressive", Encoder4Editing): row 0 gives a single w broadcast to all rows
            and every other row i adds its own offset: w+_i = w_0 + delta_i. This keeps the
            codes close to W, which is what makes them editable.
  pSp       (progressive=False, GradualStyleEncoder): each row is predicted independently.
Both add the generator's average latent (`latent_avg`) to the output, as the pSp/e4e
wrappers do: `forward` returns W+ = codes + latent_avg; `codes` returns the raw output.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import EqualLinear

__all__ = ["Encoder", "EncoderConfig"]


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of an e4e / pSp encoder.

    input_size: images are resized to input_size x input_size (256 for the released models).
    n_styles: W+ rows (18 for a 1024-px generator, 2*log2(size)-2 in general).
    stage_widths / stage_units: IR-SE backbone; (64, 128, 256, 512) x (3, 4, 14, 3) is IR-SE50.
    use_se: squeeze-and-excitation in every unit ("ir_se"); False = plain "ir".
    progressive: e4e's w0 + delta_i structure; False = pSp's independent rows.
    add_latent_avg: whether forward adds `latent_avg` (pSp's start_from_latent_avg).
    """

    input_size: int = 256
    n_styles: int = 18
    style_dim: int = 512
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)
    stage_units: tuple[int, ...] = (3, 4, 14, 3)
    use_se: bool = True
    se_reduction: int = 16
    input_nc: int = 3
    progressive: bool = True
    coarse_ind: int = 3
    middle_ind: int = 7
    add_latent_avg: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_widths", tuple(int(x) for x in self.stage_widths))
        object.__setattr__(self, "stage_units", tuple(int(x) for x in self.stage_units))
        if len(self.stage_widths) != 4 or len(self.stage_units) != 4:
            raise ValueError("the IR-SE backbone has exactly 4 stages")
        if self.input_size % 64 or self.input_size < 64:
            raise ValueError(f"input_size must be a multiple of 64, got {self.input_size}")

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "n_styles": self.n_styles,
            "style_dim": self.style_dim,
            "stage_widths": list(self.stage_widths),
            "stage_units": list(self.stage_units),
            "use_se": self.use_se,
            "se_reduction": self.se_reduction,
            "input_nc": self.input_nc,
            "progressive": self.progressive,
            "coarse_ind": self.coarse_ind,
            "middle_ind": self.middle_ind,
            "add_latent_avg": self.add_latent_avg,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, s: str) -> EncoderConfig:
        return cls.from_dict(json.loads(s))


class SEModule(nn.Module):
    """Squeeze-and-excitation: channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.adaptive_avg_pool2d(x, 1)
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(g))))
        return x * g


class BottleneckIR(nn.Module):
    """Improved residual unit: BN-conv-PReLU-conv(stride)-BN(-SE) plus a shortcut."""

    def __init__(
        self, in_channel: int, depth: int, stride: int, use_se: bool, reduction: int
    ) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if use_se:
            layers.append(SEModule(depth, reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """map2style: log2(spatial) stride-2 3x3 convs with leaky ReLU (0.01), then a linear layer."""

    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        n = max(int(math.log2(spatial)), 1)
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(in_c if i == 0 else out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] -> W+ codes [B, n_styles, style_dim].

    forward(x): codes + latent_avg (the W+ to feed the generator; images of another size
      are resized to `config.input_size` first).
    codes(x): the raw network output, before latent_avg.
    `progressive_stage` (default n_styles - 1, i.e. all rows) limits how many delta rows
    are predicted, as e4e's progressive training does.
    """

    def __init__(self, config: EncoderConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = EncoderConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either an EncoderConfig or keyword arguments, not both")
        self.config = config
        w = config.stage_widths
        self.input_layer = nn.Sequential(
            nn.Conv2d(config.input_nc, w[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.PReLU(w[0]),
        )
        units: list[nn.Module] = []
        in_c = w[0]
        for depth, n in zip(w, config.stage_units, strict=True):
            for i in range(n):
                units.append(
                    BottleneckIR(
                        in_c, depth, 2 if i == 0 else 1, config.use_se, config.se_reduction
                    )
                )
                in_c = depth
        self.body = nn.Sequential(*units)
        ends = [sum(config.stage_units[: k + 1]) - 1 for k in range(4)]
        self._taps = (ends[1], ends[2], ends[3])  # c1, c2, c3
        s3 = config.input_size // 16
        self.styles = nn.ModuleList()
        for i in range(config.n_styles):
            spatial = s3 if i < config.coarse_ind else s3 * 2 if i < config.middle_ind else s3 * 4
            self.styles.append(GradualStyleBlock(w[3], config.style_dim, spatial))
        self.latlayer1 = nn.Conv2d(w[2], w[3], 1)
        self.latlayer2 = nn.Conv2d(w[1], w[3], 1)
        self.register_buffer("latent_avg", torch.zeros(config.n_styles, config.style_dim))
        self.progressive_stage = config.n_styles - 1

    @property
    def n_styles(self) -> int:
        return self.config.n_styles

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        c1 = c2 = None
        t1, t2, _ = self._taps
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == t1:
                c1 = x
            elif i == t2:
                c2 = x
        assert c1 is not None and c2 is not None
        return c1, c2, x

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Raw codes [B, n_styles, style_dim] (before latent_avg), as Encoder4Editing returns."""
        cfg = self.config
        c1, c2, c3 = self._features(self._resize(x))
        if not cfg.progressive:
            p2 = _upsample_add(c3, self.latlayer1(c2))
            p1 = _upsample_add(p2, self.latlayer2(c1))
            feats = [
                c3 if i < cfg.coarse_ind else p2 if i < cfg.middle_ind else p1
                for i in range(cfg.n_styles)
            ]
            return torch.stack([s(f) for s, f in zip(self.styles, feats, strict=True)], dim=1)
        w0 = self.styles[0](c3)
        rows = [w0]
        feats = c3
        p2 = None
        for i in range(1, cfg.n_styles):
            if i > self.progressive_stage:
                rows.append(w0)
                continue
            if i == cfg.coarse_ind:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                feats = p2
            elif i == cfg.middle_ind:
                feats = _upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](feats))
        return torch.stack(rows, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W+ [B, n_styles, style_dim] = codes + latent_avg (if the model was trained so)."""
        c = self.codes(x)
        if self.config.add_latent_avg:
            c = c + self.latent_avg.to(c.dtype)
        return c

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.input_size
        if x.shape[-2:] == (s, s):
            return x
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

"""StyleGAN2 generator (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

A plain `nn.Module`, no I/O. Parameter and buffer names follow the widely used rosinality
PyTorch port (`style.N`, `input.input`, `conv1`, `to_rgb1`, `convs.N`, `to_rgbs.N`,
`noises.noise_N`) so official checkpoints load by name; see `checkpoints.py` for the
file formats.

Architecture (config-f, "skip" generator):
  mapping  z -> PixelNorm -> n_mlp x (equalized linear, lr_mul, leaky ReLU * sqrt 2) -> w
  synthesis: a learned 4x4 constant, then per resolution r = 8 .. size an upsampling
  modulated 3x3 conv and a plain modulated 3x3 conv (weight demodulation, per-pixel noise,
  bias, leaky ReLU * sqrt 2), and a modulated 1x1 "tRGB" whose output is added to the
  upsampled RGB image of the previous resolution. The image is valid (a low-resolution
  render) after every block, which `forward(stop_at=...)` exposes.

Feature-layer convention (used by DHR's feature modulation, Eq. 4 of Cao et al.)
--------------------------------------------------------------------------------
Synthesis has `num_layers = 2*log2(size) - 3` styled convs, numbered like their W+ rows
and noise buffers: conv 0 is `conv1` (4x4), conv k >= 1 is `convs[k-1]`; conv k consumes
`w_plus[:, k]` and `noises.noise_k`. **Feature layer l is the tensor entering conv l**:

  l = 0             the 4x4 constant input
  l odd (2j+1)      the output of the block at resolution 4*2**j (what its tRGB also saw)
  l even (2j, j>0)  the output of the upsampling conv of the block at resolution 4*2**j

so `layer_resolution(l) = 4 * 2**(l // 2)` and `layer_channels(l) = channels[that res]`.
This is the index of the official DHR code (`feature_idx`); its default, 11, is the output
of the 128x128 block of a 1024-px generator ([1, 256, 128, 128] for FFHQ config-f). When a
block output (odd l) is replaced, that block's own tRGB keeps the unmodified feature (as in
the official code); every later layer sees the modulated one.

Speed on CPU: no custom kernels, only standard torch ops. Per layer, modulation and
demodulation are either folded into the conv weight (batch 1 with feature maps larger than
the weight: one ordinary conv) or applied to the activations around one conv with the
shared weight (small maps, or batches: no grouped conv). Upsampling is the paper's fused
transposed conv (stride 2) followed by a depthwise 4x4 blur (with a hand-written backward:
oneDNN's depthwise backward is ~10x slower than its forward); the RGB skip is upsampled by
one depthwise transposed conv with the FIR kernel. On CPU, activations are channels-last
and conv weights are stored with channels-last strides (oneDNN's layout, no reorders);
the sqrt(2) activation gain and the bias are folded into the conv. See
benchmarks/generator_speed.py for the measured effect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EqualLinear",
    "Generator",
    "GeneratorConfig",
    "ModulatedConv2d",
    "config_f_channels",
    "hybrid_feature",
    "parameter_resolution",
]

SQRT2 = math.sqrt(2.0)


def config_f_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Channel table of the official config-f generators (FFHQ 1024: 512 ... 32)."""
    base = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {r: c for r, c in base.items() if r <= size}


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to build a `Generator` (weights aside).

    channels: resolution -> feature channels, for 4, 8, ..., size.
    lr_mlp: learning-rate multiplier of the mapping layers (0.01 in the official models);
      it scales the stored weights at run time, so it must match the checkpoint.
    blur_kernel: 1-D FIR taps for up-sampling (the official [1, 3, 3, 1]); the actual
      2-D kernels are buffers, so loaded checkpoints bring their own.
    conv_clamp: clamp pre-activations to +-conv_clamp (stylegan2-ada trained models); None = off.
    """

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channels: dict[int, int] = field(default_factory=dict)
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    conv_clamp: float | None = None

    def __post_init__(self) -> None:
        if self.size < 4 or self.size & (self.size - 1):
            raise ValueError(f"generator size must be a power of two >= 4, got {self.size}")
        if not self.channels:
            object.__setattr__(self, "channels", config_f_channels(self.size))
        chans = {int(k): int(v) for k, v in self.channels.items()}
        missing = [r for r in resolutions(self.size) if r not in chans]
        if missing:
            raise ValueError(f"channel table lacks resolutions {missing}")
        object.__setattr__(self, "channels", chans)
        object.__setattr__(self, "blur_kernel", tuple(self.blur_kernel))

    @classmethod
    def config_f(cls, size: int = 1024, channel_multiplier: int = 2, **kw) -> GeneratorConfig:
        """The official FFHQ-style config-f (style_dim 512, n_mlp 8, lr_mlp 0.01)."""
        return cls(size=size, channels=config_f_channels(size, channel_multiplier), **kw)

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channels": {str(k): v for k, v in sorted(self.channels.items())},
            "lr_mlp": self.lr_mlp,
            "blur_kernel": list(self.blur_kernel),
            "conv_clamp": self.conv_clamp,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        return cls(
            size=int(d["size"]),
            style_dim=int(d["style_dim"]),
            n_mlp=int(d["n_mlp"]),
            channels={int(k): int(v) for k, v in d["channels"].items()},
            lr_mlp=float(d.get("lr_mlp", 0.01)),
            blur_kernel=tuple(int(x) for x in d.get("blur_kernel", (1, 3, 3, 1))),
            conv_clamp=None if d.get("conv_clamp") is None else float(d["conv_clamp"]),
        )

    @classmethod
    def from_json(cls, s: str) -> GeneratorConfig:
        return cls.from_dict(json.loads(s))


def resolutions(size: int) -> list[int]:
    """The generator's block resolutions 4, 8, ..., size."""
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


def conv_resolution(conv: int) -> int:
    """Output size of styled conv `conv` (conv1 is 0, convs.k is k + 1)."""
    return 4 * 2 ** ((conv + 1) // 2)


def parameter_resolution(name: str) -> int | None:
    """The resolution (px) of the synthesis block a generator parameter belongs to, from its
    name ("convs.4.conv.weight" -> 32; a tRGB follows its block's second conv); None for the
    mapping network's."""
    head, _, rest = name.partition(".")
    if head in ("input", "conv1", "to_rgb1"):
        return 4
    if head in ("convs", "to_rgbs"):
        k = int(rest.split(".", 1)[0])
        return conv_resolution(k + 1 if head == "convs" else 2 * k + 2)
    return None


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Normalised 2-D FIR kernel (outer product of 1-D taps, sum 1)."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


# ---------------------------------------------------------------- building blocks


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit second moment (input of the mapping MLP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: weights stored N(0,1)/lr_mul, scaled at run time."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return F.leaky_relu(out + self.bias * self.lr_mul, 0.2) * SQRT2
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class _DepthwiseFIR(torch.autograd.Function):
    """Depthwise FIR filter (true convolution) with a fast backward.

    oneDNN's depthwise-conv backward is an order of magnitude slower than its forward on
    CPU; the input gradient of a depthwise filter is itself a depthwise filter (with the
    kernel flipped back and the padding mirrored), so the backward reuses the forward
    kernel. Written with differentiable ops, so double backward still works.
    """

    @staticmethod
    def forward(ctx, x, kernel, bias, pad0: int, pad1: int):  # type: ignore[override]
        ctx.save_for_backward(kernel)
        ctx.pads = (pad0, pad1)
        ctx.has_bias = bias is not None
        return _fir(x, kernel.flip(0, 1), bias, pad0, pad1)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (kernel,) = ctx.saved_tensors
        k = kernel.shape[0]
        p0, p1 = ctx.pads
        gx = _fir(grad, kernel, None, k - 1 - p0, k - 1 - p1) if ctx.needs_input_grad[0] else None
        gb = grad.sum(dim=(0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, None, gb, None, None


def _fir(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None, p0: int, p1: int
) -> torch.Tensor:
    """Depthwise correlation of x with a 2-D kernel, padding (p0, p1) on both axes."""
    c = x.shape[1]
    w = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    if p0 == p1:
        return F.conv2d(x, w, bias, padding=p0, groups=c)
    return F.conv2d(F.pad(x, (p0, p1, p0, p1)), w, bias, groups=c)


class Blur(nn.Module):
    """FIR low-pass after the transposed conv: a depthwise conv with the 4x4 kernel.

    Kernels are true convolutions (flipped), as in the reference upfirdn2d; the buffer is
    part of the checkpoint, so any kernel a file brings is honoured. An optional per-channel
    bias rides along for free.
    """

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return _DepthwiseFIR.apply(x, self.kernel.to(x.dtype), bias, *self.pad)


class Upsample(nn.Module):
    """2x FIR up-sampling of the RGB skip branch as one depthwise transposed conv.

    The reference (zero-insertion, padding (pad0, pad1), convolution with `kernel`, which
    carries the gain 4) equals the full transposed conv with `kernel` cropped to start at
    k - 1 - pad0: out[o] = sum_i x[i] * kernel[o + k - 1 - pad0 - 2i] (k=4: padding 1).
    """

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * factor**2)
        self.factor = factor
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        k, f = self.kernel.shape[0], self.factor
        weight = self.kernel.to(x.dtype).expand(c, 1, k, k)
        start = k - 1 - self.pad[0]  # >= 0 and the crop keeps h * f rows: pad0 >= f - 1
        if 2 * start == (h - 1) * f + k - h * f:  # symmetric crop: the conv's own padding
            return F.conv_transpose2d(x, weight, stride=f, padding=start, groups=c)
        out = F.conv_transpose2d(x, weight, stride=f, groups=c)
        return out[..., start : start + h * f, start : start + w * f]


def _channels_last_param(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """Same values, strides chosen so the conv sees a channels-last kernel without a copy.

    weight is [1, out, in, k, k]; oneDNN wants weight[0] (conv) or weight[0].transpose(0, 1)
    (transposed conv) in channels-last order. Loading a state dict copies into these
    strides, so checkpoints are unaffected.
    """
    inner = (0, 1, 3, 4, 2) if not transposed else (0, 2, 3, 4, 1)  # memory order of dims
    base = weight.permute(*inner).contiguous()
    return base.permute(*[inner.index(i) for i in range(5)])


class ModulatedConv2d(nn.Module):
    """Modulated (and demodulated) convolution, optionally with 2x up-sampling.

    weight' = scale * weight * s (s = affine(w) per input channel); with demodulation each
    output filter is rescaled to unit norm. For batch 1 with a feature map larger than the
    weight, s and the demodulation are folded into the weight (one ordinary conv);
    otherwise the activations are scaled before and after one conv with the shared weight.
    `gain` and `bias` fold the following per-channel affine step into the conv (free).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(
                blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=2
            )
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            _channels_last_param(
                torch.randn(1, out_channel, in_channel, kernel_size, kernel_size), upsample
            )
        )
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        *,
        gain: float = 1.0,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """conv(x, modulated weight) * gain + bias; x [B, in, H, W], w [B, style_dim]."""
        batch = x.shape[0]
        s = self.modulation(w) * self.scale  # [B, in]; the equalized-lr scale rides on s
        weight = self.weight.squeeze(0)  # [out, in, k, k]; squeeze: a view also in backward
        if self.demodulate:
            # |weight * s|^2 summed per output filter = s^2 @ (sum_k weight^2)^T
            wsq = (weight * weight).sum(dim=(2, 3))
            d = torch.rsqrt((s * s) @ wsq.t() + 1e-8) * gain
        else:
            d = s.new_full((batch, self.out_channel), gain)
        if bias is not None:
            bias = bias.to(x.dtype)
        if batch == 1 and 2 * x.numel() > weight.numel():
            # fold s and d into the weight: one plain conv, the per-pixel work stays minimal
            wt = weight * (d.view(-1, 1, 1, 1) * s.view(1, -1, 1, 1))
            return self._conv(x, wt.to(x.dtype), bias)
        # modulate activations instead (small feature maps, or batches: shared weight)
        out = self._conv(x * s.view(batch, -1, 1, 1).to(x.dtype), weight.to(x.dtype), None)
        d = d.view(batch, -1, 1, 1).to(out.dtype)
        return out * d if bias is None else torch.addcmul(bias.view(1, -1, 1, 1), out, d)

    def _conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            return self.blur(out, bias)
        return F.conv2d(x, weight, bias, padding=self.padding)


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by a learned strength."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None, gain: float = 1.0
    ) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        # scale the 1-channel map first: one full-size pass instead of two
        return x + (self.weight * gain).to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU (slope 0.2) and the sqrt(2) gain that keeps variance."""

    def __init__(self, channels: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lrelu_clamp(F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * SQRT2, self.clamp)


def _lrelu_clamp(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    return x if clamp is None else x.clamp(-clamp, clamp)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (x sqrt 2).

    Since leaky ReLU is positively homogeneous, lrelu(y + n + b) * sqrt2 equals
    lrelu(sqrt2*y + sqrt2*n + sqrt2*b): the gain and bias fold into the conv, leaving
    two full-size element-wise passes (noise add, activation) instead of four.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        style_dim: int,
        *,
        upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, 3, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel, clamp=conv_clamp)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(x, w, gain=SQRT2, bias=self.activate.bias * SQRT2)
        out = self.noise(out, noise, gain=SQRT2)
        return _lrelu_clamp(F.leaky_relu(out, 0.2), self.activate.clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) plus the up-sampled previous image."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        *,
        upsample: bool = True,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.conv_clamp = conv_clamp

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = _lrelu_clamp(self.conv(x, w, bias=self.bias.view(3)), self.conv_clamp)
        if skip is not None:
            out = out + self.upsample(skip).to(out.dtype)
        return out


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def hybrid_feature(f_l: torch.Tensor, f: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """DHR feature modulation, Eq. 4: f' = f_l * m + f * (1 - m).

    f_l: the generator's own feature [B, C, h, w]; f: the refined feature (same shape, or
    batch 1); mask: [B or 1, 1, H, W], 1 = in-domain, average-pooled to h x w. With no
    mask the refined feature replaces f_l everywhere.
    """
    if f.shape[-3:] != f_l.shape[-3:]:
        raise ValueError(f"feature shape {tuple(f.shape)} does not match layer {tuple(f_l.shape)}")
    f = f.to(f_l.dtype)
    if mask is None:
        return f.expand_as(f_l) if f.shape[0] != f_l.shape[0] else f
    m = mask.to(f_l.dtype)
    if m.ndim == 3:
        m = m.unsqueeze(1)
    if m.shape[-2:] != f_l.shape[-2:]:
        m = F.adaptive_avg_pool2d(m, f_l.shape[-2:])
    return f_l * m + f * (1 - m)


# ---------------------------------------------------------------- generator


class Generator(nn.Module):
    """StyleGAN2 generator with DHR's feature-modulation and early-exit hooks.

    Attributes: `size` (output px), `style_dim`, `n_latent` (W+ rows = 2*log2(size)-2),
    `num_layers` (styled convs = n_latent-1), `channels` (resolution -> channels),
    `latent_avg` (buffer [style_dim]: mean w, the truncation centre; loaders fill it).

    Main calls:
      mapping(z [B, style_dim]) -> w [B, style_dim]
      mean_latent(n) -> [1, style_dim]
      truncate(w, psi) -> latent_avg + psi * (w - latent_avg)
      forward(w_plus [B, n_latent, style_dim] or w [B, style_dim], ...) -> image [B, 3, S, S]
      feature_at(w_plus, layer) -> f_l (the feature DHR refines; see layer_shape(layer))
    See the module docstring for the feature-layer numbering.
    """

    def __init__(self, config: GeneratorConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = GeneratorConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a GeneratorConfig or keyword arguments, not both")
        self.config = config
        self.size = config.size
        self.style_dim = config.style_dim
        self.channels = dict(config.channels)
        self.log_size = int(math.log2(config.size))
        self.n_latent = self.log_size * 2 - 2
        self.num_layers = self.n_latent - 1
        blur, clamp, ch = config.blur_kernel, config.conv_clamp, self.channels

        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(
                    config.style_dim, config.style_dim, lr_mul=config.lr_mlp, activation=True
                )
                for _ in range(config.n_mlp)
            ],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], config.style_dim, blur_kernel=blur, conv_clamp=clamp)
        self.to_rgb1 = ToRGB(
            ch[4], config.style_dim, upsample=False, blur_kernel=blur, conv_clamp=clamp
        )
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            r = self.conv_resolution(layer)
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, r, r))
        in_ch = ch[4]
        for r in resolutions(config.size)[1:]:
            out_ch = ch[r]
            self.convs.append(
                StyledConv(
                    in_ch,
                    out_ch,
                    config.style_dim,
                    upsample=True,
                    blur_kernel=blur,
                    conv_clamp=clamp,
                )
            )
            self.convs.append(
                StyledConv(out_ch, out_ch, config.style_dim, blur_kernel=blur, conv_clamp=clamp)
            )
            self.to_rgbs.append(ToRGB(out_ch, config.style_dim, blur_kernel=blur, conv_clamp=clamp))
            in_ch = out_ch
        self.register_buffer("latent_avg", torch.zeros(config.style_dim))
        # None = channels-last activations on CPU (oneDNN's fast layout), NCHW elsewhere
        self.channels_last: bool | None = None

    # ------------------------------------------------------------ latent space

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, style_dim] -> w [B, style_dim] through PixelNorm and the MLP."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, *, seed: int | None = 0) -> torch.Tensor:
        """Mean of mapping(z) over n standard-normal z (deterministic for a given seed)."""
        device = self.input.input.device
        gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.style_dim, generator=gen, device=device)
        return self.mapping(z).mean(0, keepdim=True)

    def truncate(
        self, w: torch.Tensor, psi: float, center: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Truncation trick: center + psi * (w - center); center defaults to `latent_avg`."""
        c = self.latent_avg if center is None else center
        return c + psi * (w - c)

    def as_wplus(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, style_dim] (W) or [B, n_latent, style_dim] (W+) -> W+."""
        if latent.ndim == 2:
            return latent.unsqueeze(1).expand(-1, self.n_latent, -1)
        if latent.ndim != 3 or latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"expected W [B, {self.style_dim}] or W+ [B, {self.n_latent}, {self.style_dim}], "
                f"got {tuple(latent.shape)}"
            )
        return latent

    # ------------------------------------------------------------ layer indexing

    def layer_resolution(self, layer: int) -> int:
        """Spatial size of feature layer `layer` (the input of styled conv `layer`)."""
        self._check_layer(layer)
        return 4 * 2 ** (layer // 2)

    def conv_resolution(self, conv: int) -> int:
        """Output size of styled conv `conv` (= size of its noise buffer)."""
        return conv_resolution(conv)

    def layer_channels(self, layer: int) -> int:
        """Channels of feature layer `layer`."""
        return self.channels[self.layer_resolution(layer)]

    def layer_shape(self, layer: int, batch: int = 1) -> tuple[int, int, int, int]:
        r = self.layer_resolution(layer)
        return (batch, self.channels[r], r, r)

    def block_output_layer(self, resolution: int) -> int:
        """Feature layer holding the output of the block at `resolution` (< size)."""
        if resolution not in self.channels or resolution >= self.size:
            raise ValueError(
                f"no feature layer after the {resolution}px block of a {self.size}px generator"
            )
        return 2 * int(math.log2(resolution // 4)) + 1

    def last_layer(self, stop_at: int | None = None) -> int:
        """Index of the last styled conv executed when synthesis stops at `stop_at` px."""
        if stop_at is None:
            return self.num_layers - 1
        return 2 * int(math.log2(stop_at // 4))

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"feature layer must be in 0..{self.num_layers - 1}, got {layer}")

    # ------------------------------------------------------------ synthesis

    def forward(
        self,
        latent: torch.Tensor,
        *,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = False,
        stop_at: int | None = None,
        feature_layer: int | None = None,
        feature: torch.Tensor | None = None,
        feature_mask: torch.Tensor | None = None,
        return_feature: bool = False,
        resume: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Synthesise images [B, 3, r, r] (unclamped, [-1, 1] scale) from W or W+.

        latent: W+ [B, n_latent, style_dim] or W [B, style_dim] (broadcast to all rows).
        noise: one tensor per styled conv (overrides the rest); else `randomize_noise`
          draws fresh noise; by default the stored `noises.noise_*` buffers are used.
        stop_at: resolution (4, 8, ..., size) at which to stop and return the RGB skip
          image accumulated so far (r = stop_at); default: full size.
        feature_layer: feature layer index (module docstring); required when `feature` or
          `return_feature` is given (DHR's is a pack setting, e.g. 11 = the 128x128 block
          output at 1024 px).
        feature, feature_mask: DHR Eq. 4 — the layer's feature f_l becomes
          f_l * m + feature * (1 - m), m = mask average-pooled to the layer size (1 =
          in-domain); no mask = replace. Differentiable w.r.t. `feature` and the weights.
        return_feature: also return f_l, the generator's own (unmodulated) feature.
        resume: (f_l, skip) from `prefix(latent, feature_layer)`: start synthesis at the
          feature layer (a block output, odd l) instead of recomputing the layers before it
          (they depend on nothing an optimiser of the feature changes).
        Returns the image, or (image, f_l) when return_feature.
        """
        w = self.as_wplus(latent)
        batch = w.shape[0]
        if stop_at is not None and (stop_at not in self.channels):
            raise ValueError(f"stop_at must be one of {sorted(self.channels)}, got {stop_at}")
        use_layer = feature is not None or return_feature
        layer = -1
        if use_layer:
            if feature_layer is None:
                raise ValueError("a feature or return_feature needs feature_layer")
            layer = int(feature_layer)
            self._check_layer(layer)
            if layer > self.last_layer(stop_at):
                raise ValueError(f"feature layer {layer} lies beyond stop_at={stop_at}")
        noises = self._noise_list(noise, randomize_noise)
        captured: list[torch.Tensor] = []

        def visit(idx: int, x: torch.Tensor) -> torch.Tensor:
            if idx != layer:
                return x
            if return_feature:
                captured.append(x)
            return hybrid_feature(x, feature, feature_mask) if feature is not None else x

        if resume is not None:
            if layer < 1 or layer % 2 == 0:
                raise ValueError("resume needs a block-output feature layer (odd)")
            first = (layer - 1) // 2
            x, skip = resume
            res, i = 4 * 2**first, layer
        else:
            first = 0
            x = visit(0, self.input(batch).contiguous(memory_format=self._memory_format()))
            x = self.conv1(x, w[:, 0], noises[0])
            skip = self.to_rgb1(x, w[:, 1])
            res, i = 4, 1
        for j, rgb in enumerate(self.to_rgbs):
            if j < first:
                continue
            if stop_at is not None and res >= stop_at:
                break
            x = self.convs[2 * j](visit(i, x), w[:, i], noises[i])
            x = self.convs[2 * j + 1](visit(i + 1, x), w[:, i + 1], noises[i + 1])
            skip = rgb(x, w[:, i + 2], skip)
            res, i = res * 2, i + 2
        skip = skip.contiguous()
        if skip.dtype != torch.float32 and _autocast_on(skip.device.type):
            skip = skip.float()  # under bf16 autocast the image itself stays float32
        return (skip, captured[0]) if return_feature else skip

    @torch.no_grad()
    def prefix(
        self,
        latent: torch.Tensor,
        layer: int,
        *,
        noise: Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_l, skip): the feature at block-output layer `layer` (odd) and the RGB skip image
        accumulated up to it, for `forward(..., resume=...)`."""
        layer = int(layer)
        self._check_layer(layer)
        if layer % 2 == 0:
            raise ValueError("prefix needs a block-output feature layer (odd)")
        w = self.as_wplus(latent)
        noises = self._noise_list(noise, False)
        x = self.input(w.shape[0]).contiguous(memory_format=self._memory_format())
        x = self.conv1(x, w[:, 0], noises[0])
        skip = self.to_rgb1(x, w[:, 1])
        i = 1
        for j in range((layer - 1) // 2):
            x = self.convs[2 * j](x, w[:, i], noises[i])
            x = self.convs[2 * j + 1](x, w[:, i + 1], noises[i + 1])
            skip = self.to_rgbs[j](x, w[:, i + 2], skip)
            i += 2
        return x, skip

    def feature_at(
        self,
        latent: torch.Tensor,
        layer: int,
        *,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = False,
    ) -> torch.Tensor:
        """f_l alone: runs only the styled convs before feature layer `layer`; equals the
        feature `forward(..., return_feature=True)` returns, without rendering (a cheap way to
        initialise DHR's refined feature)."""
        w = self.as_wplus(latent)
        layer = int(layer)
        self._check_layer(layer)
        noises = self._noise_list(noise, randomize_noise)
        x = self.input(w.shape[0]).contiguous(memory_format=self._memory_format())
        convs = [self.conv1, *self.convs]
        for i in range(layer):
            x = convs[i](x, w[:, i], noises[i])
        return x

    def _memory_format(self) -> torch.memory_format:
        cl = self.channels_last
        if cl is None:
            cl = self.input.input.device.type == "cpu"
        return torch.channels_last if cl else torch.contiguous_format

    def _noise_list(
        self, noise: Sequence[torch.Tensor | None] | None, randomize: bool
    ) -> list[torch.Tensor | None]:
        if noise is not None:
            if len(noise) != self.num_layers:
                raise ValueError(f"expected {self.num_layers} noise tensors, got {len(noise)}")
            return list(noise)
        if randomize:
            return [None] * self.num_layers
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self, *, seed: int | None = None) -> list[torch.Tensor]:
        """Fresh per-layer noise maps [1, 1, r, r] (e.g. to replace the stored buffers)."""
        device = self.input.input.device
        gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        out = []
        for i in range(self.num_layers):
            r = self.conv_resolution(i)
            out.append(torch.randn(1, 1, r, r, generator=gen, device=device))
        return out

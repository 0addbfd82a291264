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

from .stylegan2 import parameter_resolution

__all__ = [
    "apply_delta",
    "compute_delta",
    "delta_bits",
    "delta_nbytes",
    "dequantize",
    "quantize",
    "quantized_roundtrip",
    "restore",
    "snapshot",
]


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


# ------------------------------------------------------------------ quantised storage
#
# A project stores a 1024-px generator's delta (28 M values) as signed `bits`-bit integers in
# groups of `group` consecutive values (row-major), each group with one scale 2^(e / steps),
# e an int8 (SCALE_STEPS = 4: quarter octaves; files from before it have steps = 1, powers of
# two). Quarter octaves waste less of the integer range than powers of two (on average 9%
# instead of 44% of the step), which at 4 bits lowers the render error of a 1024-px project
# by a quarter for one byte per group. The scales are exact float32 values (a power of two
# times one of `steps` constants) and the largest code of a group stays within a quarter octave
# of qmax, so quantising dequantised values again gives them back bit for bit: the refinement
# can hand out the stored values and the file reproduces them exactly. 4-bit values are packed
# two to a byte.

SCALE_STEPS = 4
INT_BITS = {"int4": 4, "int8": 8}
SMALL_DELTA = 65536  # values: a tensor this small costs next to nothing in 8 bits


def delta_bits(name: str, numel: int, dtype: str, int8_from: int | None = None) -> int | None:
    """The bits a generator parameter's delta (`numel` values) is stored with: 4 or 8 for
    `dtype` "int4"/"int8", None for float dtypes.

    With "int4" and `int8_from`, these keep 8 bits:
    - the layers at `int8_from` px and above (at 256 px: 4% of a 1024-px generator's values,
      which at 4 bits cause most of the render error);
    - the modulation weights one octave below (each scales a whole input channel) and small
      tensors (biases, noise strengths, the constant input): on two 1024-px refinements they
      add 0.27 MB to 15.1 MB and lower the mean render error from 0.185 to 0.170 and from
      0.251 to 0.191 grey levels.
    """
    bits = INT_BITS.get(dtype)
    if bits != 4 or int8_from is None:
        return bits
    res = parameter_resolution(name)
    if numel <= SMALL_DELTA or res is None or res >= int8_from:
        return 8
    if ".modulation." in name and res >= int8_from // 2:
        return 8
    return 4


def _qmax(bits: int) -> int:
    if bits not in (4, 8):
        raise ValueError(f"delta bits must be 4 or 8, got {bits}")
    return 2 ** (bits - 1) - 1


def _scales(e: torch.Tensor, steps: int) -> torch.Tensor:
    """2^(e / steps) as exact float32 values, the same on every device."""
    mantissas = torch.tensor([2 ** (i / steps) for i in range(steps)], dtype=torch.float32)
    e = e.to(torch.int64)
    return torch.ldexp(mantissas[e % steps], torch.div(e, steps, rounding_mode="floor").float())


def quantize(
    t: torch.Tensor, bits: int, group: int, steps: int = SCALE_STEPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 [ceil(n * bits / 8)], exponents int8 [n_groups]) of tensor `t`: every
    group of `group` values (flattened, zero-padded) as round(x / s) with the smallest scale
    s = 2^(e / steps) such that |x| / s <= 2^(bits-1) - 1 (up to a rounding tolerance)."""
    qmax = _qmax(bits)
    x = t.detach().to("cpu", torch.float32).reshape(-1)
    n = x.numel()
    n_groups = max(1, -(-n // group))
    pad = n_groups * group - n
    xg = torch.nn.functional.pad(x, (0, pad)).reshape(n_groups, group)
    amax = xg.abs().amax(dim=1).to(torch.float64)
    nonzero = amax > 0
    ratio = torch.where(nonzero, amax / qmax, torch.ones_like(amax))
    # the tolerance keeps a dequantised group's exponent: its largest value is qmax * s up to
    # float rounding, whose log may land a hair above e
    e = torch.ceil(steps * torch.log2(ratio) - 1e-5)
    e = torch.where(nonzero, e, torch.full_like(e, -127.0)).clamp(-127, 127).to(torch.int8)
    s = _scales(e, steps)
    q = torch.round(xg / s[:, None]).clamp(-qmax, qmax).to(torch.int16)
    q = q.reshape(-1)[:n]
    if bits == 8:
        codes = q.to(torch.int8).view(torch.uint8)
    else:
        u = (q + 8).to(torch.uint8)  # 1..15, two to a byte
        if u.numel() % 2:
            u = torch.cat([u, u.new_full((1,), 8)])
        codes = u[0::2] | (u[1::2] << 4)
    return codes.contiguous(), e.contiguous()


def dequantize(
    codes: torch.Tensor,
    exponents: torch.Tensor,
    shape: tuple[int, ...] | torch.Size,
    bits: int,
    group: int,
    steps: int = SCALE_STEPS,
) -> torch.Tensor:
    """The float32 tensor of `shape` that `quantize` encoded (with the same `steps`)."""
    _qmax(bits)
    n = 1
    for s in shape:
        n *= int(s)
    if bits == 8:
        q = codes.view(torch.int8).to(torch.float32)
    else:
        lo = (codes & 0x0F).to(torch.int16) - 8
        hi = (codes >> 4).to(torch.int16) - 8
        q = torch.stack([lo, hi], dim=1).reshape(-1).to(torch.float32)
    n_groups = exponents.numel()
    q = torch.nn.functional.pad(q[:n], (0, n_groups * group - n)).reshape(n_groups, group)
    x = q * _scales(exponents, steps)[:, None]
    return x.reshape(-1)[:n].reshape(tuple(shape)).contiguous()


def quantized_roundtrip(t: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """What `t` becomes when stored with `quantize` and read back (float32)."""
    codes, e = quantize(t, bits, group)
    return dequantize(codes, e, t.shape, bits, group)

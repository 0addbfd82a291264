"""`dhr invert` and `dhr mask` on files: photo in, project file and images out.

`invert_photo` aligns every face asked for, inverts each with the `Engine`, writes one project
per face (`build_project`, keeping an earlier project's history and reusing its mask and
alignment) and the reconstruction pasted back into the photo. `mask_photo` computes (or, with
`import_mask`, takes a hand-painted) in-domain mask and stores it in the project. Names are
`app/naming.py`'s; every file is written atomically.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import binary_erosion

from .. import console
from ..errors import BadData, InputMissing, not_found
from ..faces import AlignedFace, Photo, load_image, paste_faces, save_image
from ..files import ensure_folder
from ..method.render import to_uint8
from ..method.segment import Segmentation
from ..project import SUFFIX, Project, locked
from .engine import Engine, FaceResult, store_result
from .naming import Outputs, output_paths, recon_extension

__all__ = ["build_project", "import_mask", "invert_photo", "mask_photo", "project_source"]

MASK_OVERLAY_COLOR = (255, 40, 40)


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The crop with the out-of-domain pixels (mask < 0.5) tinted red and the boundary dark."""
    m = np.asarray(mask, dtype=np.float32) >= 0.5
    out = rgb.astype(np.float32).copy()
    ood = ~m
    out[ood] = out[ood] * (1 - alpha) + np.array(MASK_OVERLAY_COLOR, np.float32) * alpha
    edge = ood & ~binary_erosion(ood, border_value=1)
    out[edge] = out[edge] * 0.3
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _load_existing(path: Path, photo_path: Path, pack: str) -> Project | None:
    """The project at `path` if it belongs to this photo and pack (else None, with a note)."""
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
    f = engine.options.faces
    written: dict[str, str] = {}
    ensure_folder(outs.recon)
    crops = [to_uint8(r.recon) for r in results]
    if not f.paste:
        image = crops[0]
    else:
        placed = [(crop, r.aligned, None) for r, crop in zip(results, crops, strict=True)]
        image = paste_faces(photo, placed, blend_radius=f.blend_radius)
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


def invert_photo(
    engine: Engine,
    photo_path: Path,
    *,
    output: Path | None = None,
    many: bool = False,
    skip_existing: bool = False,
) -> dict[str, Any]:
    """`dhr invert` for one photo (or a project file: its photo, into that project): returns a
    JSON-able record of what was written."""
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
    done = skip_existing and outs.project.exists() and outs.recon.exists()
    if done and Project.load(outs.project).refined:
        return {"input": str(photo_path), "skipped": True, "project": str(outs.project)}
    ensure_folder(outs.project)
    # the photo's projects are read, refined and written under its lock: a concurrent
    # `dhr edit --save` or `dhr invert` of the same photo waits instead of losing an update
    with locked(outs.project):
        existing = _load_existing(outs.project, photo_path, engine.pack.name)
        quad = None
        if (
            existing is not None
            and existing.quad is not None
            and not engine.options.faces.all_faces
        ):
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
            r = engine.invert_face(aligned, mask=mask, mask_source=source)
            project = build_project(engine, photo_path, r, base)
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
) -> dict[str, Any]:
    """`dhr mask` for a photo or a project file: compute (or import) the mask, store it in the
    project (created with the encoder's W+ when there is none yet), write the overlay."""
    target = Path(target)
    if not target.exists():
        raise not_found(target)
    written = (
        target
        if target.suffix == SUFFIX
        else output_paths(target, output, many=many, fmt_ext=".png").project
    )
    ensure_folder(written)
    with locked(written):  # read, masked and written under the photo's lock (see invert_photo)
        return _mask_locked(engine, target, output, many, from_mask, skip_existing)


def _mask_locked(
    engine: Engine,
    target: Path,
    output: Path | None,
    many: bool,
    from_mask: Path | None,
    skip_existing: bool,
) -> dict[str, Any]:
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
        with engine.stage("segment", engine.segment_config().projector.steps, "lpips") as cb:
            seg = engine.segment(crop, rgb, callback=cb)
        mask = seg.mask
        params = mask_params(engine, seg)
    elapsed = time.perf_counter() - t0
    if existing is None:
        project = _project_for(engine, photo_path, aligned, None)
        project.wplus = engine.embed(crop).to("cpu", torch.float32)
    else:
        project = _project_for(engine, photo_path, None, existing)
        _drop_stale_refinement(project, mask)
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
    old = project.mask
    uses_mask = project.refined and project.recipe.feature_mask == "in_domain"
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


def _project_for(
    engine: Engine, photo_path: Path, aligned: AlignedFace | None, base: Project | None
) -> Project:
    """The project to fill: `base` (an earlier one, keeping its history) or a new one for the
    photo, with the pack, its models and the alignment (when `aligned` is given)."""
    p = Project.for_photo(photo_path, pack=engine.pack.name) if base is None else base
    p.pack = engine.pack.name
    p.models = {**p.models, **engine.pack.models_used}
    if aligned is not None:
        rec = aligned.record()
        p.quad = torch.from_numpy(rec["quad"])
        p.crop_to_photo = torch.from_numpy(rec["crop_to_photo"])
    return p


def build_project(
    engine: Engine, photo_path: Path, result: FaceResult, base: Project | None = None
) -> Project:
    """The project file content for one inverted face (keeps an earlier project's history)."""
    p = _project_for(engine, photo_path, result.aligned, base)
    store_result(p, result)
    if result.segmentation is not None:
        p.record_step("mask", mask_params(engine, result.segmentation))
    ref = result.refinement
    recipe = replace(
        ref.recipe(),
        crop_size=int(result.aligned.size),
        identity_alignment=bool(result.aligned.identity),
    )
    params = {
        **engine.refine_config().params(),
        **recipe.to_params(),
        "pack": engine.pack.name,
        "mask_source": result.mask_source,
        "metrics": result.metrics,
        "times": {k: round(v, 3) for k, v in result.times.items()},
        "losses": ref.losses,
    }
    p.record_step("invert", params)
    return p


def mask_params(engine: Engine, seg: Segmentation) -> dict[str, Any]:
    """What the project records of a computed mask: the segmentation settings and a summary."""
    out = engine.segment_config().params()
    out["summary"] = seg.summary()
    out["source"] = "computed"
    return out

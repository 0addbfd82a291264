"""`dhr demo`: the whole chain on one synthetic photo, offline, in well under two minutes.

A scene of the bundled synthetic face domain (a face with out-of-domain occluders, whose true
mask and true smile edit are known) is written as a photo, then run through exactly what the
commands do: `dhr mask` (encode -> Domain-Specific Segmentation, stored in the project file),
`dhr invert` (Hybrid Modulation Refinement with that mask) and `dhr edit --smile S`. A sheet
puts the input, the mask, the reconstruction, the edit and the true edit side by side, and the
errors against the ground truth are returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .app.options import EngineOptions
from .app.request import EditRequest
from .errors import DhrError, UsageError
from .faces import load_image, save_image
from .files import ensure_folder
from .project import Project
from .synthetic.benchset import make_sample

# An occluded scene of the benchmark set's generator whose occluders cover the face partly
# (hand / glasses / hat ...), chosen once so the demo always shows the same photo.
DEMO_SCENE_INDEX = 1
DEMO_SEED = 7
SHEET_TILE = 256
SHEET_COLUMNS = ("input", "mask (red: out-of-domain)", "reconstruction", "edit", "true edit")


def _tile(rgb: np.ndarray, size: int = SHEET_TILE) -> Any:

    return Image.fromarray(rgb).resize((size, size), Image.Resampling.NEAREST)


def demo_sheet(images: list[np.ndarray], titles: list[str]) -> np.ndarray:
    """One row of tiles with a title above each (uint8 RGB)."""

    pad, head = 8, 28
    w = len(images) * (SHEET_TILE + pad) + pad
    h = SHEET_TILE + head + pad
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for k, (img, title) in enumerate(zip(images, titles, strict=True)):
        x = pad + k * (SHEET_TILE + pad)
        sheet.paste(_tile(img), (x, head))
        draw.text((x + 2, 6), title, fill=(20, 20, 20), font=font)
    return np.asarray(sheet)


def _region_mse(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float | None:
    if not region.any():
        return None
    d = (a.astype(np.float64) - b.astype(np.float64)) / 127.5  # images in [-1, 1]
    return float((d**2)[region].mean())


def _check_not_someones_photo(photo: Path, demo_image: np.ndarray) -> None:
    """UsageError when -o holds a face.png that an earlier demo did not write: the demo writes
    fixed names (face.png, its project, demo.png, ...) and must not replace a user's files."""

    if not photo.exists():
        return
    try:
        ours = np.array_equal(load_image(photo).rgb, demo_image)
    except DhrError:
        ours = False
    if not ours:
        raise UsageError(
            f"{photo} exists and is not the demo's photo; the demo would overwrite it",
            hint="give the demo a new or empty folder with -o",
        )


def run_demo(
    out_dir: Path,
    *,
    smile: float = 2.0,
    device: str = "cpu",
    models_dir: Path | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns what was written and the measured errors."""
    # the workflows load torch: imported here so that the command line starts without it
    from .app.edit import EditSession
    from .app.engine import Engine, console_progress
    from .app.invert import invert_photo, mask_overlay, mask_photo
    from .bench import grey_change, iou
    from .packs import apply_cpu_threads, load_pack

    out_dir = Path(out_dir)
    # 1. the photo, with its ground truth (true out-of-domain mask, true smile edit)
    sample = make_sample(
        DEMO_SCENE_INDEX, "occluded", DEMO_SEED, deltas=(smile,), edit_attributes=("smile",)
    )
    truth = sample.edit("smile", smile)
    photo = out_dir / "face.png"
    _check_not_someones_photo(photo, sample.image)
    ensure_folder(photo)
    save_image(photo, sample.image)
    save_image(out_dir / "face.true-smile.png", truth.image)

    # 2. dhr mask face.png, then dhr invert face.png (--pack synthetic): Domain-Specific
    #    Segmentation stored in the project, then Hybrid Modulation Refinement reusing it
    pack = load_pack("synthetic", device=device, models_dir=models_dir, offline=offline)
    apply_cpu_threads(pack)
    engine = Engine(
        pack, EngineOptions(method="dhr"), progress=console_progress if progress else None
    )
    need = engine.options.needs(segment=True)
    pack.require(need["roles"], lpips=need["lpips"])
    masked = mask_photo(engine, photo)
    inverted = invert_photo(engine, photo)

    # 3. dhr edit face.png --smile S
    session = EditSession(
        request=EditRequest(named=[("smile", smile)]),
        device=device,
        models_dir=models_dir,
        offline=offline,
    )
    session.packs["synthetic"] = pack
    edited = session.edit_input(photo)

    # 4. the side-by-side sheet and the errors against the ground truth

    project = Project.load(Path(inverted["project"]))
    in_domain = project.mask[0, 0].numpy() > 0.5 if project.mask is not None else None
    recon = load_image(Path(inverted["recon"])).rgb
    edit = load_image(Path(edited["output"])).rgb
    overlay = (
        mask_overlay(sample.image, in_domain) if in_domain is not None else sample.image.copy()
    )
    sheet_path = out_dir / "demo.png"
    titles = list(SHEET_COLUMNS)
    titles[3] = f"edit: smile {smile:+g}"
    save_image(sheet_path, demo_sheet([sample.image, overlay, recon, edit, truth.image], titles))

    ood_true = truth.ood_mask
    face_true = ~ood_true
    result: dict[str, Any] = {
        "photo": str(photo),
        "project": inverted["project"],
        "recon": inverted["recon"],
        "mask_overlay": inverted.get("mask_overlay") or masked.get("mask_overlay"),
        "edit": edited["output"],
        "true_edit": str(out_dir / "face.true-smile.png"),
        "sheet": str(sheet_path),
        "smile": smile,
        "recon_mse": _region_mse(recon, sample.image, np.ones(ood_true.shape, bool)),
        "edit_mse_in_domain": _region_mse(edit, truth.image, face_true),
        "edit_mse_out_of_domain": _region_mse(edit, truth.image, ood_true),
        "ood_change_grey_levels": (
            grey_change(edit, recon, sample.ood_mask) if sample.ood_mask.any() else None
        ),
        "mask_iou": None if in_domain is None else iou(~in_domain, sample.ood_mask),
        "times": inverted["faces"][0]["times"],
    }
    return result

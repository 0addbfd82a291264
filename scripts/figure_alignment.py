"""Before/after figure of the alignment and paste-back round trip on the astronaut photo.

Writes docs/alignment_roundtrip.png (for the README):
  1. the photo with the five MTCNN landmarks and the FFHQ quad;
  2. the FFHQ-aligned crop (1024, shown at 512) with the eye template marked;
  3. the unedited crop pasted back (should look identical to 1);
  4. |difference| x 20 with the outline of the blend mask;
  5. an "edit" (the crop turned greyscale) pasted back through the feathered mask.

Run: python scripts/figure_alignment.py [--out docs/alignment_roundtrip.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

from dhr_cli import faces

PANEL = 400
LABEL = 28


def _panel(rgb: np.ndarray, title: str) -> Image.Image:
    im = Image.fromarray(rgb).resize((PANEL, PANEL), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (PANEL, PANEL + LABEL), "white")
    out.paste(im, (0, LABEL))
    ImageDraw.Draw(out).text((8, 8), title, fill="black")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/alignment_roundtrip.png"))
    args = parser.parse_args()

    photo = np.ascontiguousarray(data.astronaut())
    (face,) = faces.detect(photo, detector="mtcnn")
    al = faces.align(photo, face, size=1024)
    pasted = faces.paste_back(photo, al.image, al)
    alpha = faces.paste_alpha(photo.shape, al)
    diff = np.abs(pasted.astype(int) - photo.astype(int))
    inside = alpha > 0
    print(
        f"eyes in crop: {faces.photo_to_crop(face.landmarks[:2], al.crop_to_photo).round(1).tolist()}"
        f" template {faces.ffhq_template(1024).round(1).tolist()}"
    )
    print(f"round trip: outside max {diff[~inside].max()}, inside mean {diff[inside].mean():.3f}")

    # 1. photo with landmarks and quad
    marked = Image.fromarray(photo)
    draw = ImageDraw.Draw(marked)
    quad = [tuple(p) for p in al.quad] + [tuple(al.quad[0])]
    draw.line(quad, fill=(255, 220, 0), width=2)
    for x, y in face.landmarks:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), outline=(0, 255, 0), width=2)
    # 2. aligned crop with the template eye positions
    crop = Image.fromarray(al.image)
    draw = ImageDraw.Draw(crop)
    for x, y in faces.ffhq_template(1024):
        draw.line((x - 20, y, x + 20, y), fill=(255, 0, 0), width=3)
        draw.line((x, y - 20, x, y + 20), fill=(255, 0, 0), width=3)
    # 4. amplified difference with the mask outline
    amp = np.clip(diff * 20, 0, 255).astype(np.uint8)
    edge = inside ^ np.pad(inside, 1)[2:, 1:-1] | inside ^ np.pad(inside, 1)[1:-1, 2:]
    amp[edge] = (0, 160, 255)
    # 5. a visible edit: greyscale face, pasted through the feathered square
    grey = np.repeat(al.image.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    edited = faces.paste_back(photo, grey, al)

    panels = [
        _panel(np.asarray(marked), "photo: 5 landmarks + FFHQ quad"),
        _panel(np.asarray(crop), "aligned 1024 crop (+ eye template)"),
        _panel(pasted, "unedited crop pasted back"),
        _panel(amp, f"|diff| x20 (mean {diff[inside].mean():.2f} inside, 0 outside)"),
        _panel(edited, "an edit (greyscale) pasted back"),
    ]
    fig = Image.new("RGB", (PANEL * len(panels), PANEL + LABEL), "white")
    for i, p in enumerate(panels):
        fig.paste(p, (i * PANEL, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    faces.save_image(args.out, np.asarray(fig))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

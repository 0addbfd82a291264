"""A labelled contact sheet of a strip of equal frames (`dhr edit --sweep`): the strip with a band
below it naming each frame (e.g. the strength of the sweep). Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["labelled_sheet", "sheet_path", "sweep_labels"]

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def sheet_path(strip: Path) -> Path:
    """Where the sheet of a strip goes: beside it, `<strip stem>.sheet.png`."""
    return strip.with_name(f"{strip.stem}.sheet.png")


def sweep_labels(name: str, values: Sequence[float]) -> list[str]:
    """One label per frame of a sweep: 'smile -3', 'smile +0', 'smile +1.5'."""
    return [f"{name} {float(v):+g}" for v in values]


def labelled_sheet(strip: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """`strip` ([H, W, 3] uint8: len(labels) frames of equal width side by side) over a white
    band with each label centred under its frame."""
    n = len(labels)
    if n < 1:
        raise ValueError("a sheet needs at least one label")
    h, w = strip.shape[:2]
    cell = w / n
    size = int(min(max(12, h // 10), max(10, cell / 6), 40))
    font = ImageFont.load_default(size=size)
    band = int(size * 1.8)
    sheet = Image.new("RGB", (w, h + band), BACKGROUND)
    sheet.paste(Image.fromarray(np.ascontiguousarray(strip[..., :3])), (0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(labels):
        x = (i + 0.5) * cell
        draw.text((x, h + band / 2), text, fill=INK, font=font, anchor="mm")
    return np.asarray(sheet)

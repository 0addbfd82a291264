"""The comparison grid of `dhr bench` (grid.png, drawn with Pillow): one row per image with
thumbnails, columns input | true mask | DHR mask | each method's reconstruction and edit | true
edit."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .thumbs import decode_png

TRUE_TINT = (40, 120, 255)
PRED_TINT = (255, 40, 40)
BG = (255, 255, 255)
INK = (30, 30, 30)
FAINT = (215, 215, 215)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    box = draw.multiline_textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _tint(rgb: np.ndarray, ood: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    out[ood] = out[ood] * 0.45 + np.array(color, np.float32) * 0.55
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_grid(doc: dict[str, Any], k: int | None = None, cell: int = 128) -> Image.Image | None:
    """Input | true mask | DHR mask | each method's reconstruction and edit | true edit, one
    row per image (the first `k` with thumbnails); None when there are none."""
    grid = doc.get("grid") or {}
    entries = [grid[p] for p in sorted(grid, key=int)][: k if k is not None else None]
    if not entries:
        return None
    methods = list(doc["config"]["methods"])
    name, strength = doc["config"]["grid_edit"]
    edit_label = f"{name} {strength:+g}"
    columns: list[tuple[str, Any]] = [("input", lambda e: decode_png(e["input"]))]

    def mask_col(key: str, color: tuple[int, int, int], inverted: bool) -> Any:
        def get(e: dict[str, Any]) -> np.ndarray | None:
            if key not in e:
                return None
            m = decode_png(e[key])
            ood = m < 128 if not inverted else m >= 128
            return _tint(decode_png(e["input"]), ood, color)

        return get

    if any("true_mask" in e for e in entries):
        columns.append(("true mask", mask_col("true_mask", TRUE_TINT, False)))
    if any("mask" in e for e in entries):
        columns.append(("DHR mask", mask_col("mask", PRED_TINT, False)))
    for m in methods:
        columns.append((f"{m}\nrecon", lambda e, m=m: _thumb(e, m, "recon")))
        if any("edit" in (e["methods"].get(m) or {}) for e in entries):
            columns.append((f"{m}\n{edit_label}", lambda e, m=m: _thumb(e, m, "edit")))
    if any("true_edit" in e for e in entries):
        columns.append((f"true\n{edit_label}", lambda e: _decode(e.get("true_edit"))))

    font, small = _font(14), _font(12)
    label_w, head_h, pad = 96, 44, 4
    W = label_w + len(columns) * (cell + pad) + pad
    H = head_h + len(entries) * (cell + pad) + pad
    img = Image.new("RGB", (W, H), BG)
    d = ImageDraw.Draw(img)
    for j, (title, _) in enumerate(columns):
        x = label_w + pad + j * (cell + pad)
        tw, th = _text_size(d, title, small)
        d.multiline_text(
            (x + (cell - tw) / 2, (head_h - th) / 2), title, fill=INK, font=small, align="center"
        )
    for i, e in enumerate(entries):
        y = head_h + i * (cell + pad)
        label = e["id"] + (f"\n{e['stratum']}" if e.get("stratum") else "")
        d.multiline_text((6, y + cell / 2 - 16), label, fill=INK, font=font)
        for j, (_, get) in enumerate(columns):
            x = label_w + pad + j * (cell + pad)
            arr = get(e)
            if arr is None:
                d.rectangle([x, y, x + cell - 1, y + cell - 1], outline=FAINT)
                continue
            tile = Image.fromarray(arr).convert("RGB")
            if tile.size != (cell, cell):
                resample = (
                    Image.Resampling.NEAREST
                    if tile.size[0] * 2 <= cell
                    else Image.Resampling.LANCZOS
                )
                tile = tile.resize((cell, cell), resample)
            img.paste(tile, (x, y))
    return img


def _decode(b64: str | None) -> np.ndarray | None:
    return None if b64 is None else decode_png(b64)


def _thumb(entry: dict[str, Any], method: str, key: str) -> np.ndarray | None:
    return _decode((entry["methods"].get(method) or {}).get(key))

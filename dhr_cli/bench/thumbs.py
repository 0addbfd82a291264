"""Grid thumbnails: small PNGs stored base64 in the results document (the first K images'
input, masks, reconstructions and edits), and back to arrays for the comparison grid."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

GRID_THUMB = 128  # largest side of a grid thumbnail (larger crops are reduced)


def png_b64(rgb: np.ndarray, max_side: int = GRID_THUMB) -> str:
    """An image array as a base64 PNG thumbnail (reduced to `max_side` px when larger)."""
    im = Image.fromarray(rgb)
    if max(im.size) > max_side:
        im = im.resize((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(b64: str) -> np.ndarray:
    """A grid thumbnail back to an array."""
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB" if im.mode != "L" else "L"))

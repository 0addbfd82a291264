"""The renderer's drawing machinery: shape primitives, a palette-indexed supersampled canvas, and
the box filter that turns it into anti-aliased layers with exact coverage and class counts.

Flat-coloured polygons, lines and text are drawn into a palette-indexed image at ``supersample``
times the output size (every palette entry carries a colour and a class id, entry 0 is "nothing
drawn"), then box-filtered down to a premultiplied colour layer ``fg`` and its coverage
``alpha``, so a layer composites over any background as ``fg + (1 - alpha) * background``.
The face (:mod:`dhr_cli.synthetic.render`) and the occluders (:mod:`dhr_cli.synthetic.occluders`)
are both drawn this way.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from . import classes as C

# --------------------------------------------------------------------------------------------
# Shapes (in any coordinates) and colours
# --------------------------------------------------------------------------------------------


def ellipse_pts(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def superellipse_arc(
    cx: float, cy: float, rx: float, ry: float, expo: float, t0: float, t1: float, n: int
) -> np.ndarray:
    """Arc of |x/rx|^e + |y/ry|^e = 1 between angles t0..t1 (radians, y down)."""
    t = np.linspace(t0, t1, n)
    c, s = np.cos(t), np.sin(t)
    k = 2.0 / expo
    return np.stack(
        [cx + rx * np.sign(c) * np.abs(c) ** k, cy + ry * np.sign(s) * np.abs(s) ** k], axis=1
    )


def capsule_pts(p0: np.ndarray, p1: np.ndarray, r: float, n: int = 10) -> np.ndarray:
    """Polygon of a stadium (segment p0-p1 thickened by radius r, round ends)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    ang = math.atan2(d[1], d[0])
    a1 = np.linspace(ang - np.pi / 2, ang + np.pi / 2, n)
    a0 = np.linspace(ang + np.pi / 2, ang + 3 * np.pi / 2, n)
    e1 = p1 + r * np.stack([np.cos(a1), np.sin(a1)], axis=1)
    e0 = p0 + r * np.stack([np.cos(a0), np.sin(a0)], axis=1)
    return np.concatenate([e1, e0])


def hsv_color(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (255.0 * r, 255.0 * g, 255.0 * b)


# --------------------------------------------------------------------------------------------
# The canvas
# --------------------------------------------------------------------------------------------


class Canvas:
    """Palette-indexed drawing surface at supersampled resolution.

    Every primitive gets a palette entry (colour, class id); entry 0 is "nothing drawn".
    Points are given in the coordinates of the current *space* (a function mapping points to
    supersampled pixels plus its pixels-per-unit scale for stroke widths). Primitives are
    recorded and drawn in order by :meth:`finish`, which maps all points of a space in one
    vectorised call (per-primitive numpy calls dominated the cost otherwise).
    """

    def __init__(self, size: int, supersample: int) -> None:
        self.size = size
        self.ss = supersample
        self.side = size * supersample
        self.colors: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self.classes: list[int] = [C.BACKGROUND]
        self._lookup: dict[tuple, int] = {}
        self._spaces: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
            "pixels": (lambda q: q, 1.0)
        }
        self._space = "pixels"
        self._ops: list[tuple] = []

    def add_space(self, name: str, transform: Callable[[np.ndarray], np.ndarray], unit: float):
        """Register coordinates ``name``: ``transform`` maps (N, 2) points to pixels."""
        self._spaces[name] = (transform, unit)

    def use(self, name: str) -> None:
        self._space = name

    def entry(self, color: Sequence[float], cls: int) -> int:
        key = (tuple(color), cls)
        idx = self._lookup.get(key)
        if idx is None:
            idx = len(self.colors)
            if idx > 255:
                raise RuntimeError("palette overflow")
            self.colors.append(key[0])  # type: ignore[arg-type]
            self.classes.append(int(cls))
            self._lookup[key] = idx
        return idx

    def polygon(self, pts: np.ndarray, color: Sequence[float], cls: int) -> None:
        self._ops.append(("p", self._space, pts, self.entry(color, cls), 0.0))

    def line(self, pts: np.ndarray, color: Sequence[float], cls: int, width: float) -> None:
        """Polyline with round joints and caps; ``width`` in units of the current space."""
        self._ops.append(("l", self._space, pts, self.entry(color, cls), width))

    def text(self, xy: Sequence[float], s: str, color: Sequence[float], cls: int, font) -> None:
        """Text (no anti-aliasing in an indexed image) with its top-left at ``xy``."""
        self._ops.append(
            ("t", self._space, np.asarray(xy, float)[None], self.entry(color, cls), (s, font))
        )

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw everything: (indices (side, side) uint8, colours (K, 3) f32, classes (K,) u8)."""
        by_space: dict[str, list[np.ndarray]] = {}
        for op in self._ops:
            by_space.setdefault(op[1], []).append(
                np.asarray(op[2], dtype=np.float64).reshape(-1, 2)
            )
        mapped: dict[str, list[np.ndarray]] = {}
        for name, arrays in by_space.items():
            sizes = np.cumsum([len(a) for a in arrays])[:-1]
            mapped[name] = np.split(self._spaces[name][0](np.concatenate(arrays)), sizes)
        cursor = dict.fromkeys(mapped, 0)
        image = Image.new("L", (self.side, self.side), 0)
        draw = ImageDraw.Draw(image)
        draw.fontmode = "1"  # anti-aliased text would blend palette indices
        for kind, space, _, idx, extra in self._ops:
            xy = mapped[space][cursor[space]]
            cursor[space] += 1
            if kind == "p":
                draw.polygon(xy.ravel().tolist(), fill=idx)
            elif kind == "l":
                w = max(1, round(extra * self._spaces[space][1]))
                draw.line(xy.ravel().tolist(), fill=idx, width=w, joint="curve")
                r = w / 2.0
                for x, y in (xy[0], xy[-1]):
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=idx)
            else:
                draw.text((float(xy[0, 0]), float(xy[0, 1])), extra[0], fill=idx, font=extra[1])
        colors = np.array(self.colors, dtype=np.float32)
        return np.asarray(image, dtype=np.uint8), colors, np.array(self.classes, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Box filter: supersampled drawing -> anti-aliased layer, coverage and class counts
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _block_ids(size: int, ss: int) -> np.ndarray:
    """For every supersampled pixel, the index of the output pixel it falls in."""
    r = np.arange(size * ss) // ss
    return (r[:, None] * size + r[None, :]).astype(np.int64)


def box_counts(index: np.ndarray, n_values: int, size: int, ss: int) -> np.ndarray:
    """Per output pixel histogram (size*size, n_values) of supersampled values in [0, n_values)."""
    key = _block_ids(size, ss) * n_values + index
    return np.bincount(key.ravel(), minlength=size * size * n_values).reshape(size * size, n_values)


def downsample_layer(
    index: np.ndarray,
    colors: np.ndarray,
    size: int,
    ss: int,
    palette_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-filter a palette-indexed layer.

    Returns premultiplied RGB (S, S, 3) float32, coverage alpha (S, S) float32 (index 0 is
    transparent; coverage is exact: the fraction of supersamples drawn) and, when
    ``palette_classes`` is given, per-pixel class counts (S*S, NUM_CLASSES) over the supersamples
    (float32, exact; else an empty array).
    """
    counts = box_counts(index, len(colors), size, ss).astype(np.float32)
    n = float(ss * ss)
    premult = (counts[:, 1:] @ colors[1:]) / n
    alpha = 1.0 - counts[:, 0] / n
    if palette_classes is None:
        class_counts = np.zeros((0, C.NUM_CLASSES), np.float32)
    else:
        # Column sums per class (a one-hot matmul is slow for these skinny shapes).
        class_counts = np.zeros((size * size, C.NUM_CLASSES), np.float32)
        for c in np.unique(palette_classes):
            class_counts[:, c] = counts[:, palette_classes == c].sum(axis=1)
    return premult.reshape(size, size, 3), alpha.reshape(size, size), class_counts


def majority_classes(class_index: np.ndarray, size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Class map at output size by majority over each block, and per-class counts (S*S, C)."""
    counts = box_counts(class_index, C.NUM_CLASSES, size, ss)
    return counts.argmax(axis=1).astype(np.uint8).reshape(size, size), counts


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 255] -> uint8 with round-half-even (the one rounding rule used)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)

"""Out-of-domain layer for synthetic faces: occluders and textured backgrounds with exact masks.

A *scene* is a face latent ``z`` plus an out-of-domain part built once:

- an :class:`OccluderLayer` — hands, sunglasses, hats, microphones/bars, stickers with text,
  earrings — drawn into a palette-indexed supersampled RGBA layer placed from the face's
  :class:`~dhr_cli.synthetic.render.FaceGeometry`;
- optionally a :class:`TextureBackground` — a crop of one of scikit-image's bundled photos
  (brick, grass, gravel, ...) — that replaces the gradient *under* the face.

:func:`composite` puts them together::

    out = occ_premult + (1 - occ_alpha) * (face_fg + (1 - face_alpha) * background)

so compositing the same layer and background on a re-rendered (edited) face gives the true
edited image (:meth:`Scene.render`). The true out-of-domain mask is exact: a pixel is
out-of-domain iff at least one of its supersamples belongs to an occluder or to the textured
background (``Composite.ood_coverage`` gives the fraction). Every pixel outside the mask is
bit-identical to the clean render.

Everything random takes a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache

import numpy as np
import skimage.data
from PIL import Image, ImageFont

from . import classes as C
from .attributes import Z_DIM, edit_z
from .raster import (
    Canvas,
    capsule_pts,
    downsample_layer,
    ellipse_pts,
    hsv_color,
    majority_classes,
    superellipse_arc,
    to_uint8,
)
from .render import FaceGeometry, Render, render, skin_color

#: Occluder kinds, in drawing order (later ones lie on top).
OCCLUDER_KINDS: tuple[str, ...] = (
    "hat",
    "earring",
    "sunglasses",
    "microphone",
    "hand",
    "bar",
    "sticker",
)

#: Relative frequencies used by :func:`random_occluders`.
OCCLUDER_WEIGHTS: dict[str, float] = {
    "hat": 0.16,
    "earring": 0.12,
    "sunglasses": 0.16,
    "microphone": 0.12,
    "hand": 0.18,
    "bar": 0.1,
    "sticker": 0.16,
}

#: scikit-image bundled images used as textured backgrounds (no download needed).
TEXTURES: tuple[str, ...] = (
    "brick",
    "grass",
    "gravel",
    "coins",
    "text",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
)

_STICKER_WORDS = ("HI", "NEW", "OK", "WOW", "LOL", "YES", "SALE", "TOP", "GO", "24", "COOL", "FUN")


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OccluderLayer:
    """An RGBA layer of occluders with exact coverage, built once per scene.

    ``index`` is the supersampled palette-indexed drawing (0 = transparent), ``premult`` and
    ``alpha`` its box-filtered premultiplied colour and coverage at output size.
    """

    size: int
    supersample: int
    kinds: tuple[str, ...]
    premult: np.ndarray  # (S, S, 3) float32, [0, 255]
    alpha: np.ndarray  # (S, S) float32 coverage
    index: np.ndarray = field(repr=False)  # (S*ss, S*ss) uint8
    palette: np.ndarray = field(repr=False)  # (K, 3) float32
    palette_classes: np.ndarray = field(repr=False)  # (K,) uint8

    @property
    def mask(self) -> np.ndarray:
        """(S, S) bool: pixels touched by any occluder."""
        return self.alpha > 0

    @property
    def coverage(self) -> float:
        """Fraction of the image's pixels touched by an occluder."""
        return float(self.mask.mean())


@dataclass(frozen=True)
class TextureBackground:
    """A textured background replacing the gradient; every pixel it shows is out-of-domain."""

    name: str
    image: np.ndarray  # (S, S, 3) float32, [0, 255]


@dataclass(frozen=True)
class Composite:
    """A face with its out-of-domain layers and ground truth."""

    image: np.ndarray  # (S, S, 3) uint8
    classes: np.ndarray  # (S, S) uint8 class ids (majority over supersamples)
    ood_mask: np.ndarray  # (S, S) bool, True = out-of-domain (any occluder/texture supersample)
    ood_coverage: np.ndarray  # (S, S) float32, fraction of supersamples out-of-domain


def composite(
    face: Render,
    layer: OccluderLayer | None = None,
    background: TextureBackground | None = None,
) -> Composite:
    """Composite a rendered face over ``background`` (default: its gradient) under ``layer``."""
    size, ss = face.size, face.supersample
    if layer is not None and (layer.size, layer.supersample) != (size, ss):
        raise ValueError("occluder layer and render differ in size or supersampling")
    if layer is None and background is None:
        zero = np.zeros((size, size), np.float32)
        return Composite(face.image, face.classes, zero > 0, zero)
    bg = face.background if background is None else background.image
    out = face.fg + (1.0 - face.alpha)[..., None] * bg
    cls = face.palette_classes[face.index]
    if background is not None:
        cls = np.where(face.index == 0, np.uint8(C.TEXTURE), cls)
    if layer is not None:
        out = layer.premult + (1.0 - layer.alpha)[..., None] * out
        cls = np.where(layer.index > 0, layer.palette_classes[layer.index], cls)
    classes, counts = majority_classes(cls, size, ss)
    ood = counts[:, C.TRUE_OOD].sum(axis=1).reshape(size, size).astype(np.float32) / (ss * ss)
    return Composite(to_uint8(out), classes, ood > 0, ood)


@dataclass(frozen=True)
class Scene:
    """A face latent plus a fixed out-of-domain part; re-render it with any edit."""

    z: np.ndarray
    layer: OccluderLayer | None = None
    background: TextureBackground | None = None
    size: int = 64
    supersample: int = 4

    def render(self, z: np.ndarray | None = None) -> Composite:
        """The scene with face latent ``z`` (default: its own) under the same layers."""
        zz = self.z if z is None else np.asarray(z, dtype=np.float64).reshape(Z_DIM)
        face = render(zz, size=self.size, supersample=self.supersample)
        return composite(face, self.layer, self.background)

    def edit(self, attribute: str, delta: float) -> Composite:
        """The true edited image: ``attribute`` moved by ``delta`` std-units, layers unchanged."""
        return self.render(edit_z(self.z, attribute, delta))


# --------------------------------------------------------------------------------------------
# Occluder drawings (head coordinates follow the face; "image" coordinates are [0, 1]^2)
# --------------------------------------------------------------------------------------------


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _rot(pts: np.ndarray, ang: float, center: Sequence[float]) -> np.ndarray:
    c, s = math.cos(ang), math.sin(ang)
    d = np.asarray(pts, float) - center
    return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1) + center


def _bright(rng: np.random.Generator) -> tuple[float, float, float]:
    return hsv_color(_u(rng, 0, 1), _u(rng, 0.55, 0.95), _u(rng, 0.6, 0.95))


def _draw_hat(cv: Canvas, g: FaceGeometry, rng: np.random.Generator) -> None:
    cx = g.face_center[0]
    band_y = g.brow_y - _u(rng, 0.025, 0.08)
    rx = g.head_half_width * _u(rng, 1.04, 1.15)
    top = g.head_top[1] - _u(rng, 0.0, 0.06)
    crown_col = _bright(rng) if rng.random() < 0.7 else hsv_color(0, 0, _u(rng, 0.1, 0.3))
    dark = tuple(c * 0.7 for c in crown_col)
    style = rng.choice(["beanie", "cap", "brim"])
    crown = superellipse_arc(cx, band_y, rx, band_y - top, _u(rng, 2.0, 2.8), np.pi, 2 * np.pi, 32)
    cv.polygon(crown, crown_col, C.HAT)
    if style == "beanie":
        cuff = 0.055
        band = np.array([[cx - rx, band_y - cuff], [cx + rx, band_y - cuff]])
        band = np.concatenate(
            [band, [[cx + rx * 1.01, band_y + 0.01], [cx - rx * 1.01, band_y + 0.01]]]
        )
        cv.polygon(band, dark, C.HAT)
        if rng.random() < 0.6:
            cv.polygon(ellipse_pts(cx, top, 0.04, 0.035, 20), _bright(rng), C.HAT)
    elif style == "cap":
        cv.line(
            np.array([[cx - rx * 0.98, band_y - 0.012], [cx + rx * 0.98, band_y - 0.012]]),
            dark,
            C.HAT,
            0.02,
        )
        visor = superellipse_arc(
            cx, band_y - 0.01, rx * 0.85, _u(rng, 0.04, 0.07), 2.2, 0, np.pi, 20
        )
        cv.polygon(visor, dark, C.HAT)
    else:
        cv.line(
            np.array([[cx - rx * 0.99, band_y - 0.02], [cx + rx * 0.99, band_y - 0.02]]),
            _bright(rng),
            C.HAT,
            0.025,
        )
        brim = ellipse_pts(cx, band_y, rx * _u(rng, 1.35, 1.75), _u(rng, 0.025, 0.045), 36)
        cv.polygon(brim, dark, C.HAT)


def _draw_earrings(cv: Canvas, g: FaceGeometry, rng: np.random.Generator) -> None:
    metal = (225, 185, 70) if rng.random() < 0.5 else (205, 205, 215)
    gem = _bright(rng)
    style = rng.choice(["hoop", "stud", "dangle"])
    sides = [g.ear_left, g.ear_right]
    if rng.random() < 0.3:
        sides = [sides[int(rng.integers(2))]]
    r = _u(rng, 0.016, 0.032)
    for ex, ey in sides:
        if style == "hoop":
            ring = ellipse_pts(ex, ey + r, r, r, 24)
            cv.line(np.concatenate([ring, ring[:1]]), metal, C.EARRING, 0.008)
        elif style == "stud":
            cv.polygon(ellipse_pts(ex, ey, 0.012, 0.012, 12), metal, C.EARRING)
            cv.polygon(ellipse_pts(ex, ey, 0.007, 0.007, 10), gem, C.EARRING)
        else:
            cv.line(np.array([[ex, ey], [ex, ey + 2 * r]]), metal, C.EARRING, 0.006)
            d = 0.6 * r + 0.008
            diamond = np.array(
                [
                    [ex, ey + 2 * r],
                    [ex + d, ey + 2 * r + d],
                    [ex, ey + 2 * r + 2.2 * d],
                    [ex - d, ey + 2 * r + d],
                ]
            )
            cv.polygon(diamond, gem, C.EARRING)


def _draw_sunglasses(cv: Canvas, g: FaceGeometry, rng: np.random.Generator) -> None:
    rx, ry = _u(rng, 0.068, 0.085), _u(rng, 0.048, 0.066)
    expo = _u(rng, 2.0, 4.0)
    lens = hsv_color(_u(rng, 0, 1), _u(rng, 0.2, 0.7), _u(rng, 0.08, 0.3))
    frame = (15, 15, 15) if rng.random() < 0.6 else _bright(rng)
    shine = tuple(min(255.0, c + 90) for c in lens)
    dy = _u(rng, -0.005, 0.012)
    ey = g.eye_left[1] + dy
    for (ex, _), s in ((g.eye_left, -1), (g.eye_right, 1)):
        ear = g.ear_left if s < 0 else g.ear_right
        cv.line(
            np.array([[ex + s * rx, ey - ry * 0.4], [ear[0] + s * 0.01, ey - 0.01]]),
            frame,
            C.GLASSES,
            0.012,
        )
        outer = superellipse_arc(ex, ey, rx + 0.009, ry + 0.009, expo, 0, 2 * np.pi, 36)
        cv.polygon(outer, frame, C.GLASSES)
        cv.polygon(superellipse_arc(ex, ey, rx, ry, expo, 0, 2 * np.pi, 36), lens, C.GLASSES)
        cv.line(
            np.array([[ex - rx * 0.45, ey - ry * 0.15], [ex - rx * 0.1, ey - ry * 0.6]]),
            shine,
            C.GLASSES,
            0.01,
        )
    xl, xr = g.eye_left[0] + rx, g.eye_right[0] - rx
    mid = (xl + xr) / 2
    cv.line(
        np.array([[xl, ey - ry * 0.3], [mid, ey - ry * 0.45], [xr, ey - ry * 0.3]]),
        frame,
        C.GLASSES,
        0.012,
    )


def _draw_microphone(cv: Canvas, g: FaceGeometry, rng: np.random.Generator) -> None:
    mx, my = g.mouth
    c = np.array([mx + _u(rng, -0.07, 0.07), my + _u(rng, 0.04, 0.11)])
    r = _u(rng, 0.045, 0.068)
    ang = math.radians(_u(rng, -30, 30))
    end = c + 1.2 * np.array([math.sin(ang), math.cos(ang)])
    body = (20, 20, 22) if rng.random() < 0.7 else _bright(rng)
    cv.polygon(capsule_pts(c, end, r * 0.5), body, C.MICROPHONE)
    cv.polygon(
        capsule_pts(c + 0.9 * r * (end - c) / 1.2, c + 1.4 * r * (end - c) / 1.2, r * 0.62),
        (60, 60, 64),
        C.MICROPHONE,
    )
    grey = _u(rng, 90, 150)
    cv.polygon(ellipse_pts(c[0], c[1], r, r, 32), (grey, grey, grey + 5), C.MICROPHONE)
    mesh = (grey * 0.6, grey * 0.6, grey * 0.62)
    for t in np.linspace(-0.6, 0.6, 4):
        h = math.sqrt(1 - t * t) * r * 0.92
        cv.line(
            np.array([[c[0] + t * r, c[1] - h], [c[0] + t * r, c[1] + h]]),
            mesh,
            C.MICROPHONE,
            0.005,
        )
        cv.line(
            np.array([[c[0] - h, c[1] + t * r], [c[0] + h, c[1] + t * r]]),
            mesh,
            C.MICROPHONE,
            0.005,
        )


def _draw_hand(cv: Canvas, g: FaceGeometry, rng: np.random.Generator, tone: float) -> None:
    skin = skin_color(float(np.clip(tone + _u(rng, -0.2, 0.2), 0, 1)))
    edge = tuple(c * 0.72 for c in skin)
    targets = [
        g.mouth,
        g.chin,
        (g.mouth[0] - 0.12, g.mouth[1] - 0.05),
        (g.mouth[0] + 0.12, g.mouth[1] - 0.05),
    ]
    tx, ty = targets[int(rng.integers(len(targets)))]
    hs = _u(rng, 0.075, 0.11)  # palm half-width
    ang = math.radians(_u(rng, -50, 50))  # 0: fingers point up, arm comes from below
    centre = np.array([tx + _u(rng, -0.04, 0.04), ty + _u(rng, 0.02, 0.09)])

    def place(pts: np.ndarray) -> np.ndarray:
        return _rot(np.asarray(pts, float) + centre, ang, centre)

    parts = [capsule_pts(np.array([0, 0.0]), np.array([0, 1.2]), hs * 0.85)]  # forearm to the edge
    parts.append(ellipse_pts(0, 0, hs, hs * 1.05, 28))
    lengths = (0.95, 1.1, 1.02, 0.8)
    for i, x in enumerate(np.linspace(-0.72, 0.72, 4) * hs):
        tip = np.array([x * 1.1, -hs * (0.8 + 1.05 * lengths[i])])
        parts.append(capsule_pts(np.array([x, -hs * 0.5]), tip, hs * 0.21))
    side = 1 if rng.random() < 0.5 else -1
    parts.append(
        capsule_pts(
            np.array([side * hs * 0.8, hs * 0.2]),
            np.array([side * hs * 1.55, -hs * 0.55]),
            hs * 0.23,
        )
    )
    # Outline then fill: palm and forearm first, then each finger over them.
    for p in parts[:2]:
        cv.polygon(place(_grow(p, 0.008)), edge, C.HAND)
    for p in parts[:2]:
        cv.polygon(place(p), skin, C.HAND)
    for p in parts[2:]:
        cv.polygon(place(_grow(p, 0.008)), edge, C.HAND)
        cv.polygon(place(p), skin, C.HAND)


def _grow(poly: np.ndarray, d: float) -> np.ndarray:
    """Move the vertices of a convex polygon ``d`` away from its centroid (approximate offset)."""
    c = poly.mean(axis=0)
    v = poly - c
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return c + v * (1.0 + d / np.maximum(n, 1e-9))


def _draw_bar(cv: Canvas, g: FaceGeometry, rng: np.random.Generator) -> None:
    ang = math.radians(_u(rng, -35, 35) + (90 if rng.random() < 0.3 else 0))
    th = _u(rng, 0.035, 0.075)
    c = np.array([_u(rng, 0.3, 0.7), _u(rng, 0.35, 0.85)])
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    col = _bright(rng)
    quad = np.array(
        [c - 2 * d - th * n, c + 2 * d - th * n, c + 2 * d + th * n, c - 2 * d + th * n]
    )
    cv.polygon(quad, col, C.MICROPHONE)
    if rng.random() < 0.5:
        stripe = tuple(255.0 - x for x in col)
        cv.line(np.array([c - 2 * d, c + 2 * d]), stripe, C.MICROPHONE, th * 0.5)


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _draw_sticker(cv: Canvas, g: FaceGeometry, rng: np.random.Generator) -> None:
    side = cv.side
    c = np.array([_u(rng, 0.15, 0.85), _u(rng, 0.15, 0.85)])
    h = _u(rng, 0.08, 0.15)
    shape = rng.choice(["circle", "rect", "star"])
    if shape == "circle":
        poly = ellipse_pts(c[0], c[1], h, h, 40)
    elif shape == "rect":
        poly = superellipse_arc(c[0], c[1], h * 1.25, h * 0.8, 5.0, 0, 2 * np.pi, 40)
    else:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False) - np.pi / 2
        rad = np.where(np.arange(24) % 2 == 0, h * 1.15, h * 0.8)
        poly = np.stack([c[0] + rad * np.cos(t), c[1] + rad * np.sin(t)], 1)
    col = _bright(rng)
    cv.polygon(_grow(poly, 0.014) * side, (250, 250, 250), C.STICKER)
    cv.polygon(poly * side, col, C.STICKER)
    word = _STICKER_WORDS[int(rng.integers(len(_STICKER_WORDS)))]
    ink = (15, 15, 15) if sum(col) > 380 else (255, 255, 255)
    px = max(6, int(h * side * (0.9 if len(word) <= 2 else 0.55 if len(word) <= 3 else 0.42)))
    font = _font(px)
    x0, y0, x1, y1 = font.getbbox(word)
    cv.text((c[0] * side - (x0 + x1) / 2, c[1] * side - (y0 + y1) / 2), word, ink, C.STICKER, font)


def draw_occluders(
    geometry: FaceGeometry,
    rng: np.random.Generator,
    kinds: Sequence[str],
    *,
    size: int = 64,
    supersample: int = 4,
    skin_tone: float = 0.5,
) -> OccluderLayer:
    """Draw the given occluder kinds (any order; drawn in :data:`OCCLUDER_KINDS` order)."""
    unknown = set(kinds) - set(OCCLUDER_KINDS)
    if unknown:
        raise ValueError(f"unknown occluder kind(s): {sorted(unknown)}")
    ordered = tuple(k for k in OCCLUDER_KINDS if k in kinds)
    cv = Canvas(size, supersample)
    side = float(size * supersample)
    cv.add_space("head", lambda q: geometry.to_pixels(q, side), side * geometry.unit)
    cv.add_space("image", lambda q: q * side, side)
    for kind in ordered:
        if kind == "sticker":
            cv.use("pixels")
            _draw_sticker(cv, geometry, rng)
        elif kind == "bar":
            cv.use("image")
            _draw_bar(cv, geometry, rng)
        else:
            cv.use("head")
            if kind == "hand":
                _draw_hand(cv, geometry, rng, skin_tone)
            else:
                {
                    "hat": _draw_hat,
                    "earring": _draw_earrings,
                    "sunglasses": _draw_sunglasses,
                    "microphone": _draw_microphone,
                }[kind](cv, geometry, rng)
    index, colors, pal_cls = cv.finish()
    premult, alpha, _ = downsample_layer(index, colors, size, supersample)
    return OccluderLayer(size, supersample, ordered, premult, alpha, index, colors, pal_cls)


def random_occluders(
    geometry: FaceGeometry,
    rng: np.random.Generator,
    *,
    size: int = 64,
    supersample: int = 4,
    skin_tone: float = 0.5,
    cover: tuple[float, float] = (0.05, 0.40),
    max_kinds: int = 3,
    max_tries: int = 200,
) -> OccluderLayer:
    """One to ``max_kinds`` random occluders whose union covers a fraction of the image in
    ``cover`` (inclusive); redraws until it does (deterministic for a given ``rng`` state)."""
    names = list(OCCLUDER_WEIGHTS)
    w = np.array([OCCLUDER_WEIGHTS[k] for k in names])
    for _ in range(max_tries):
        n = int(rng.choice(np.arange(1, max_kinds + 1), p=_count_probs(max_kinds)))
        kinds = rng.choice(names, size=n, replace=False, p=w / w.sum()).tolist()
        layer = draw_occluders(
            geometry, rng, kinds, size=size, supersample=supersample, skin_tone=skin_tone
        )
        if cover[0] <= layer.coverage <= cover[1]:
            return layer
    raise RuntimeError(f"no occluder set with coverage in {cover} after {max_tries} tries")


def _count_probs(max_kinds: int) -> np.ndarray:
    p = np.array([0.5, 0.35, 0.15, 0.1, 0.05][:max_kinds])
    return p / p.sum()


# --------------------------------------------------------------------------------------------
# Textured backgrounds
# --------------------------------------------------------------------------------------------


@cache
def _texture_source(name: str) -> np.ndarray:
    """A bundled scikit-image picture as uint8 (H, W) or (H, W, 3)."""
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose from {TEXTURES}")
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 3:
        img = img[..., :3]
    img.setflags(write=False)
    return img


def texture_background(
    rng: np.random.Generator, *, size: int = 64, name: str | None = None
) -> TextureBackground:
    """A random crop of a bundled texture (grey ones tinted with two random colours)."""
    if name is None:
        name = TEXTURES[int(rng.integers(len(TEXTURES)))]
    src = _texture_source(name)
    h, w = src.shape[:2]
    side = int(min(h, w) * _u(rng, 0.3, 0.8))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(np.ascontiguousarray(src[y0 : y0 + side, x0 : x0 + side]))
    img = np.asarray(crop.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if img.ndim == 2:
        t = (img / 255.0)[..., None]
        lo = np.array(hsv_color(_u(rng, 0, 1), _u(rng, 0.2, 0.7), _u(rng, 0.05, 0.35)), np.float32)
        hi = np.array(hsv_color(_u(rng, 0, 1), _u(rng, 0.1, 0.5), _u(rng, 0.7, 1.0)), np.float32)
        img = lo + (hi - lo) * t
    return TextureBackground(name, np.ascontiguousarray(img, dtype=np.float32))

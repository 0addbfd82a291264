"""Parametric frontal-face renderer: the synthetic domain's ground-truth "world".

A face is the latent ``z`` of :mod:`dhr_cli.synthetic.attributes` (one standard-normal
coordinate per named attribute, mapped to the attribute's documented range); :func:`render` draws
it. Attributes are independent by construction: smile only moves mouth pixels, age only changes
the hair colour and the wrinkle/eye-bag lines (never the silhouette), background attributes only
move background pixels, etc. (see tests/synthetic/test_render.py).

Rendering draws flat-coloured polygons into a palette-indexed image at ``supersample`` times the
output size, then box-filters it down (:mod:`dhr_cli.synthetic.raster`): every output pixel is
``fg + (1 - alpha) * background`` where ``fg`` is the premultiplied face layer (everything but the
background), ``alpha`` its exact coverage, and ``background`` the gradient. The same
decomposition lets the occluder module put a textured background *under* a re-rendered face (see
:mod:`dhr_cli.synthetic.occluders`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import classes as C
from .attributes import Z_DIM, params_dict
from .raster import Canvas, downsample_layer, ellipse_pts, hsv_color, superellipse_arc, to_uint8

# --------------------------------------------------------------------------------------------
# Geometry: canonical (un-rolled) layout in normalised image coordinates, x right, y down.
# --------------------------------------------------------------------------------------------

_FACE_CX = 0.5
_FACE_CY = 0.53
_FACE_HH = 0.275  # face half-height (forehead top to chin)
_EYE_DY = -0.075  # eye line relative to the face centre
_EYE_DX = 0.092  # eye centre distance from the midline
_MOUTH_DY = 0.165
# The head is designed around (0.5, 0.53) and then scaled about that point to sit where FFHQ's
# alignment puts faces (eyes at y ~0.465, mouth ~0.75, chin ~0.885, eyes ~0.22 apart).
_HEAD_SCALE = 1.2
_DESIGN_CENTER = (0.5, 0.53)
_HEAD_ANCHOR = (0.5, 0.555)
_PIVOT = (0.5, 0.95)  # roll pivot (image coordinates): the neck base


@dataclass(frozen=True)
class FaceGeometry:
    """Where the face is: canonical landmarks plus the head transform to pixels.

    Canonical (design) coordinates are normalised coordinates ([0, 1], x right, y down) of the
    head before its scale, roll and offset; :meth:`to_pixels` applies all three and scales to a
    given image size. Occluders use this to sit on the eyes, ears, mouth, head top.
    """

    roll_deg: float
    offset: tuple[float, float]
    face_center: tuple[float, float]
    face_half_width: float
    face_half_height: float
    eye_left: tuple[float, float]  # image-left eye
    eye_right: tuple[float, float]
    eye_half_width: float
    nose_tip: tuple[float, float]
    mouth: tuple[float, float]
    mouth_half_width_max: float
    chin: tuple[float, float]
    ear_left: tuple[float, float]  # ear lobe (image-left)
    ear_right: tuple[float, float]
    head_top: tuple[float, float]  # top of the hair
    head_half_width: float
    brow_y: float
    hairline_y: float

    def to_pixels(self, points: np.ndarray, size: float) -> np.ndarray:
        """Canonical points (N, 2) -> pixel coordinates (N, 2) in an image of side ``size``."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        a = math.radians(self.roll_deg)
        ca, sa = math.cos(a), math.sin(a)
        d = (p - _DESIGN_CENTER) * _HEAD_SCALE + _HEAD_ANCHOR - _PIVOT
        x = ca * d[:, 0] - sa * d[:, 1] + _PIVOT[0] + self.offset[0]
        y = sa * d[:, 0] + ca * d[:, 1] + _PIVOT[1] + self.offset[1]
        return np.stack([x, y], axis=1) * size

    @property
    def unit(self) -> float:
        """Image widths per canonical unit (the head scale)."""
        return _HEAD_SCALE

    def landmarks(self, size: float) -> dict[str, tuple[float, float]]:
        """Named landmark positions in pixels for an image of side ``size``."""
        names = ("eye_left", "eye_right", "nose_tip", "mouth", "chin", "ear_left", "ear_right")
        names += ("head_top", "face_center")
        pts = self.to_pixels(np.array([getattr(self, n) for n in names]), size)
        return {n: (float(x), float(y)) for n, (x, y) in zip(names, pts, strict=True)}


# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[float, float, float]:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _scale(a: Sequence[float], k: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, x * k)) for x in a)  # type: ignore[return-value]


def _ramp(stops: Sequence[Sequence[float]], t: float) -> tuple[float, float, float]:
    """Piecewise-linear colour ramp over equally spaced stops, t in [0, 1]."""
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    return _mix(stops[i], stops[i + 1], t - i)


_SKIN = ((255, 226, 204), (238, 196, 164), (221, 170, 128), (190, 130, 90), (150, 98, 66))
_SKIN += ((100, 64, 44),)
_HAIR = ((236, 208, 140), (182, 136, 80), (104, 66, 36), (50, 34, 24), (20, 16, 16))
_IRIS = ((60, 120, 205), (70, 150, 90), (120, 72, 30), (70, 40, 20))
_GREY = (222, 222, 226)
_RED_TINT = (175, 62, 28)
_LIPS = (205, 55, 70)
_TEETH = (246, 244, 236)
_MOUTH_IN = (85, 20, 30)
_EYE_WHITE = (248, 248, 248)
_LINER = (25, 18, 18)


def skin_color(tone: float) -> tuple[float, float, float]:
    """Skin colour for a tone in [0, 1] (the renderer's ``skin_tone`` scale)."""
    return _ramp(_SKIN, tone)


def _colors(p: Mapping[str, float]) -> dict[str, tuple[float, float, float]]:
    skin = skin_color(p["skin_tone"])
    base = _ramp(_HAIR, p["hair_dark"])
    red = 0.65 * p["hair_red"] * (1.0 - 0.6 * p["hair_dark"])
    hair = _mix(base, _RED_TINT, red)
    grey = min(max((p["age"] - 0.3) / 0.7, 0.0), 1.0)
    # the red tint goes on after greying (at 60% for fully grey hair) and a fifth of the base
    # colour stays, so grey hair still shows how red and how dark it was: with the tint under
    # the grey, age hid the hair colour (the probe lost 0.4 std of hair_red under the true edit)
    greyed = _mix(base, _GREY, 0.8 * grey)
    hair_now = _mix(greyed, _RED_TINT, red * (1.0 - 0.4 * grey))
    wr = min(max((p["age"] - 0.2) / 0.8, 0.0), 1.0)
    brow = _mix(_scale(hair, 0.55), (30, 22, 18), 0.55)
    cloth = hsv_color(p["cloth_hue"], 0.55, p["cloth_light"])
    return {
        "skin": skin,
        "skin_dark": _scale(skin, 0.86),
        "ear_in": _scale(skin, 0.78),
        "neck": _scale(skin, 0.84),
        "nose": _scale(skin, 0.8),  # dark enough to be worth drawing for a 64-px generator
        "nostril": _scale(skin, 0.45),
        "wrinkle": _scale(skin, 1.0 - 0.42 * wr),
        "hair": hair_now,
        "brow": brow,
        "iris": _ramp(_IRIS, p["iris_hue"]),
        "lips": _mix(_LIPS, skin, 0.15),
        "cloth": cloth,
        "cloth_dark": _scale(cloth, 0.75),
    }


def gradient_background(p: Mapping[str, float], size: int) -> np.ndarray:
    """The smooth two-colour background (size, size, 3) float32 in [0, 255]."""
    ca = np.array(hsv_color(p["bg_hue_a"], 0.45, p["bg_light_a"]), dtype=np.float32)
    cb = np.array(hsv_color(p["bg_hue_b"], 0.45, p["bg_light_b"]), dtype=np.float32)
    a = math.radians(p["bg_angle"])
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    # Projection of the pixel centre on the gradient direction, mapped to [0, 1] over the image.
    t = (c[None, :] * math.cos(a) + c[:, None] * math.sin(a)) / math.sqrt(0.5) * 0.5 + 0.5
    t = np.clip(t, 0.0, 1.0)[..., None]
    return (ca * (1.0 - t) + cb * t).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The face
# --------------------------------------------------------------------------------------------


def geometry(p: Mapping[str, float]) -> FaceGeometry:
    """Canonical layout of the face described by attribute values ``p``."""
    cx, cy = _FACE_CX, _FACE_CY
    a = 0.205 * p["face_width"]
    eye_y = cy + _EYE_DY
    vol = p["hair_volume"]
    hh = _FACE_HH
    brow_y = eye_y - (0.052 + 0.035 * p["brow_height"])
    hairline = (cy - hh + 0.07) + ((eye_y - 0.105) - (cy - hh + 0.07)) * p["hair_fringe"]
    return FaceGeometry(
        roll_deg=p["roll"],
        offset=(p["offset_x"], p["offset_y"]),
        face_center=(cx, cy),
        face_half_width=a,
        face_half_height=hh,
        eye_left=(cx - _EYE_DX, eye_y),
        eye_right=(cx + _EYE_DX, eye_y),
        eye_half_width=0.06,
        nose_tip=(cx, eye_y + 0.085 + 0.05 * p["nose_length"]),
        mouth=(cx, cy + _MOUTH_DY),
        mouth_half_width_max=0.111,
        chin=(cx, cy + hh),
        ear_left=(cx - a * 0.99, eye_y + 0.1),
        ear_right=(cx + a * 0.99, eye_y + 0.1),
        head_top=(cx, cy - hh - 0.045 - 0.05 * vol),
        head_half_width=a * 1.06 + 0.012 + 0.035 * vol,
        brow_y=brow_y,
        hairline_y=hairline,
    )


def _face_outline(p: Mapping[str, float], g: FaceGeometry) -> np.ndarray:
    cx, cy = g.face_center
    a, hh = g.face_half_width, g.face_half_height
    lower_e = 1.9 + 1.5 * p["jaw"]  # superellipse exponent: pointed -> square jaw
    upper = superellipse_arc(cx, cy, a, hh, 2.3, np.pi, 2 * np.pi, 28)
    lower = superellipse_arc(cx, cy, a, hh, lower_e, 0.0, np.pi, 28)
    return np.concatenate([upper[:-1], lower[:-1]])


def _hair_cap(g: FaceGeometry) -> np.ndarray:
    """The top of the hair, left to right over the head (the back and front hair share it)."""
    cx, cy = g.face_center
    cap_cy = cy - 0.05
    return superellipse_arc(
        cx, cap_cy, g.head_half_width, cap_cy - g.head_top[1], 2.2, np.pi, 2 * np.pi, 30
    )


def _draw_back_hair(cv: Canvas, p: Mapping[str, float], g: FaceGeometry, col) -> None:
    cx, cy = g.face_center
    hw = g.head_half_width
    cap = _hair_cap(g)
    # Sides fall from the cap to a length between the temples and the shoulders.
    y_end = (cy - 0.02) + (0.99 - (cy - 0.02)) * p["hair_length"]
    flare = 0.02 * p["hair_volume"] * p["hair_length"]
    right = np.array([[cx + hw + flare, y_end - 0.03], [cx + hw * 0.8, y_end]])
    bottom = np.array([[cx, y_end + 0.01]])
    left = np.array([[cx - hw * 0.8, y_end], [cx - hw - flare, y_end - 0.03]])
    cv.polygon(np.concatenate([cap, right, bottom, left]), col["hair"], C.HAIR)


def _draw_front_hair(cv: Canvas, p: Mapping[str, float], g: FaceGeometry, col) -> None:
    cx = g.face_center[0]
    a = g.face_half_width
    hw = g.head_half_width
    temple_y = g.eye_left[1] - 0.035
    hl = g.hairline_y
    # Outer edge: up the left side of the head, over the top, down the right side.
    outer = np.concatenate([[[cx - hw, temple_y]], _hair_cap(g), [[cx + hw, temple_y]]])
    # Hairline from right temple to left temple, with a notch at the parting.
    u = np.linspace(1.0, -1.0, 31)
    part = p["hair_part"] * 0.55
    y = hl + (temple_y - hl) * np.abs(u) ** 2.6
    y -= (0.045 - 0.02 * p["hair_fringe"]) * np.exp(-(((u - part) / 0.16) ** 2))
    x = cx + (a * 1.02) * u
    hairline = np.stack([x, y], axis=1)
    cv.polygon(np.concatenate([outer, hairline]), col["hair"], C.HAIR)


def _draw_eye(cv: Canvas, p: Mapping[str, float], ex: float, ey: float, side: int, col) -> None:
    w = 0.06
    up = 0.046 * (0.12 + 0.88 * p["eye_open"])
    lo = 0.021 * (0.4 + 0.6 * p["eye_open"])
    u = np.linspace(-1.0, 1.0, 21)
    # Peak of the upper lid sits towards the nose (side=+1: the nose is at +x).
    skew = 1.0 + 0.25 * side * u
    upper = np.stack([ex + w * u, ey - up * (1 - u**2) ** 0.75 * skew], axis=1)
    lower = np.stack([ex + w * u, ey + lo * (1 - u**2) ** 0.9], axis=1)
    cv.polygon(np.concatenate([upper, lower[::-1]]), _EYE_WHITE, C.EYES)
    r = 0.029
    cv.polygon(ellipse_pts(ex, ey, r, r, 28), col["iris"], C.EYES)
    cv.polygon(ellipse_pts(ex, ey, 0.012, 0.012, 18), (12, 10, 10), C.EYES)
    cv.polygon(ellipse_pts(ex - 0.009, ey - 0.008, 0.006, 0.006, 12), (255, 255, 255), C.EYES)
    # Eyelids: skin polygons hide the iris beyond the lid curves.
    cover = 0.05
    cv.polygon(np.concatenate([upper, (upper + [0.0, -cover])[::-1]]), col["skin"], C.SKIN)
    cv.polygon(np.concatenate([lower, (lower + [0.0, cover])[::-1]]), col["skin"], C.SKIN)
    cv.line(upper, _LINER, C.EYES, 0.0095)
    # Lid crease above the fully open lid line: fixed, so eye_open moves only eye pixels.
    crease = np.stack([ex + w * u, ey - 0.062 * (1 - u**2) ** 0.75 * skew], axis=1)
    cv.line(crease[4:-3], col["skin_dark"], C.SKIN, 0.006)


def _draw_brow(cv: Canvas, p: Mapping[str, float], ex: float, by: float, side: int, col) -> None:
    u = np.linspace(-1.0, 1.0, 17)  # -1 inner end, +1 outer end
    x = ex + side * (0.006 + 0.064 * u)
    mid = by - 0.013 * (1 - u**2) + 0.004 * u
    th = 0.013 - 0.004 * u
    top = np.stack([x, mid - th], axis=1)
    bot = np.stack([x, mid + th], axis=1)
    cv.polygon(np.concatenate([top, bot[::-1]]), col["brow"], C.BROWS)


def _draw_nose(cv: Canvas, p: Mapping[str, float], g: FaceGeometry, col) -> None:
    cx = g.face_center[0]
    top_y = g.eye_left[1] + 0.015
    tip_y = g.nose_tip[1]
    nw = 0.026 + 0.016 * p["nose_width"]
    t = np.linspace(0.0, 1.0, 8)
    left = np.stack([cx - 0.012 - (nw - 0.012) * t**2.5, top_y + (tip_y - top_y) * t], axis=1)
    base = superellipse_arc(cx, tip_y - 0.004, nw, 0.018, 2.0, np.pi, 0.0, 15)[::-1]
    base = base[base[:, 1] >= tip_y - 0.004]
    right = left[::-1].copy()
    right[:, 0] = 2 * cx - right[:, 0]
    cv.polygon(np.concatenate([left, base, right]), col["nose"], C.NOSE)
    for s in (-1, 1):
        cv.polygon(
            ellipse_pts(cx + s * nw * 0.5, tip_y + 0.002, 0.0105, 0.0065, 14),
            col["nostril"],
            C.NOSE,
        )


def _draw_mouth(cv: Canvas, p: Mapping[str, float], g: FaceGeometry, col) -> None:
    mx, my = g.mouth
    s = p["smile"]
    mw = (0.062 + 0.03 * p["mouth_width"]) * (1.0 + 0.2 * s)
    lift = -0.008 + 0.04 * s  # corners up with smile, slightly down at 0
    op = 0.066 * min(max((s - 0.4) / 0.6, 0.0), 1.0)  # opening shows teeth from smile 0.4
    t_up = 0.015 * (1.0 - 0.2 * s)
    t_lo = 0.02 * (1.0 - 0.25 * s)
    u = np.linspace(-1.0, 1.0, 25)
    x = mx + mw * u
    bulge = (1.0 - u**2) ** 0.5
    line = my - lift * np.abs(u) ** 2.2
    up_in = line - 0.25 * op * (1 - u**2)
    lo_in = line + op * (1 - u**2) ** 0.8
    bow = 0.004 * np.exp(-((u / 0.18) ** 2))  # cupid's bow dip
    up_out = up_in - t_up * bulge - 0.002 + bow
    lo_out = lo_in + t_lo * bulge
    xs = np.concatenate([x, x[::-1]])
    cv.polygon(np.stack([xs, np.concatenate([up_out, lo_out[::-1]])], 1), col["lips"], C.MOUTH)
    if op > 0:
        cv.polygon(np.stack([xs, np.concatenate([up_in, lo_in[::-1]])], 1), _MOUTH_IN, C.MOUTH)
        teeth_lo = np.minimum(up_in + 0.8 * op * (1 - u**2) ** 0.3, lo_in)
        cv.polygon(np.stack([xs, np.concatenate([up_in, teeth_lo[::-1]])], 1), _TEETH, C.MOUTH)
    cv.line(np.stack([x, line], 1)[1:-1], _MOUTH_IN, C.MOUTH, 0.0075)


def _draw_wrinkles(cv: Canvas, p: Mapping[str, float], g: FaceGeometry, col) -> None:
    """Age lines: their colour goes from skin (invisible) to dark with age.

    Positions depend only on the face oval and the eye line, never on other attributes'
    features, and stay inside the face, so age changes colours but no shape or class.
    """
    cx, cy = g.face_center
    a = g.face_half_width
    c = col["wrinkle"]
    ey = g.eye_left[1]
    w = 0.0085
    for i, dy in enumerate((0.0, 0.022, 0.044)):
        u = np.linspace(-1, 1, 12)
        span = 0.085 - 0.012 * i
        # Fixed to the eye line (not the brows) so brow_height moves only brow pixels.
        y = ey - 0.13 - dy + 0.006 * u**2
        cv.line(np.stack([cx + span * u, y], 1), c, C.SKIN, w)
    for s in (-1, 1):
        ex = cx + s * _EYE_DX
        # Under-eye bags.
        u = np.linspace(-0.8, 0.8, 9)
        cv.line(np.stack([ex + 0.045 * u, ey + 0.036 + 0.01 * (1 - u**2)], 1), c, C.SKIN, w)
        # Crow's feet.
        ox = cx + s * min(0.158, 0.93 * a - 0.018)
        for ang in (-25, 0, 25):
            d = np.array([math.cos(math.radians(ang)) * s, math.sin(math.radians(ang))])
            cv.line(np.array([[ox, ey], [ox + 0.014 * d[0], ey + 0.014 * d[1]]]), c, C.SKIN, w)
        # Nasolabial folds: nose wing to beside the mouth.
        t = np.linspace(0, 1, 10)
        fx = cx + s * (0.055 + 0.06 * t - 0.015 * t**2)
        fy = ey + 0.11 + (g.mouth[1] - ey - 0.11) * t
        cv.line(np.stack([fx, fy], 1), c, C.SKIN, w * 1.1)
        # Marionette lines below the mouth corners.
        mx = cx + s * 0.5 * a
        seg = np.array([[mx, g.mouth[1] + 0.03], [mx - s * 0.006, g.mouth[1] + 0.055]])
        cv.line(seg, c, C.SKIN, w)


def _draw_body(cv: Canvas, g: FaceGeometry, col) -> None:
    cx, cy = g.face_center
    neck_top = cy + 0.15
    neck = np.array(
        [[cx - 0.088, neck_top], [cx + 0.088, neck_top], [cx + 0.1, 1.02], [cx - 0.1, 1.02]]
    )
    cv.polygon(neck, col["neck"], C.SKIN)
    for s in (-1, 1):
        ex, ey = (g.ear_left if s < 0 else g.ear_right)[0], g.eye_left[1] + 0.045
        cv.polygon(ellipse_pts(ex + s * 0.012, ey, 0.03, 0.058, 24), col["skin"], C.SKIN)
        cv.polygon(ellipse_pts(ex + s * 0.018, ey - 0.002, 0.013, 0.034, 16), col["ear_in"], C.SKIN)


def _draw_cloth(cv: Canvas, col) -> None:
    """Shoulders and shirt, in image coordinates (they do not roll with the head)."""
    pts = np.array(
        [
            [-0.05, 1.05],
            [-0.05, 0.975],
            [0.1, 0.935],
            [0.37, 0.915],
            [0.5, 0.985],
            [0.63, 0.915],
            [0.9, 0.935],
            [1.05, 0.975],
            [1.05, 1.05],
        ]
    )
    cv.polygon(pts, col["cloth"], C.CLOTH)
    cv.line(pts[3:6], col["cloth_dark"], C.CLOTH, 0.012)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Render:
    """One rendered face (no occluders), with everything needed to composite it later.

    ``image = rint(fg + (1 - alpha) * background)``. ``index``/``palette``/``palette_classes``
    are the supersampled palette-indexed drawing (index 0 = background), kept so that the
    occluder module can compute exact per-pixel class coverage of composites.
    """

    z: np.ndarray  # (Z_DIM,) float64
    params: dict[str, float]
    size: int
    supersample: int
    image: np.ndarray  # (S, S, 3) uint8
    classes: np.ndarray  # (S, S) uint8 class ids (majority over each pixel's supersamples)
    fg: np.ndarray  # (S, S, 3) float32 premultiplied face layer, [0, 255]
    alpha: np.ndarray  # (S, S) float32 face-layer coverage in [0, 1]
    background: np.ndarray  # (S, S, 3) float32 gradient background, [0, 255]
    index: np.ndarray = field(repr=False)  # (S*ss, S*ss) uint8 palette indices
    palette: np.ndarray = field(repr=False)  # (K, 3) float32
    palette_classes: np.ndarray = field(repr=False)  # (K,) uint8
    geometry: FaceGeometry = field(repr=False)


def render(z: np.ndarray, *, size: int = 64, supersample: int = 4) -> Render:
    """Render the face of latent ``z`` (Z_DIM,) at ``size`` x ``size``, anti-aliased."""
    z = np.asarray(z, dtype=np.float64).reshape(Z_DIM)
    p = params_dict(z)
    g = geometry(p)
    col = _colors(p)
    cv = Canvas(size, supersample)
    side = float(size * supersample)
    cv.add_space("head", lambda q: g.to_pixels(q, side), side * g.unit)
    # Shoulders do not roll with the head, but follow its offset.
    cv.add_space("body", lambda q: (q + g.offset) * side, side)
    cv.use("head")
    _draw_back_hair(cv, p, g, col)
    _draw_body(cv, g, col)
    cv.use("body")
    _draw_cloth(cv, col)
    cv.use("head")
    cv.polygon(_face_outline(p, g), col["skin"], C.SKIN)
    if col["wrinkle"] != col["skin"]:  # invisible when young: skip the work
        _draw_wrinkles(cv, p, g, col)
    for side_sign, (ex, ey) in ((-1, g.eye_left), (1, g.eye_right)):
        _draw_eye(cv, p, ex, ey, -side_sign, col)
        _draw_brow(cv, p, ex, g.brow_y, side_sign, col)
    _draw_nose(cv, p, g, col)
    _draw_mouth(cv, p, g, col)
    _draw_front_hair(cv, p, g, col)

    index, colors, pal_cls = cv.finish()
    fg, alpha, counts = downsample_layer(index, colors, size, supersample, pal_cls)
    cls = counts.argmax(axis=1).astype(np.uint8).reshape(size, size)
    bg = gradient_background(p, size)
    image = to_uint8(fg + (1.0 - alpha)[..., None] * bg)
    return Render(
        z=z,
        params=p,
        size=size,
        supersample=supersample,
        image=image,
        classes=cls,
        fg=fg,
        alpha=alpha,
        background=bg,
        index=index,
        palette=colors,
        palette_classes=pal_cls,
        geometry=g,
    )


def render_batch(
    z: np.ndarray, *, size: int = 64, supersample: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Render many latents (N, Z_DIM): images (N, S, S, 3) uint8 and class maps (N, S, S) uint8."""
    z = np.asarray(z, dtype=np.float64).reshape(-1, Z_DIM)
    images = np.empty((len(z), size, size, 3), np.uint8)
    cls = np.empty((len(z), size, size), np.uint8)
    for i, zi in enumerate(z):
        r = render(zi, size=size, supersample=supersample)
        images[i], cls[i] = r.image, r.classes
    return images, cls

"""The synthetic face's latent: named attributes, their ranges, and the z <-> value mapping.

A face is a vector ``z`` of :data:`Z_DIM` independent standard-normal coordinates, one per named
attribute (:data:`ATTRIBUTES`). Attribute ``k`` has a documented range ``[lo, hi]`` and

    param_k = lo + (hi - lo) * Phi(z_k)        z_k = Phi^-1((param_k - lo) / (hi - lo))

with ``Phi`` the standard normal CDF, so ``z ~ N(0, I)`` gives attributes uniform over their
ranges, and "smile + d std-units" means ``z[smile] += d``.

| attribute   | range      | meaning                                                       |
|-------------|------------|---------------------------------------------------------------|
| face_width  | 0.85..1.15 | horizontal scale of the face oval                             |
| jaw         | 0..1       | lower-face shape: 0 narrow pointed chin, 1 broad square jaw   |
| skin_tone   | 0..1       | light -> dark skin                                            |
| hair_length | 0..1       | 0 cropped above the ears, 1 long to the shoulders             |
| hair_volume | 0..1       | how far the hair stands off the head                          |
| hair_fringe | 0..1       | hairline height: 0 high forehead, 1 bangs down to the brows   |
| hair_part   | -1..1      | side of the parting (notch in the hairline)                   |
| hair_dark   | 0..1       | hair colour lightness: 0 blond, 1 black                       |
| hair_red    | 0..1       | red/auburn tint of the hair                                   |
| eye_open    | 0..1       | eyelid opening: 0 almost closed, 1 wide open                  |
| iris_hue    | 0..1       | iris colour: blue -> green -> brown                           |
| brow_height | 0..1       | brow distance above the eyes                                  |
| nose_length | 0..1       | nose tip height (short -> long)                               |
| nose_width  | 0..1       | width of the nose base                                        |
| mouth_width | 0..1       | mouth width                                                   |
| smile       | 0..1       | 0 neutral/slight frown, 0.5 closed smile, >0.4 the mouth opens |
|             |            | showing teeth, 1 wide open grin                               |
| age         | 0..1       | 0 young; grows grey hair, wrinkles and under-eye bags          |
| offset_x    | -0.05..0.05| head offset, fraction of the image width                      |
| offset_y    | -0.04..0.04| head offset, fraction of the image height                     |
| roll        | -12..12    | head roll in degrees (pivot at the neck base)                 |
| bg_hue_a    | 0..1       | background colour A hue                                       |
| bg_light_a  | 0.3..0.95  | background colour A value                                     |
| bg_hue_b    | 0..1       | background colour B hue                                       |
| bg_light_b  | 0.3..0.95  | background colour B value                                     |
| bg_angle    | 0..360     | direction of the linear A -> B background gradient (degrees)  |
| cloth_hue   | 0..1       | shirt hue                                                     |
| cloth_light | 0.2..0.85  | shirt value                                                   |

The renderer (:mod:`dhr_cli.synthetic.render`) draws the face of a ``z``; this module is the
convention alone (numpy and scipy, no drawing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri


@dataclass(frozen=True)
class Attribute:
    """A named, independently controllable face attribute and its range."""

    name: str
    lo: float
    hi: float
    doc: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("face_width", 0.85, 1.15, "horizontal scale of the face oval"),
    Attribute("jaw", 0.0, 1.0, "0 narrow pointed chin, 1 broad square jaw"),
    Attribute("skin_tone", 0.0, 1.0, "light -> dark skin"),
    Attribute("hair_length", 0.0, 1.0, "0 cropped above the ears, 1 long to the shoulders"),
    Attribute("hair_volume", 0.0, 1.0, "how far the hair stands off the head"),
    Attribute("hair_fringe", 0.0, 1.0, "hairline: 0 high forehead, 1 bangs down to the brows"),
    Attribute("hair_part", -1.0, 1.0, "side of the parting"),
    Attribute("hair_dark", 0.0, 1.0, "0 blond, 1 black"),
    Attribute("hair_red", 0.0, 1.0, "red/auburn tint"),
    Attribute("eye_open", 0.0, 1.0, "0 almost closed, 1 wide open"),
    Attribute("iris_hue", 0.0, 1.0, "blue -> green -> brown"),
    Attribute("brow_height", 0.0, 1.0, "brow distance above the eyes"),
    Attribute("nose_length", 0.0, 1.0, "short -> long nose"),
    Attribute("nose_width", 0.0, 1.0, "narrow -> wide nose base"),
    Attribute("mouth_width", 0.0, 1.0, "narrow -> wide mouth"),
    Attribute("smile", 0.0, 1.0, "0 neutral, 0.5 closed smile, 1 open grin with teeth"),
    Attribute("age", 0.0, 1.0, "0 young, 1 old: grey hair, wrinkles, eye bags"),
    Attribute("offset_x", -0.05, 0.05, "head offset, fraction of the width"),
    Attribute("offset_y", -0.04, 0.04, "head offset, fraction of the height"),
    Attribute("roll", -12.0, 12.0, "head roll in degrees"),
    Attribute("bg_hue_a", 0.0, 1.0, "background colour A hue"),
    Attribute("bg_light_a", 0.3, 0.95, "background colour A value"),
    Attribute("bg_hue_b", 0.0, 1.0, "background colour B hue"),
    Attribute("bg_light_b", 0.3, 0.95, "background colour B value"),
    Attribute("bg_angle", 0.0, 360.0, "gradient direction in degrees"),
    Attribute("cloth_hue", 0.0, 1.0, "shirt hue"),
    Attribute("cloth_light", 0.2, 0.85, "shirt value"),
)

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
ATTRIBUTE_INDEX: dict[str, int] = {a.name: i for i, a in enumerate(ATTRIBUTES)}
Z_DIM = len(ATTRIBUTES)

_LO = np.array([a.lo for a in ATTRIBUTES])
_HI = np.array([a.hi for a in ATTRIBUTES])

#: Keeps Phi^-1 finite for parameters exactly at the ends of their range.
_EPS = 1e-6


def z_to_params(z: np.ndarray) -> np.ndarray:
    """Map latent ``z`` (..., Z_DIM) to attribute values (..., Z_DIM) within their ranges."""
    z = np.asarray(z, dtype=np.float64)
    return _LO + (_HI - _LO) * ndtr(z)


def params_to_z(params: np.ndarray) -> np.ndarray:
    """Inverse of :func:`z_to_params` (values are clipped into the open range first)."""
    p = np.asarray(params, dtype=np.float64)
    u = np.clip((p - _LO) / (_HI - _LO), _EPS, 1.0 - _EPS)
    return ndtri(u)


def params_dict(z: np.ndarray) -> dict[str, float]:
    """Attribute name -> value for one latent ``z`` (Z_DIM,)."""
    return dict(zip(ATTRIBUTE_NAMES, z_to_params(z).tolist(), strict=True))


def z_from_dict(values: Mapping[str, float], base: np.ndarray | None = None) -> np.ndarray:
    """Latent for the given attribute values; unspecified attributes come from ``base`` (or 0)."""
    unknown = set(values) - set(ATTRIBUTE_NAMES)
    if unknown:
        raise KeyError(f"unknown attribute(s): {sorted(unknown)}")
    z = np.zeros(Z_DIM) if base is None else np.array(base, dtype=np.float64)
    p = z_to_params(z)
    for k, v in values.items():
        p[ATTRIBUTE_INDEX[k]] = v
    out = params_to_z(p)
    # Keep untouched coordinates bit-exact (the inverse CDF round trip is not).
    for k in ATTRIBUTE_NAMES:
        if k not in values:
            out[ATTRIBUTE_INDEX[k]] = z[ATTRIBUTE_INDEX[k]]
    return out


def sample_z(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Draw latents from N(0, I): shape (Z_DIM,) or (n, Z_DIM)."""
    return rng.standard_normal(Z_DIM if n is None else (n, Z_DIM))


def edit_z(z: np.ndarray, attribute: str, delta: float) -> np.ndarray:
    """``z`` moved by ``delta`` standard units along one attribute (the true edit)."""
    out = np.array(z, dtype=np.float64, copy=True)
    out[..., ATTRIBUTE_INDEX[attribute]] += delta
    return out

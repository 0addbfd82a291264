"""Parametric face renderer: latent mapping, determinism, attribute independence."""

from __future__ import annotations

import numpy as np
import pytest

from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import classes as C
from dhr_cli.synthetic import measure as M
from dhr_cli.synthetic import render as R
from dhr_cli.synthetic.raster import to_uint8


def _faces(n: int = 6, seed: int = 0) -> np.ndarray:
    return A.sample_z(np.random.default_rng(seed), n)


def _with(z: np.ndarray, name: str, value: float) -> np.ndarray:
    out = z.copy()
    out[A.ATTRIBUTE_INDEX[name]] = value
    return out


def test_attribute_table_is_stable() -> None:
    names = A.ATTRIBUTE_NAMES
    assert len(set(names)) == len(names) == A.Z_DIM
    for required in ("smile", "age", "hair_length", "eye_open", "brow_height", "skin_tone"):
        assert required in names
    for a in A.ATTRIBUTES:
        assert a.lo < a.hi and a.doc


def test_z_param_mapping_round_trip_and_ranges() -> None:
    z = _faces(50)
    p = A.z_to_params(z)
    lo = np.array([a.lo for a in A.ATTRIBUTES])
    hi = np.array([a.hi for a in A.ATTRIBUTES])
    assert (p >= lo).all() and (p <= hi).all()
    np.testing.assert_allclose(A.params_to_z(p), z, atol=1e-9)
    # z = 0 is the middle of every range; extreme z stays inside the range.
    np.testing.assert_allclose(A.z_to_params(np.zeros(A.Z_DIM)), (lo + hi) / 2)
    assert (A.z_to_params(np.full(A.Z_DIM, 40.0)) <= hi).all()
    z2 = A.z_from_dict({"smile": 0.9}, base=z[0])
    assert A.params_dict(z2)["smile"] == pytest.approx(0.9)
    assert (
        np.delete(z2, A.ATTRIBUTE_INDEX["smile"]) == np.delete(z[0], A.ATTRIBUTE_INDEX["smile"])
    ).all()
    with pytest.raises(KeyError):
        A.z_from_dict({"nope": 1.0})


def test_render_is_deterministic_and_well_formed() -> None:
    z = _faces(1, seed=3)[0]
    a, b = R.render(z), R.render(z.copy())
    assert a.image.dtype == np.uint8 and a.image.shape == (64, 64, 3)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.classes.tobytes() == b.classes.tobytes()
    assert a.classes.max() < C.NUM_CLASSES
    # Every face part is present in the class map of a typical face.
    for cls in (C.BACKGROUND, C.SKIN, C.HAIR, C.BROWS, C.EYES, C.NOSE, C.MOUTH, C.CLOTH):
        assert (a.classes == cls).sum() > 0, C.CLASS_NAMES[cls]
    assert not C.TRUE_OOD[a.classes].any()
    # The image is exactly the documented composite of its layers.
    np.testing.assert_array_equal(a.image, to_uint8(a.fg + (1 - a.alpha)[..., None] * a.background))
    big = R.render(z, size=128)
    assert big.image.shape == (128, 128, 3)


def test_render_batch_and_tensor() -> None:
    z = _faces(3, seed=4)
    images, cls = R.render_batch(z)
    assert images.shape == (3, 64, 64, 3) and cls.shape == (3, 64, 64)
    np.testing.assert_array_equal(images[1], R.render(z[1]).image)
    t = M.to_tensor(images)
    assert tuple(t.shape) == (3, 3, 64, 64)
    assert float(t.min()) >= -1.0 and float(t.max()) <= 1.0


def _changed(a: R.Render, b: R.Render) -> np.ndarray:
    return (a.image != b.image).any(axis=2)


def _touched(renders: list[R.Render], class_ids: tuple[int, ...]) -> np.ndarray:
    """Pixels with at least one supersample of the given classes in any of the renders."""
    out = np.zeros(renders[0].classes.shape, bool)
    for r in renders:
        ss = r.supersample
        hit = np.isin(r.palette_classes[r.index], class_ids)
        out |= hit.reshape(r.size, ss, r.size, ss).any(axis=(1, 3))
    return out


def test_smile_changes_only_the_mouth_and_shows_teeth() -> None:
    for z in _faces(6, seed=1):
        lo, hi = R.render(_with(z, "smile", -2.0)), R.render(_with(z, "smile", 2.0))
        changed = _changed(lo, hi)
        assert changed.sum() >= 25
        assert not (changed & ~_touched([lo, hi], (C.MOUTH,))).any()
        # An open grin shows near-white teeth inside the mouth; the neutral mouth does not.
        teeth = lambda r: ((r.image.min(axis=2) > 200) & (r.classes == C.MOUTH)).sum()  # noqa: E731
        assert teeth(hi) >= 3 and teeth(lo) == 0


def test_age_changes_only_hair_and_skin_lines() -> None:
    for z in _faces(6, seed=2):
        young, old = R.render(_with(z, "age", -2.0)), R.render(_with(z, "age", 2.0))
        # Age never moves the silhouette or the parts.
        np.testing.assert_array_equal(young.alpha, old.alpha)
        np.testing.assert_array_equal(young.classes, old.classes)
        changed = _changed(young, old)
        assert changed.sum() >= 60
        assert not (changed & ~_touched([young], (C.HAIR, C.SKIN))).any()
        # Grey hair: the hair gets less saturated.
        hair = young.classes == C.HAIR
        sat_young = np.ptp(young.image[hair].astype(float), axis=1).mean()
        sat_old = np.ptp(old.image[hair].astype(float), axis=1).mean()
        assert sat_old < sat_young or sat_young < 12


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("eye_open", (C.EYES,)),
        ("iris_hue", (C.EYES,)),
        ("brow_height", (C.BROWS,)),
        ("nose_width", (C.NOSE,)),
        ("nose_length", (C.NOSE,)),
        ("mouth_width", (C.MOUTH,)),
        ("hair_red", (C.HAIR, C.BROWS)),
        ("cloth_hue", (C.CLOTH,)),
    ],
)
def test_attribute_locality(name: str, allowed: tuple[int, ...]) -> None:
    for z in _faces(3, seed=5):
        a, b = R.render(_with(z, name, -2.0)), R.render(_with(z, name, 2.0))
        changed = _changed(a, b)
        assert changed.sum() > 0, name
        assert not (changed & ~_touched([a, b], allowed)).any(), name


def test_background_attributes_touch_background_only() -> None:
    z = _faces(1, seed=6)[0]
    a = R.render(z)
    for name in ("bg_hue_a", "bg_light_b", "bg_angle"):
        b = R.render(_with(z, name, -z[A.ATTRIBUTE_INDEX[name]] + 1.5))
        np.testing.assert_array_equal(a.fg, b.fg)
        np.testing.assert_array_equal(a.alpha, b.alpha)
        changed = _changed(a, b)
        assert changed.any()
        assert not (changed & (a.alpha == 1.0)).any()


def test_geometry_attributes_move_the_face() -> None:
    z = _faces(1, seed=7)[0]
    a = R.render(_with(z, "roll", 0.0))
    b = R.render(_with(z, "roll", 2.0))
    la, lb = a.geometry.landmarks(64), b.geometry.landmarks(64)
    assert la["eye_left"] != lb["eye_left"]
    # Landmarks land on the drawn parts.
    for r in (a, b):
        lm = r.geometry.landmarks(64)
        for key, cls in (("eye_left", C.EYES), ("eye_right", C.EYES), ("mouth", C.MOUTH)):
            x, y = (int(round(v - 0.5)) for v in lm[key])
            assert cls in r.classes[y - 1 : y + 2, x - 1 : x + 2], key

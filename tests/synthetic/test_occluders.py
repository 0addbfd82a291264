"""Occluder layer and textured backgrounds: exact masks, determinism, identical re-compositing."""

from __future__ import annotations

import numpy as np
import pytest

from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import classes as C
from dhr_cli.synthetic import occluders as O
from dhr_cli.synthetic import render as R

KIND_CLASS = {
    "hat": C.HAT,
    "earring": C.EARRING,
    "sunglasses": C.GLASSES,
    "microphone": C.MICROPHONE,
    "hand": C.HAND,
    "bar": C.MICROPHONE,
    "sticker": C.STICKER,
}


def _face(seed: int = 0) -> R.Render:
    return R.render(A.sample_z(np.random.default_rng(seed)))


def _check_exact(face: R.Render, comp: O.Composite) -> None:
    """Outside the mask: bit-identical to the clean render; changed pixels are in the mask."""
    outside = ~comp.ood_mask
    np.testing.assert_array_equal(comp.image[outside], face.image[outside])
    np.testing.assert_array_equal(comp.classes[outside], face.classes[outside])
    changed = (comp.image != face.image).any(axis=2)
    assert not (changed & outside).any()
    assert ((comp.ood_coverage > 0) == comp.ood_mask).all()
    assert comp.ood_coverage.max() <= 1.0


@pytest.mark.parametrize("kind", O.OCCLUDER_KINDS)
def test_each_occluder_kind_draws_its_class_with_an_exact_mask(kind: str) -> None:
    for seed in range(3):
        face = _face(seed)
        layer = O.draw_occluders(face.geometry, np.random.default_rng(seed), [kind])
        assert layer.kinds == (kind,)
        assert layer.coverage > 0
        drawn = set(np.unique(layer.palette_classes[layer.index][layer.index > 0]).tolist())
        assert drawn == {KIND_CLASS[kind]}
        comp = O.composite(face, layer)
        _check_exact(face, comp)
        np.testing.assert_array_equal(comp.ood_mask, layer.mask)
        # Fully covered pixels carry the occluder's class.
        full = layer.alpha == 1.0
        assert (comp.classes[full] == KIND_CLASS[kind]).all()


def test_occluders_are_deterministic() -> None:
    face = _face(1)
    a = O.random_occluders(face.geometry, np.random.default_rng(7), skin_tone=0.3)
    b = O.random_occluders(face.geometry, np.random.default_rng(7), skin_tone=0.3)
    assert a.kinds == b.kinds
    assert a.index.tobytes() == b.index.tobytes()
    assert a.premult.tobytes() == b.premult.tobytes()
    t1 = O.texture_background(np.random.default_rng(3))
    t2 = O.texture_background(np.random.default_rng(3))
    assert t1.name == t2.name and t1.image.tobytes() == t2.image.tobytes()


def test_random_occluders_respect_coverage_bounds() -> None:
    rng = np.random.default_rng(11)
    for seed in range(6):
        face = _face(seed)
        layer = O.random_occluders(face.geometry, rng, cover=(0.05, 0.40))
        assert 0.05 <= layer.coverage <= 0.40
        assert 1 <= len(layer.kinds) <= 3


@pytest.mark.parametrize("name", O.TEXTURES)
def test_textured_background_mask_is_the_uncovered_background(name: str) -> None:
    face = _face(2)
    bg = O.texture_background(np.random.default_rng(0), name=name)
    assert bg.image.shape == (64, 64, 3) and bg.image.dtype == np.float32
    assert bg.image.std() > 5  # a texture, not a flat colour
    comp = O.composite(face, background=bg)
    _check_exact(face, comp)
    np.testing.assert_array_equal(comp.ood_mask, face.alpha < 1.0)
    np.testing.assert_allclose(comp.ood_coverage, 1.0 - face.alpha, atol=1e-6)
    assert (comp.classes[face.alpha == 0] == C.TEXTURE).all()


def test_occluders_over_texture_union_mask() -> None:
    face = _face(3)
    rng = np.random.default_rng(5)
    layer = O.draw_occluders(face.geometry, rng, ["hand", "sticker"], skin_tone=0.5)
    bg = O.texture_background(rng)
    comp = O.composite(face, layer, bg)
    _check_exact(face, comp)
    np.testing.assert_array_equal(comp.ood_mask, layer.mask | (face.alpha < 1.0))


def test_edited_scene_keeps_occluder_and_texture_pixels() -> None:
    z = A.sample_z(np.random.default_rng(4))
    face = R.render(z)
    rng = np.random.default_rng(9)
    layer = O.draw_occluders(face.geometry, rng, ["hand", "sunglasses", "bar"], skin_tone=0.4)
    scene = O.Scene(z, layer, O.texture_background(rng))
    base = scene.render()
    covered = layer.alpha == 1.0
    background = face.alpha == 0.0
    assert covered.sum() > 20 and background.sum() > 20
    for attr in ("smile", "age"):
        for d in (-2.0, 2.0):
            edited = scene.edit(attr, d)
            np.testing.assert_array_equal(edited.image[covered], base.image[covered])
            np.testing.assert_array_equal(edited.image[background], base.image[background])
            np.testing.assert_array_equal(edited.ood_mask, base.ood_mask)
            # Outside the mask the edit is exactly the clean edited render.
            clean = R.render(A.edit_z(z, attr, d))
            _check_exact(clean, edited)


def test_clean_scene_is_the_render() -> None:
    z = A.sample_z(np.random.default_rng(6))
    comp = O.Scene(z).edit("smile", 1.0)
    ref = R.render(A.edit_z(z, "smile", 1.0))
    assert comp.image.tobytes() == ref.image.tobytes()
    assert not comp.ood_mask.any()


def test_bad_inputs() -> None:
    face = _face(0)
    with pytest.raises(ValueError):
        O.draw_occluders(face.geometry, np.random.default_rng(0), ["cape"])
    with pytest.raises(ValueError):
        O.texture_background(np.random.default_rng(0), name="astronaut")
    small = O.draw_occluders(face.geometry, np.random.default_rng(0), ["hat"], size=32)
    with pytest.raises(ValueError):
        O.composite(face, small)

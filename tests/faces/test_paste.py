"""Paste-back: round trip of the unedited crop, feathered masks, bit-identical outside."""

from __future__ import annotations

import numpy as np
import pytest

from dhr_cli import faces


@pytest.fixture(scope="module")
def aligned(astronaut: np.ndarray, mtcnn_faces) -> faces.AlignedFace:
    return faces.align(astronaut, mtcnn_faces[0], size=1024)


def test_round_trip_of_the_unedited_crop(astronaut: np.ndarray, aligned: faces.AlignedFace) -> None:
    """Acceptance: 0 grey levels outside the blend mask, <= 2 on average inside."""
    out = faces.paste_back(astronaut, aligned.image, aligned)
    alpha = faces.paste_alpha(astronaut.shape, aligned)
    diff = np.abs(out.astype(int) - astronaut.astype(int))
    inside = alpha > 0
    assert inside.sum() > 20000  # the face region (quad ~175 px wide)
    assert diff[~inside].max() == 0
    assert diff[inside].mean() <= 2.0
    assert out.dtype == np.uint8 and out.shape == astronaut.shape


def test_edit_changes_only_the_mask(astronaut: np.ndarray, aligned: faces.AlignedFace) -> None:
    edited = np.zeros_like(aligned.image)  # an extreme "edit": black
    yy, xx = np.mgrid[0:256, 0:256]
    circle = ((xx - 128) ** 2 + (yy - 140) ** 2 < 80**2).astype(np.float32)  # face mask at 256
    out = faces.paste_back(astronaut, edited, aligned, mask=circle, blend_radius=24)
    alpha = faces.paste_alpha(astronaut.shape, aligned, mask=circle, blend_radius=24)
    changed = (out != astronaut).any(axis=-1)
    assert not changed[alpha == 0].any()
    assert (out[alpha > 0.999] <= 2).all()  # fully replaced in the core
    # the mask is smaller than the square: fewer pixels change than with the default square
    assert (alpha > 0).sum() < (faces.paste_alpha(astronaut.shape, aligned) > 0).sum() * 0.6


def test_crop_size_and_matrix_forms_agree(
    astronaut: np.ndarray, aligned: faces.AlignedFace
) -> None:
    small = aligned.resized(256)
    a = faces.paste_back(astronaut, small, aligned)
    b = faces.paste_back(astronaut, small, aligned.crop_to_photo, align_size=1024)
    assert np.array_equal(a, b)
    diff = np.abs(a.astype(int) - astronaut).astype(float)
    assert diff[faces.paste_alpha(astronaut.shape, aligned, crop_size=256) > 0].mean() < 3.0


def test_feather_mask() -> None:
    m = faces.feather_mask(256, blend_radius=32)  # 8 px at 256
    assert m.dtype == np.float32 and m.shape == (256, 256)
    assert m[0].max() == 0 and m[:, -1].max() == 0 and m[128, 128] == 1.0
    assert 0 < m[128, 6] < 1  # the feathered band
    assert np.array_equal(faces.feather_mask(64, blend_radius=0), np.ones((64, 64), np.float32))
    hard = np.zeros((128, 128), np.float32)
    hard[32:96, 32:96] = 1
    fm = faces.feather_mask(256, hard, blend_radius=32)  # mask at another resolution
    assert fm[:60].max() == 0 and fm[128, 128] == 1.0


def test_partly_outside_and_identity(astronaut: np.ndarray, mtcnn_faces) -> None:
    x0, y0 = 150, 40
    part = np.ascontiguousarray(astronaut[y0:, x0:])
    al = faces.align(part, mtcnn_faces[0].landmarks - (x0, y0), size=256)
    out = faces.paste_back(part, al.image, al)
    assert out.shape == part.shape
    # synthetic pack: identity alignment pastes back to exactly the same image
    ident = faces.identity_alignment(astronaut[:256, :256].copy())
    same = faces.paste_back(ident.image, ident.image, ident, blend_radius=0)
    assert np.array_equal(same, ident.image)

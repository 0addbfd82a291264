"""FFHQ alignment: the recipe's template, exact transform bookkeeping, real-photo variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr_cli import faces
from dhr_cli.errors import BadData, ExitCode, InputMissing

VARIANTS = ("rotated90", "mirrored", "exif_rotated", "cmyk", "rgba")


def frontal_landmarks(centre=(200.0, 150.0), eye_dist=40.0, mouth_dist=40.0) -> np.ndarray:
    """Five points of an ideal upright frontal face (eyes level, mouth centred below)."""
    cx, cy = centre
    e, m = eye_dist / 2, mouth_dist
    return np.array(
        [
            [cx - e, cy],
            [cx + e, cy],
            [cx, cy + m / 2],
            [cx - e * 0.8, cy + m],
            [cx + e * 0.8, cy + m],
        ]
    )


@pytest.mark.parametrize("ratio", [0.8, 1.0, 1.1])
def test_recipe_puts_frontal_eyes_on_the_template(ratio: float) -> None:
    lm = frontal_landmarks(eye_dist=40.0, mouth_dist=40.0 * ratio)
    m = faces.quad_to_matrix(faces.ffhq_quad(lm), 1024)
    eyes = faces.photo_to_crop(lm[:2], m)
    assert np.allclose(eyes, faces.ffhq_template(1024, ratio), atol=1e-9)
    # the nominal template (ratio 1): x 0.375 / 0.625, y 0.475 of the crop (edge coordinates)
    assert np.allclose(faces.ffhq_template(1024) + 0.5, [[384, 486.4], [640, 486.4]])


def test_quad_and_matrix_bookkeeping() -> None:
    lm = frontal_landmarks()
    # rotate the face by 30 degrees about a point: the quad rotates with it
    a = np.radians(30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = (lm - 150) @ rot.T + 150
    quad = faces.ffhq_quad(lm)
    m = faces.quad_to_matrix(quad, 256)
    corners = np.array([[-0.5, -0.5], [-0.5, 255.5], [255.5, 255.5], [255.5, -0.5]])
    assert np.allclose(faces.crop_to_photo_points(corners, m), quad)
    assert np.allclose(faces.photo_to_crop(faces.crop_to_photo_points(corners, m), m), corners)
    # the same mapping for a 64 px version of the crop: pixel centre (u+0.5)*4-0.5
    m64 = faces.rescale_crop_matrix(m, 256, 64)
    u = np.array([[0.0, 0.0], [10.0, 20.0], [63.0, 63.0]])
    assert np.allclose(
        faces.crop_to_photo_points(u, m64), faces.crop_to_photo_points((u + 0.5) * 4 - 0.5, m)
    )
    # eye line is horizontal in the crop
    eyes = faces.photo_to_crop(lm[:2], m)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-9
    with pytest.raises(BadData):
        faces.ffhq_quad(np.zeros((5, 2)))


def _gradient_photo(w: int, h: int, offset: float = 0.0) -> np.ndarray:
    """R = x - offset, G = y - offset: linear, so resampling it is exact (up to 8-bit
    rounding) and any geometric offset of the crop shows up as a colour bias."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = np.stack([xx - offset, yy - offset, np.full_like(xx, 128 + offset)], axis=-1)
    return ramp.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("eye_dist", "out"),
    [(30.0, 64), (32.0, 32), (48.0, 32)],  # box-shrink factor 1, 2, 3
)
def test_crop_matches_recorded_transform(eye_dist: float, out: int) -> None:
    c = 256.0
    photo = _gradient_photo(512, 512, offset=c - 127)
    lm = frontal_landmarks((c, c - eye_dist / 3), eye_dist, eye_dist)
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = (lm - c) @ rot.T + c
    al = faces.align(photo, lm, size=out)
    assert al.image.shape == (out, out, 3) and al.size == out
    v, u = np.mgrid[3 : out - 3, 3 : out - 3]
    pts = faces.crop_to_photo_points(
        np.stack([u, v], -1).reshape(-1, 2).astype(float), al.crop_to_photo
    )
    expected = pts - (c - 127)
    assert expected.min() > 0 and expected.max() < 255  # the ramp is not clipped there
    err = al.image[3 : out - 3, 3 : out - 3, :2].reshape(-1, 2).astype(float) - expected
    assert np.abs(err.mean(axis=0)).max() < 0.1  # no offset: the geometry is exact
    assert np.abs(err).max() <= 1.5  # 8-bit rounding only
    rec = al.record()
    assert rec["quad"].shape == (4, 2) and rec["crop_to_photo"].shape == (3, 3)
    assert rec["quad"].dtype == np.float64 and rec["crop_to_photo"].dtype == np.float64


def test_face_near_the_border_is_padded(astronaut: np.ndarray, mtcnn_faces) -> None:
    # cut the photo so the face touches the top-left corner: the quad leaves the photo
    x0, y0 = 150, 40
    part = np.ascontiguousarray(astronaut[y0:, x0:])
    lm = mtcnn_faces[0].landmarks - (x0, y0)
    al = faces.align(part, lm, size=128)
    assert (faces.crop_to_photo_points([[0, 0]], al.crop_to_photo) < 0).all()
    # inside the photo the crop still follows the transform; outside it is filled, not black
    assert al.image[:8, :8].mean() > 20
    ref = faces.align(astronaut, mtcnn_faces[0].landmarks, size=128)
    assert np.abs(al.image[64:, 64:].astype(int) - ref.image[64:, 64:]).mean() < 1.0


def test_identity_alignment() -> None:
    img = _gradient_photo(64, 64)
    al = faces.identity_alignment(img)
    assert al.identity and al.image is img and np.array_equal(al.crop_to_photo, np.eye(3))
    assert np.allclose(al.quad, [[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]])
    assert np.allclose(faces.quad_to_matrix(al.quad, 64), np.eye(3))
    with pytest.raises(BadData):
        faces.identity_alignment(img[:, :32])


def test_encoder_input(astronaut: np.ndarray, mtcnn_faces) -> None:
    al = faces.align(astronaut, mtcnn_faces[0], size=512)
    assert al.face is mtcnn_faces[0]
    assert al.resized(256).shape == (256, 256, 3)
    t = al.to_tensor(256)
    assert tuple(t.shape) == (1, 3, 256, 256) and float(t.min()) >= -1.0 and float(t.max()) <= 1.0
    assert np.allclose(
        faces.crop_to_photo_points([[0, 0]], al.matrix_for(256)),
        faces.crop_to_photo_points([[0.5, 0.5]], al.crop_to_photo),
    )


def _eye_error(al: faces.AlignedFace) -> float:
    """Largest eye-centre distance from the template, in % of the crop, measured by
    detecting the face again in the aligned crop."""
    (face,) = faces.detect(al.image, detector="mtcnn", rotations=False)
    return float(np.abs(face.landmarks[:2] - faces.ffhq_template(al.size)).max() / al.size * 100)


def test_astronaut_eyes_on_template(astronaut: np.ndarray) -> None:
    photo, (al,) = faces.align_photo(faces.photo_from_array(astronaut), detector="mtcnn", size=256)
    assert _eye_error(al) < 2.0
    eyes = faces.photo_to_crop(al.face.landmarks[:2], al.crop_to_photo)
    assert np.abs(eyes - faces.ffhq_template(256)).max() / 256 * 100 < 2.0


@pytest.mark.parametrize("kind", VARIANTS)
def test_variants_detected_and_aligned(make_variant, kind: str, astronaut: np.ndarray) -> None:
    path, expected = make_variant(kind)
    photo, (al,) = faces.align_photo(path, detector="mtcnn", size=256)
    assert photo.rgb.shape == expected.shape
    assert np.abs(photo.rgb.astype(int) - expected).mean() < 6  # upright, right colours
    assert (photo.alpha is not None) == (kind == "rgba")
    assert _eye_error(al) < 2.0, kind


def _bomb(path: Path) -> None:
    import io
    import zlib

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = (30000).to_bytes(4, "big") * 2
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(raw))


def test_bad_inputs_through_align_photo(tmp_path: Path, astronaut: np.ndarray) -> None:
    """Each bad input is one clear DhrError with its documented exit code."""
    Image.fromarray(astronaut).save(tmp_path / "ok.jpg", quality=90)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("just text\n")
    (tmp_path / "dir.jpg").mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((120, 160, 3)) * 30 + 110).astype(np.uint8)).save(
        tmp_path / "wall.png"
    )
    Image.fromarray(astronaut).resize((128, 128)).save(tmp_path / "tiny.png")
    _bomb(tmp_path / "bomb.png")
    cases = {
        "missing.jpg": ExitCode.INPUT_MISSING,
        "dir.jpg": ExitCode.INPUT_MISSING,
        "empty.jpg": ExitCode.BAD_DATA,
        "truncated.jpg": ExitCode.BAD_DATA,
        "notes.jpg": ExitCode.BAD_DATA,
        "wall.png": ExitCode.BAD_DATA,  # no face
        "tiny.png": ExitCode.BAD_DATA,  # face too small
        "bomb.png": ExitCode.BAD_DATA,
    }
    for name, code in cases.items():
        with pytest.raises((InputMissing, BadData)) as e:
            faces.align_photo(tmp_path / name, detector="mtcnn")
        assert e.value.exit_code == code, name
        assert name in e.value.message and "\n" not in e.value.message, e.value.message

"""Fixtures for the faces tests: the astronaut photo, its variants as files, MTCNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dhr_cli import faces


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut: a real 512x512 photo with one face."""
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def mtcnn_faces(astronaut: np.ndarray) -> list[faces.Face]:
    """MTCNN's faces on the upright astronaut (computed once)."""
    return faces.detect(astronaut, detector="mtcnn")


VARIANTS = ("rotated90", "mirrored", "exif_rotated", "cmyk", "rgba")


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture
def make_variant(tmp_path: Path, astronaut: np.ndarray):
    """make_variant(kind) -> (file, expected upright RGB) for kind in VARIANTS."""
    return lambda kind: _write_variant(tmp_path, astronaut, kind)


@pytest.fixture(scope="session")
def exif_with_orientation():
    """exif_with_orientation(n) -> EXIF bytes holding only the orientation tag n."""
    return exif_bytes


def _write_variant(folder: Path, astronaut: np.ndarray, kind: str) -> tuple[Path, np.ndarray]:
    """Write an astronaut variant file; returns it and the upright RGB it should load as
    (before lossy compression)."""
    im = Image.fromarray(astronaut)
    if kind == "rotated90":  # pixels turned sideways, no EXIF tag
        rot = np.ascontiguousarray(np.rot90(astronaut, 1))
        path = folder / "rot90.png"
        Image.fromarray(rot).save(path)
        return path, rot
    if kind == "mirrored":
        mir = np.ascontiguousarray(astronaut[:, ::-1])
        path = folder / "mirrored.png"
        Image.fromarray(mir).save(path)
        return path, mir
    if kind == "exif_rotated":  # stored turned 90 CCW, tag 6 says: turn 90 CW to display
        path = folder / "exif6.jpg"
        Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1))).save(
            path, quality=95, exif=exif_bytes(6)
        )
        return path, astronaut
    if kind == "cmyk":
        path = folder / "cmyk.jpg"
        im.convert("CMYK").save(path, quality=95)
        return path, astronaut
    if kind == "rgba":
        alpha = np.full(astronaut.shape[:2], 255, np.uint8)
        alpha[:, :64] = 0  # a transparent band: composited on white
        alpha[-64:, :] = 128
        path = folder / "rgba.png"
        Image.fromarray(np.dstack([astronaut, alpha]), "RGBA").save(path)
        a = alpha[..., None].astype(np.float64) / 255
        expected = np.rint(astronaut * a + 255 * (1 - a)).astype(np.uint8)
        return path, expected
    raise ValueError(kind)

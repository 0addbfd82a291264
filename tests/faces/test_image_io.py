"""load_image / save_image: formats, modes, EXIF, ICC, alpha, quality, atomic writes, errors."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from dhr_cli.errors import BadData, ExitCode, InputMissing, OutputError, UsageError
from dhr_cli.faces import check_image, load_image, output_format, photo_from_array, save_image


@pytest.fixture(scope="module")
def small(astronaut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(astronaut[::4, ::4])  # 128x128


@pytest.mark.parametrize(
    ("fmt", "suffix", "tol"),
    [
        ("JPEG", ".jpg", 12),
        ("PNG", ".png", 0),
        ("WEBP", ".webp", 16),
        ("TIFF", ".tif", 0),
        ("BMP", ".bmp", 0),
    ],
)
def test_formats_load_as_rgb(
    tmp_path: Path, small: np.ndarray, fmt: str, suffix: str, tol: int
) -> None:
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(small).save(path, format=fmt)
    photo = load_image(path)
    assert photo.rgb.shape == small.shape and photo.rgb.dtype == np.uint8
    assert photo.format == fmt and photo.alpha is None
    assert np.abs(photo.rgb.astype(int) - small).mean() <= tol


def test_modes_become_rgb(tmp_path: Path, small: np.ndarray) -> None:
    im = Image.fromarray(small)
    grey = np.asarray(im.convert("L"))
    cases = {
        "p.png": im.convert("P"),
        "l.png": im.convert("L"),
        "one.png": im.convert("1"),
        "cmyk.jpg": im.convert("CMYK"),
        "ycbcr.jpg": im.convert("YCbCr"),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        photo = load_image(tmp_path / name)
        assert photo.rgb.shape == small.shape and photo.rgb.dtype == np.uint8, name
    assert np.array_equal(load_image(tmp_path / "l.png").rgb[..., 1], grey)
    assert np.abs(load_image(tmp_path / "cmyk.jpg").rgb.astype(int) - small).mean() < 12


def test_16bit_greyscale_keeps_full_range(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    photo = load_image(tmp_path / "g16.png")
    assert photo.rgb.dtype == np.uint8
    assert photo.rgb.min() == 0 and photo.rgb.max() == 255  # 65520 / 257 rounds to 255
    assert np.array_equal(photo.rgb[..., 0], np.rint(ramp / 257.0).astype(np.uint8))


def test_alpha_composited_on_white_and_kept_on_save(tmp_path: Path, small: np.ndarray) -> None:
    alpha = np.full(small.shape[:2], 255, np.uint8)
    alpha[:, :32] = 0
    alpha[:32, :] = 128
    Image.fromarray(np.dstack([small, alpha]), "RGBA").save(tmp_path / "a.png")
    photo = load_image(tmp_path / "a.png")
    assert np.array_equal(photo.alpha, alpha)
    assert (photo.rgb[32:, :32] == 255).all()  # transparent -> white
    assert np.array_equal(photo.rgb[40:, 40:], small[40:, 40:])  # opaque unchanged
    half = photo.rgb[:32, 40:].astype(int)
    assert np.abs(half - (small[:32, 40:].astype(int) * 128 + 255 * 127) / 255).max() <= 1
    out = save_image(tmp_path / "out.png", photo.rgb, like=photo)
    back = Image.open(out)
    assert back.mode == "RGBA" and np.array_equal(np.asarray(back)[..., 3], alpha)
    # JPEG has no alpha: written as RGB
    assert Image.open(save_image(tmp_path / "out.jpg", photo.rgb, like=photo)).mode == "RGB"


def test_palette_transparency(tmp_path: Path, small: np.ndarray) -> None:
    p = Image.fromarray(small).convert("P")
    p.info["transparency"] = 0
    p.save(tmp_path / "t.png", transparency=0)
    photo = load_image(tmp_path / "t.png")
    assert photo.alpha is not None and photo.rgb.shape == small.shape


@pytest.mark.parametrize(
    ("orientation", "k", "mirror"), [(3, 2, False), (6, -1, False), (8, 1, False), (2, 0, True)]
)
def test_exif_orientation_applied(
    tmp_path: Path, small: np.ndarray, exif_with_orientation, orientation: int, k: int, mirror: bool
) -> None:
    stored = np.ascontiguousarray(small[:, :96])  # non-square, so a wrong turn changes the shape
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif_with_orientation(orientation))
    photo = load_image(path)
    expected = stored[:, ::-1] if mirror else np.rot90(stored, k)
    assert np.array_equal(photo.rgb, expected)
    # the orientation tag is not carried to the output (the pixels are upright now)
    out = save_image(tmp_path / "o_out.png", photo.rgb, like=photo)
    assert Image.open(out).getexif().get(0x0112) in (None, 1)


def test_icc_profile_kept(tmp_path: Path, small: np.ndarray) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(small).save(tmp_path / "icc.jpg", icc_profile=icc)
    photo = load_image(tmp_path / "icc.jpg")
    assert photo.icc_profile == icc
    for suffix in (".jpg", ".png", ".webp", ".tif"):
        out = save_image(tmp_path / f"icc_out{suffix}", photo.rgb, like=photo)
        assert Image.open(out).info.get("icc_profile") == icc, suffix


def test_jpeg_keeps_source_quality_tables(tmp_path: Path, small: np.ndarray) -> None:
    Image.fromarray(small).save(tmp_path / "q.jpg", quality=70, subsampling=2)
    photo = load_image(tmp_path / "q.jpg")
    out = save_image(tmp_path / "q_out.jpg", photo.rgb, like=photo)
    src, dst = Image.open(tmp_path / "q.jpg"), Image.open(out)
    assert dst.quantization == src.quantization
    forced = Image.open(save_image(tmp_path / "q90.jpg", photo.rgb, like=photo, quality=90))
    assert forced.quantization != src.quantization


def test_output_format_rules(small: np.ndarray) -> None:
    photo = photo_from_array(small)
    photo.format = "JPEG"
    assert output_format("a.png") == "PNG"
    assert output_format("a.JPEG") == "JPEG"
    assert output_format("a.tif", format="webp") == "WEBP"
    assert output_format("a.out", like=photo) == "JPEG"
    assert output_format("a") == "PNG"
    with pytest.raises(UsageError):
        output_format("a.png", format="gif")


def test_save_is_atomic_and_overwrites(tmp_path: Path, small: np.ndarray) -> None:
    path = tmp_path / "sub" / "dir" / "x.png"  # missing folders are created
    save_image(path, small)
    save_image(path, small[::-1].copy())
    assert np.array_equal(np.asarray(Image.open(path)), small[::-1])
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(UsageError):
        save_image(tmp_path / "q.jpg", small, quality=0)


def test_save_unwritable_is_output_error(tmp_path: Path, small: np.ndarray) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as e:
        save_image(blocker / "x.png", small)
    assert e.value.exit_code == ExitCode.OUTPUT_ERROR
    with pytest.raises(OutputError):
        save_image(tmp_path, small)  # a directory as the output file


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    return bytes(raw)


def test_bad_inputs_are_clear_errors(tmp_path: Path, small: np.ndarray) -> None:
    Image.fromarray(small).save(tmp_path / "good.jpg", quality=90)
    whole = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, I am not a photo\n")
    (tmp_path / "bomb.png").write_bytes(_bomb_png(20000, 20000))
    (tmp_path / "folder.jpg").mkdir()
    cases = {
        "missing.jpg": (InputMissing, "not found"),
        "folder.jpg": (InputMissing, "directory"),
        "empty.jpg": (BadData, "empty"),
        "truncated.jpg": (BadData, "truncated"),
        "text.jpg": (BadData, "not an image"),
        "bomb.png": (BadData, "decompression bomb"),
    }
    for name, (kind, words) in cases.items():
        with pytest.raises(kind) as e:
            load_image(tmp_path / name)
        assert type(e.value) is kind, name
        assert words in e.value.message and name in e.value.message, e.value.message
        assert "\n" not in e.value.message
    assert Image.MAX_IMAGE_PIXELS == 89478485  # our limit is scoped, Pillow's default restored
    with pytest.raises(BadData, match="too large"):
        load_image(tmp_path / "good.jpg", max_pixels=100 * 100)

    # the header-only check raises the same errors, except for a body cut short
    for name, (kind, words) in cases.items():
        if name == "truncated.jpg":
            check_image(tmp_path / name)
            continue
        with pytest.raises(kind) as e:
            check_image(tmp_path / name)
        assert type(e.value) is kind and words in e.value.message, name
    check_image(tmp_path / "good.jpg")
    with pytest.raises(BadData, match="too large"):
        check_image(tmp_path / "good.jpg", max_pixels=100 * 100)


def test_unused_quality_only_when_no_output_is_jpeg_or_webp() -> None:
    from dhr_cli.faces import unused_quality

    assert unused_quality(None, ["a.png"]) is None
    assert (
        unused_quality(90, ["a.png", "b.tif"])
        == "--quality 90: not used, the images written are PNG, TIFF (lossless)"
    )
    assert unused_quality(90, ["a.png", "b.jpg"]) is None  # b's output uses it
    assert unused_quality(90, ["a.png"], format="webp") is None
    assert unused_quality(90, ["a.jpg"], format="png") is not None
    assert unused_quality(90, ["a.dhr"]) is None  # the photo's format is not known here

"""Reading and writing photos: any common file in, upright 8-bit RGB out, and back.

`load_image` never surprises: EXIF orientation is applied, every Pillow mode (palette,
greyscale, CMYK, RGBA, 16-bit, ...) becomes RGB, transparency is composited on white (the
alpha channel is kept for writing the result), an RGB ICC profile is kept for the output,
and a decompression bomb or a broken file is a clear `BadData`. `save_image` writes
atomically and, by default, in the input's format and JPEG quality tables.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..console import log
from ..errors import BadData, InputMissing, UsageError, first_line, not_found
from ..files import atomic_write, ensure_folder, open_regular

# Decompression-bomb limit. 100 MP leaves room for 50 MP camera files while refusing a
# small file that claims gigapixels; Pillow's own default (89 MP) would refuse 100 MP scans.
DEFAULT_MAX_PIXELS = 100_000_000
# File-size limit, checked before any decoding: the biggest image within the pixel limit
# (100 MP of 16-bit RGBA, uncompressed) is 800 MB; a bigger "image" is something else.
DEFAULT_MAX_BYTES = 1 << 30

# Output formats dhr writes, with their usual suffix; inputs in other formats (GIF, PPM, ...)
# are written as PNG so nothing is lost.
SAVE_FORMATS: dict[str, str] = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
_FORMAT_ALIASES = {
    "JPG": "JPEG",
    "JPEG": "JPEG",
    "MPO": "JPEG",  # phones' multi-picture JPEG
    "PNG": "PNG",
    "WEBP": "WEBP",
    "TIF": "TIFF",
    "TIFF": "TIFF",
    "BMP": "BMP",
}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
# File name suffixes that name an image (what `-o` of invert/mask must not be taken for)
IMAGE_SUFFIXES = tuple(f".{k.lower()}" for k in _FORMAT_ALIASES if k != "MPO")
_DEFAULT_QUALITY = 95


@dataclass
class Photo:
    """A decoded photo: upright RGB pixels plus what is needed to write a faithful output."""

    rgb: np.ndarray  # [H,W,3] uint8, EXIF orientation applied, alpha composited on white
    alpha: np.ndarray | None = None  # [H,W] uint8 when the input had transparency
    path: Path | None = None
    format: str | None = None  # Pillow format of the source file ("JPEG", "PNG", ...)
    icc_profile: bytes | None = None  # kept only when it describes RGB data
    exif: bytes | None = None  # with the orientation tag removed (pixels are upright)
    save_options: dict[str, Any] = field(default_factory=dict)  # quality tables, dpi, ...

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def name(self) -> str:
        """How messages refer to this photo."""
        return str(self.path) if self.path is not None else "image"


def as_rgb(image: Photo | np.ndarray) -> np.ndarray:
    """The [H,W,3] uint8 pixels of a `Photo` or an RGB array."""
    rgb = image.rgb if isinstance(image, Photo) else np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BadData(f"expected an RGB uint8 image [H,W,3], got {rgb.dtype} {list(rgb.shape)}")
    return rgb


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Photo:
    """Read an image file as an upright 8-bit RGB `Photo`.

    Raises InputMissing (missing, a directory, not a regular file, unreadable) or BadData
    (empty, not an image, corrupt or truncated, more than `max_pixels` pixels or `max_bytes`
    bytes).
    """
    path = Path(path)
    with _opened(path, max_pixels, max_bytes) as im:
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise _too_large(path, max_pixels) from e
        except MemoryError as e:
            raise BadData(f"{path} is too large to decode in memory") from e
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
            raise BadData(f"{path} is corrupt or truncated: {first_line(e)}") from e
        return _decode(im, path)


def check_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """The header-only part of `load_image`'s checks, with the same errors.

    Cheap, so a command can refuse a file that is no image before it loads (or downloads) any
    model; a truncated body is found only when the pixels are decoded.
    """
    with _opened(Path(path), max_pixels, max_bytes):
        pass


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int, max_bytes: int) -> Iterator[Image.Image]:
    """The lazily opened image (header read, size checked) under the pixel and byte limits;
    only a regular file is opened (a FIFO would block, a device never end)."""
    if not path.exists():
        raise not_found(path, "image")
    if path.is_dir():
        raise InputMissing(
            f"expected an image file, got a directory: {path}",
            hint=f"give the photos in it: {Path(path, '*.jpg')} (the shell expands the pattern)",
        )
    try:
        fh = open_regular(path, "image")
        size = os.fstat(fh.fileno()).st_size
    except OSError as e:
        raise InputMissing(f"cannot read {path}: {e.strerror or e}") from e
    if size == 0:
        fh.close()
        raise BadData(f"{path} is empty (0 bytes), not an image")
    if size > max_bytes:
        fh.close()
        raise BadData(
            f"{path} is too large ({size / 1e6:.0f} MB, more than {max_bytes / 1e6:g} MB); "
            "refused before decoding",
            hint="downscale or recompress the photo first",
        )
    with fh, _pixel_limit(max_pixels):
        try:
            im = Image.open(fh)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise _too_large(path, max_pixels) from e
        except UnidentifiedImageError as e:
            raise BadData(
                f"{path} is not an image file dhr can read",
                hint="use JPEG, PNG, WebP, TIFF or BMP",
            ) from e
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
            raise BadData(f"{path} is corrupt or truncated: {first_line(e)}") from e
        if im.size[0] * im.size[1] > max_pixels:
            raise _too_large(path, max_pixels, im.size)
        yield im


def photo_from_array(rgb: np.ndarray, *, alpha: np.ndarray | None = None) -> Photo:
    """Wrap an RGB uint8 array (a generated or synthetic image) as a `Photo`."""
    return Photo(rgb=as_rgb(rgb), alpha=alpha)


def _decode(im: Image.Image, path: Path) -> Photo:
    fmt = im.format
    if getattr(im, "n_frames", 1) > 1:
        log.debug(f"{path}: {im.n_frames} frames, using the first")
    save_options = _save_options_from(im)
    icc = im.info.get("icc_profile")
    try:
        upright = ImageOps.exif_transpose(im) or im
    except Exception as e:  # a broken EXIF block must not make the photo unreadable
        log.warn(f"{path}: ignoring unreadable EXIF orientation ({first_line(e)})")
        upright = im
    exif = _exif_without_orientation(upright)
    rgb, alpha, icc = _to_rgb(upright, icc)
    return Photo(
        rgb=rgb,
        alpha=alpha,
        path=path,
        format=fmt,
        icc_profile=icc,
        exif=exif,
        save_options=save_options,
    )


def _to_rgb(
    im: Image.Image, icc: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """Convert any Pillow mode to RGB uint8 (+ alpha); returns the ICC profile still valid."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = Image.fromarray(_to_8bit(np.asarray(im)), "L")
        mode = "L"
    if mode == "CMYK":
        rgb_im = _cmyk_to_rgb(im, icc)
        return np.asarray(rgb_im, dtype=np.uint8).copy(), None, None
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        alpha = rgba[..., 3].copy()
        a = alpha[..., None].astype(np.uint16)
        # composite on white: rgb * a + 255 * (255 - a), rounded
        rgb = ((rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(
            np.uint8
        )
    else:
        rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"), dtype=np.uint8).copy()
        alpha = None
    if icc is not None and not _is_rgb_profile(icc):
        icc = None  # a greyscale/CMYK profile does not describe the RGB output
    return rgb, alpha, icc


def _to_8bit(a: np.ndarray) -> np.ndarray:
    """16-bit / 32-bit / float greyscale to 8 bits (full range preserved)."""
    if a.dtype.kind == "f":
        hi = 1.0 if np.nanmax(a, initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(np.nan_to_num(a) * (255.0 / hi)), 0, 255).astype(np.uint8)
    hi = 255 if a.max(initial=0) <= 255 else 65535
    return np.clip(np.rint(a.astype(np.float64) * (255.0 / hi)), 0, 255).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc is not None:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                im, src, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except Exception as e:  # a broken profile: fall back to Pillow's plain conversion
            log.debug(f"CMYK profile not usable ({first_line(e)}); plain conversion")
    return im.convert("RGB")


def _is_rgb_profile(icc: bytes) -> bool:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip() == "RGB"
    except Exception:
        return False


def _exif_without_orientation(im: Image.Image) -> bytes | None:
    try:
        exif = im.getexif()
        exif.pop(0x0112, None)  # Orientation: the pixels we return are already upright
        return exif.tobytes() if len(exif) else None
    except Exception:
        return None


def _save_options_from(im: Image.Image) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if "dpi" in im.info:
        opts["dpi"] = im.info["dpi"]
    if im.format in ("JPEG", "MPO"):
        from PIL import JpegImagePlugin

        # the source's quantisation tables and chroma subsampling reproduce its quality
        if getattr(im, "quantization", None):
            opts["qtables"] = {k: list(v) for k, v in im.quantization.items()}
        sampling = JpegImagePlugin.get_sampling(im)
        if sampling >= 0:
            opts["subsampling"] = sampling
        if im.info.get("progressive") or im.info.get("progression"):
            opts["progressive"] = True
    elif im.format == "TIFF":
        compression = im.info.get("compression")
        if compression and compression != "raw":
            opts["compression"] = compression
    elif im.format == "WEBP" and im.info.get("lossless"):
        opts["lossless"] = True
    return opts


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make Pillow's bomb check use our limit, and treat its warning as the error it is."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _too_large(path: Path, max_pixels: int, size: tuple[int, int] | None = None) -> BadData:
    dims = f"{size[0]} x {size[1]} pixels, " if size else ""
    return BadData(
        f"{path} is too large ({dims}more than {max_pixels / 1e6:g} megapixels); "
        "refused as a possible decompression bomb",
        hint="downscale the photo first",
    )


# --- saving ---------------------------------------------------------------------------------


def suffix_format(path: str | os.PathLike[str]) -> str | None:
    """The Pillow format dhr writes for a file name's suffix (None: not one it writes)."""
    return _FORMAT_ALIASES.get(Path(path).suffix.upper().lstrip("."))


def unused_quality(
    quality: int | None, paths: Sequence[str | os.PathLike[str]], format: str | None = None
) -> str | None:
    """A warning when `quality` cannot matter: every output (in `format`, else in the format of
    its path's suffix) is lossless. None when it may matter or a format is not known yet."""
    if quality is None:
        return None
    formats = {output_format("x", format)} if format else {suffix_format(p) for p in paths}
    if not formats or None in formats or formats & {"JPEG", "WEBP"}:
        return None
    written = ", ".join(sorted(f for f in formats if f is not None))
    return f"--quality {quality}: not used, the images written are {written} (lossless)"


def output_format(
    path: str | os.PathLike[str], format: str | None = None, like: Photo | None = None
) -> str:
    """The Pillow format to write: explicit `format`, else the path's suffix, else the
    source photo's format, else PNG."""
    if format:
        fmt = _FORMAT_ALIASES.get(format.upper().lstrip("."))
        if fmt is None:
            raise UsageError(
                f"unknown output format {format!r}",
                hint="use one of: " + ", ".join(s.lower() for s in SAVE_FORMATS),
            )
        return fmt
    if (own := suffix_format(path)) is not None:
        return own
    if like is not None and like.format and like.format.upper() in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[like.format.upper()]
    return "PNG"


def save_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    like: Photo | None = None,
    format: str | None = None,
    quality: int | None = None,
    keep_alpha: bool = True,
) -> Path:
    """Write `rgb` [H,W,3] uint8 atomically (temporary file + rename) and return the path.

    With `like` (the source photo) the output keeps its format, JPEG quantisation tables
    (same quality), chroma subsampling, ICC profile, EXIF (orientation reset), dpi and, when
    the sizes match and the format allows, its alpha channel. `quality` (1-100) overrides
    the JPEG/WebP quality. Raises OutputError when the file cannot be written.
    """
    path = Path(path)
    rgb = as_rgb(rgb)
    fmt = output_format(path, format, like)
    if quality is not None and not 1 <= quality <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {quality}")
    same_format = (
        like is not None
        and like.format is not None
        and _FORMAT_ALIASES.get(like.format.upper()) == fmt
    )

    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if (
        keep_alpha
        and like is not None
        and like.alpha is not None
        and fmt in _ALPHA_FORMATS
        and like.alpha.shape == rgb.shape[:2]
    ):
        im.putalpha(Image.fromarray(like.alpha, "L"))

    kwargs: dict[str, Any] = {}
    if like is not None:
        if like.icc_profile and fmt != "BMP":
            kwargs["icc_profile"] = like.icc_profile
        if like.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            kwargs["exif"] = like.exif
        if "dpi" in like.save_options and fmt in ("JPEG", "PNG", "TIFF"):
            kwargs["dpi"] = like.save_options["dpi"]
        if same_format:
            opts = like.save_options
            if fmt == "JPEG":
                if quality is None and "qtables" in opts:
                    kwargs["qtables"] = opts["qtables"]
                if "subsampling" in opts:
                    kwargs["subsampling"] = opts["subsampling"]
                if opts.get("progressive"):
                    kwargs["progressive"] = True
            elif fmt == "TIFF" and "compression" in opts:
                kwargs["compression"] = opts["compression"]
            elif fmt == "WEBP" and opts.get("lossless") and quality is None:
                kwargs["lossless"] = True
    if fmt in ("JPEG", "WEBP") and "qtables" not in kwargs:
        kwargs["quality"] = quality if quality is not None else _DEFAULT_QUALITY
    if fmt == "TIFF":
        kwargs.setdefault("compression", "tiff_lzw")

    _atomic_save(im, path, fmt, kwargs)
    return path


def _atomic_save(im: Image.Image, path: Path, fmt: str, kwargs: dict[str, Any]) -> None:
    ensure_folder(path)
    with atomic_write(path) as fh:
        im.save(fh, format=fmt, **kwargs)

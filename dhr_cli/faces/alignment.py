"""FFHQ alignment from five landmarks, with the exact crop <-> photo transform recorded.

The recipe is the one the FFHQ dataset was made with (Karras et al. 2019,
ffhq-dataset `recreate_aligned_images`), driven by eye centres and mouth corners:

    eye_avg = (eye_left + eye_right) / 2;  eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) / 2;  eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth);  x /= |x|
    x *= max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|);  y = rot90(x)
    c = eye_avg + 0.1 eye_to_mouth
    quad = [c - x - y, c - x + y, c + x + y, c + x - y]   (upper-left, lower-left,
                                                           lower-right, upper-right)

then: shrink big faces by an integer factor, crop the quad plus a border, pad what falls
outside the photo by reflection and blur/fade the padding, resample the quad to 4x the output
size bilinearly and reduce to the output size with Lanczos. Here the shrink is an exact box
reduction and the quad is tracked exactly, so `crop_to_photo` is the true mapping.

Eye template (what the acceptance test checks): for a frontal, upright face whose
eye-to-mouth distance m is at most 1/0.9 of the eye distance e, the quad half-side is 2e,
so in a crop of size S the eyes land at x = 0.375 S and 0.625 S, y = S (0.5 - 0.025 m / e);
for the typical m = e that is y = 0.475 S: (384, 486) and (640, 486) in a 1024 crop.

Coordinates: photo pixel (i, j) has its centre at (x=i, y=j); the same for crop pixels.
`crop_to_photo` maps homogeneous crop coordinates (x, y, 1) to photo coordinates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from ..errors import BadData
from .detection import DEFAULT_MIN_FACE, Face, WeightsResolver, detect, select_faces
from .image_io import DEFAULT_MAX_PIXELS, Photo, as_rgb, load_image

GENERATOR_SIZE = 1024  # FFHQ StyleGAN2
ENCODER_SIZE = 256  # e4e input


def ffhq_template(size: int = GENERATOR_SIZE, mouth_ratio: float = 1.0) -> np.ndarray:
    """Eye centres [2,2] (image-left eye first) that the recipe gives a frontal face in a
    `size` crop; `mouth_ratio` = eye-to-mouth / eye-to-eye distance (<= 1/0.9)."""
    y = size * (0.5 - 0.025 * mouth_ratio) - 0.5
    return np.array([[0.375 * size - 0.5, y], [0.625 * size - 0.5, y]])


@dataclass
class AlignedFace:
    """An FFHQ-aligned face crop and the exact transform back to the photo."""

    image: np.ndarray  # [S,S,3] uint8
    quad: np.ndarray  # [4,2] float64: the crop's outer corners in the photo (UL, LL, LR, UR)
    crop_to_photo: np.ndarray  # [3,3] float64: crop (x, y, 1) -> photo (x, y, 1)
    photo_size: tuple[int, int]  # (width, height) of the full-resolution photo
    face: Face | None = None
    identity: bool = False  # the crop IS the photo (synthetic pack renders)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def resized(self, size: int = ENCODER_SIZE) -> np.ndarray:
        """The crop at another resolution (e.g. the encoder's 256), Lanczos-resampled."""
        if size == self.size:
            return self.image
        return np.asarray(
            Image.fromarray(self.image).resize((size, size), Image.Resampling.LANCZOS)
        )

    def to_tensor(self, size: int | None = None):  # -> torch.Tensor
        """[1,3,s,s] float in [-1, 1] (the project's image convention)."""
        import torch

        img = self.image if size is None else self.resized(size)
        return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    def matrix_for(self, size: int) -> np.ndarray:
        """`crop_to_photo` for this crop resampled to `size` x `size`."""
        return rescale_crop_matrix(self.crop_to_photo, self.size, size)

    def record(self) -> dict[str, np.ndarray]:
        """What the project file stores: `align.quad` [4,2], `align.crop_to_photo` [3,3]."""
        return {
            "quad": self.quad.astype(np.float64),
            "crop_to_photo": self.crop_to_photo.astype(np.float64),
        }


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ quad [4,2] (UL, LL, LR, UR; photo coordinates) from five landmarks
    (eyes, nose, mouth corners)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_left, eye_right = lm[0], lm[1]
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[3] + lm[4]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise BadData("face landmarks are degenerate (eyes and mouth coincide); cannot align")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _rot90(v: np.ndarray) -> np.ndarray:
    # FFHQ's np.flipud(v) * [-1, 1]: rotate by 90 degrees (x right, y down)
    return np.array([-v[1], v[0]])


def quad_to_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """crop_to_photo [3,3] for a `size` crop whose outer corners are `quad` (UL, LL, LR, UR)."""
    quad = np.asarray(quad, dtype=np.float64)
    ex = (quad[3] - quad[0]) / size  # one crop pixel to the right
    ey = (quad[1] - quad[0]) / size  # one crop pixel down
    t = quad[0] + 0.5 * (ex + ey)  # centre of crop pixel (0, 0)
    return np.array([[ex[0], ey[0], t[0]], [ex[1], ey[1], t[1]], [0.0, 0.0, 1.0]])


def rescale_crop_matrix(crop_to_photo: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """The same mapping for the crop resampled from `from_size` to `to_size` pixels."""
    s = from_size / to_size
    # crop pixel centre u at to_size sits at (u + 0.5) * s - 0.5 at from_size
    resample = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])
    return np.asarray(crop_to_photo, dtype=np.float64) @ resample


def align(
    image: Photo | np.ndarray,
    face: Face | np.ndarray,
    *,
    size: int = GENERATOR_SIZE,
    transform_scale: int = 4,
    enable_padding: bool = True,
) -> AlignedFace:
    """FFHQ-align one face (a `Face` or its [5,2] landmarks) to a `size` x `size` crop.

    `transform_scale` is FFHQ's supersampling (transform_size = 4096 for 1024): the quad is
    resampled bilinearly at that many times the output size, then reduced with Lanczos.
    """
    rgb = as_rgb(image)
    landmarks = face.landmarks if isinstance(face, Face) else np.asarray(face, dtype=np.float64)
    quad = ffhq_quad(landmarks)
    work, quad_w = _prepare(rgb, quad, size, enable_padding)

    # Resample the quad (a square, so the QUAD map is affine) in edge coordinates.
    t_size = size * max(1, int(transform_scale))
    out = warp_float(
        work,
        (t_size, t_size),
        Image.Transform.QUAD,
        tuple((quad_w + 0.5).flatten()),
        Image.Resampling.BILINEAR,
        reduce_to=(size, size),
    )
    h, w = rgb.shape[:2]
    return AlignedFace(
        image=np.clip(np.rint(out), 0, 255).astype(np.uint8),
        quad=quad,
        crop_to_photo=quad_to_matrix(quad, size),
        photo_size=(w, h),
        face=face if isinstance(face, Face) else None,
    )


def warp_float(
    image: np.ndarray,
    size: tuple[int, int],
    method: Image.Transform,
    data: tuple[float, ...],
    resample: Image.Resampling,
    reduce_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """Pillow's geometric transform of an [H,W,C] image, computed in float32 per channel
    (Pillow's 8-bit transforms truncate, darkening every resampled pixel by ~0.5 level);
    optionally followed by a Lanczos reduction to `reduce_to`. Returns float32 [h,w,C]."""
    planes = []
    for ch in np.moveaxis(np.asarray(image, dtype=np.float32), -1, 0):
        plane = Image.fromarray(np.ascontiguousarray(ch), "F").transform(
            size, method, data, resample
        )
        if reduce_to is not None and reduce_to != size:
            plane = plane.resize(reduce_to, Image.Resampling.LANCZOS)
        planes.append(np.asarray(plane, dtype=np.float32))
    return np.stack(planes, axis=-1)


def _prepare(
    rgb: np.ndarray, quad: np.ndarray, size: int, enable_padding: bool
) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ's shrink, crop and pad steps: the working image (float32) and the quad in it."""
    h, w = rgb.shape[:2]
    qsize = np.hypot(*(quad[3] - quad[0]))  # side of the quad in photo pixels

    # Shrink: box-reduce by an integer factor when the face is much bigger than the output.
    f = max(1, int(np.floor(qsize / size * 0.5)))
    q = (quad + 0.5) / f - 0.5  # quad in the reduced photo's coordinates
    qsize /= f
    wr, hr = w // f, h // f  # whole blocks only, so the reduction is exact

    # Crop the quad plus a border (in reduced pixels).
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(q.min(0)).astype(int) - border
    hi = np.ceil(q.max(0)).astype(int) + border
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], wr), min(hi[1], hr)
    if x1 <= x0 or y1 <= y0:
        raise BadData("the face lies outside the photo; cannot align")
    block = rgb[y0 * f : y1 * f, x0 * f : x1 * f]
    if f > 1:
        block = block.reshape(y1 - y0, f, x1 - x0, f, 3).mean(axis=(1, 3))
    work = block.astype(np.float32)
    q = q - (x0, y0)

    # Pad what the quad needs beyond the photo: reflect, then blur and fade to the median.
    ch, cw = work.shape[:2]
    lo = np.floor(q.min(0)).astype(int)
    hi = np.ceil(q.max(0)).astype(int)
    pad = np.array(
        [
            max(-lo[0] + border, 0),
            max(-lo[1] + border, 0),
            max(hi[0] - cw + border, 0),
            max(hi[1] - ch + border, 0),
        ]
    )
    if enable_padding and pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        work = np.pad(work, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        ph, pw = work.shape[:2]
        yy, xx = np.ogrid[:ph, :pw]
        xx, yy = xx.astype(np.float32), yy.astype(np.float32)
        # 0 inside the photo, rising to 1 at the padded edge
        mask = np.maximum(
            1.0 - np.minimum(xx / pad[0], (pw - 1 - xx) / pad[2]),
            1.0 - np.minimum(yy / pad[1], (ph - 1 - yy) / pad[3]),
        )[..., None]
        blur = qsize * 0.02
        work += (gaussian_filter(work, [blur, blur, 0]) - work) * np.clip(
            mask * 3.0 + 1.0, 0.0, 1.0
        )
        work += (np.median(work, axis=(0, 1)) - work) * np.clip(mask, 0.0, 1.0)
        q = q + pad[:2]
    return work, q


def identity_alignment(image: np.ndarray) -> AlignedFace:
    """The alignment of an already aligned square render (synthetic pack): the identity."""
    rgb = as_rgb(image)
    s = rgb.shape[0]
    if rgb.shape[1] != s:
        raise BadData(f"an already aligned image must be square, got {rgb.shape[1]} x {s}")
    e = s - 0.5
    return AlignedFace(
        image=rgb,
        quad=np.array([[-0.5, -0.5], [-0.5, e], [e, e], [e, -0.5]]),
        crop_to_photo=np.eye(3),
        photo_size=(s, s),
        identity=True,
    )


def photo_to_crop(points: np.ndarray, crop_to_photo: np.ndarray) -> np.ndarray:
    """Map photo points [...,2] into crop coordinates."""
    inv = np.linalg.inv(crop_to_photo)
    pts = np.asarray(points, dtype=np.float64)
    return pts @ inv[:2, :2].T + inv[:2, 2]


def crop_to_photo_points(points: np.ndarray, crop_to_photo: np.ndarray) -> np.ndarray:
    """Map crop points [...,2] into photo coordinates."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ crop_to_photo[:2, :2].T + crop_to_photo[:2, 2]


def align_photo(
    source: str | os.PathLike[str] | Photo,
    *,
    detector: str = "retinaface",
    fast: bool = False,
    face: int | None = None,
    all_faces: bool = False,
    min_face: float = DEFAULT_MIN_FACE,
    size: int = GENERATOR_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: str = "cpu",
    weights: WeightsResolver | None = None,
) -> tuple[Photo, list[AlignedFace]]:
    """Photo file (or `Photo`) -> the photo and its aligned face(s): load, detect, pick, align.

    `face` is 1-based (1 = largest); `all_faces` returns every face of at least `min_face`
    px, largest first. Every expected failure is a DhrError (InputMissing, BadData, ...).
    """
    photo = source if isinstance(source, Photo) else load_image(source, max_pixels=max_pixels)
    faces = detect(
        photo,
        detector=detector,
        fast=fast,
        min_face=min_face,
        device=device,
        weights=weights,
    )
    chosen = select_faces(faces, face, all_faces)
    return photo, [align(photo, f, size=size) for f in chosen]

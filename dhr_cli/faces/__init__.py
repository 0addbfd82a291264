"""Faces in, faces out: photo I/O, face detection, FFHQ alignment and paste-back.

- `image_io`: `load_image` / `save_image` (any common format, EXIF, ICC, alpha, bombs);
- `detection`: `detect` / `find_faces` / `select_faces` (RetinaFace or MTCNN, five landmarks);
- `alignment`: `align` (FFHQ recipe) -> `AlignedFace` with the exact crop -> photo transform;
- `paste`: `paste_back` (inverse warp + feathered blend into the full-resolution photo).

Coordinates everywhere: pixel (i, j) has its centre at (x=i, y=j).
"""

from __future__ import annotations

from .alignment import (
    ENCODER_SIZE,
    GENERATOR_SIZE,
    AlignedFace,
    align,
    align_photo,
    crop_to_photo_points,
    ffhq_quad,
    ffhq_template,
    identity_alignment,
    photo_to_crop,
    quad_to_matrix,
    rescale_crop_matrix,
)
from .detection import (
    DEFAULT_MAX_SIDE,
    DEFAULT_MIN_FACE,
    DETECTORS,
    Face,
    detect,
    find_faces,
    load_detector,
    mtcnn_detector,
    retinaface_detector,
    select_faces,
)
from .image_io import (
    DEFAULT_MAX_PIXELS,
    SAVE_FORMATS,
    Photo,
    as_rgb,
    check_image,
    load_image,
    output_format,
    photo_from_array,
    save_image,
    suffix_format,
    unused_quality,
)
from .paste import DEFAULT_BLEND_RADIUS, feather_mask, paste_alpha, paste_back

__all__ = [
    "DEFAULT_BLEND_RADIUS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MIN_FACE",
    "DETECTORS",
    "ENCODER_SIZE",
    "GENERATOR_SIZE",
    "SAVE_FORMATS",
    "AlignedFace",
    "Face",
    "Photo",
    "align",
    "align_photo",
    "as_rgb",
    "check_image",
    "crop_to_photo_points",
    "detect",
    "feather_mask",
    "ffhq_quad",
    "ffhq_template",
    "find_faces",
    "identity_alignment",
    "load_detector",
    "load_image",
    "mtcnn_detector",
    "output_format",
    "paste_alpha",
    "paste_back",
    "photo_from_array",
    "photo_to_crop",
    "quad_to_matrix",
    "rescale_crop_matrix",
    "retinaface_detector",
    "save_image",
    "select_faces",
    "suffix_format",
    "unused_quality",
]

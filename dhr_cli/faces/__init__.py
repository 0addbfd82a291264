"""Faces in, faces out: photo I/O, face detection, FFHQ alignment and paste-back.

- `image_io`: `load_image` / `save_image` (any common format, EXIF, ICC, alpha, bombs);
- `detection`: `detect` / `find_faces` / `select_faces` (RetinaFace or MTCNN, five landmarks);
- `alignment`: `align` (FFHQ recipe) -> `AlignedFace` with the exact crop -> photo transform;
- `paste`: `paste_back` (inverse warp + feathered blend into the full-resolution photo).

Coordinates everywhere: pixel (i, j) has its centre at (x=i, y=j).

The names below load their module on first use, so that image I/O stays free of torch (the
command line names its files before any model loads).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_LAZY: dict[str, str] = {
    "ENCODER_SIZE": ".alignment",
    "GENERATOR_SIZE": ".alignment",
    "AlignedFace": ".alignment",
    "align": ".alignment",
    "align_photo": ".alignment",
    "crop_to_photo_points": ".alignment",
    "ffhq_quad": ".alignment",
    "ffhq_template": ".alignment",
    "identity_alignment": ".alignment",
    "photo_to_crop": ".alignment",
    "quad_to_matrix": ".alignment",
    "rescale_crop_matrix": ".alignment",
    "DEFAULT_MAX_SIDE": ".detection",
    "DEFAULT_MIN_FACE": ".detection",
    "DETECTORS": ".detection",
    "Face": ".detection",
    "detect": ".detection",
    "find_faces": ".detection",
    "load_detector": ".detection",
    "mtcnn_detector": ".detection",
    "retinaface_detector": ".detection",
    "select_faces": ".detection",
    "DEFAULT_MAX_PIXELS": ".image_io",
    "SAVE_FORMATS": ".image_io",
    "Photo": ".image_io",
    "as_rgb": ".image_io",
    "check_image": ".image_io",
    "load_image": ".image_io",
    "output_format": ".image_io",
    "photo_from_array": ".image_io",
    "save_image": ".image_io",
    "suffix_format": ".image_io",
    "unused_quality": ".image_io",
    "DEFAULT_BLEND_RADIUS": ".paste",
    "feather_mask": ".paste",
    "paste_alpha": ".paste",
    "paste_back": ".paste",
    "paste_faces": ".paste",
    "resize_rgb": ".paste",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

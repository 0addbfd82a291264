"""Face detection with five landmarks: RetinaFace (facexlib) or MTCNN.

Detection runs on a copy downscaled to at most `max_side` pixels (a 50 MP photo is
searched at ~1 MP); boxes and landmarks come back in full-resolution photo coordinates
(pixel (i, j) has its centre at x=i, y=j). When nothing is found upright, the photo is
searched again rotated by 90, 270 and 180 degrees, so sideways faces (a phone photo without
an orientation tag) are found too; landmarks keep their meaning (subject's eyes, nose, mouth
corners), which is all the FFHQ alignment needs to turn the face upright.

Weights are files named "retinaface-resnet50" (default), "retinaface-mobilenet" (`fast`),
"mtcnn-pnet"/"mtcnn-rnet"/"mtcnn-onet"; a `weights` resolver (name -> local path, the hub's in
`packs.shared.detector_weights`) finds them. Without one, MTCNN's come from an installed
facenet-pytorch wheel, which ships them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadData, ModelUnavailable, UsageError, first_line
from ..nets.checkpoints import torch_load
from ..nets.mtcnn import MTCNN
from .image_io import Photo, as_rgb

DETECTORS = ("retinaface", "mtcnn")
DEFAULT_MIN_FACE = 48.0  # pixels; smaller faces carry too little detail for a 1024 crop
DEFAULT_MAX_SIDE = 1280  # detection resolution cap (longest side)
_CONFIDENT = 0.99  # an upright face this sure ends the search over rotations
_MAX_ROLL = 30.0  # degrees of head roll still counted as upright

# A detector maps an RGB uint8 image to (boxes [N,4], scores [N], landmarks [N,5,2]) in
# pixel-edge coordinates of that image.
_Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
WeightsResolver = Callable[[str], Path]  # a weight file's name -> its local path


@dataclass(frozen=True, eq=False)  # identity equality: fields are arrays
class Face:
    """One detected face in photo coordinates (pixel centres at integers)."""

    box: np.ndarray  # [4] float64: x1, y1, x2, y2
    landmarks: np.ndarray  # [5,2] float64 (x, y): subject's right eye (image left when
    # upright), left eye, nose tip, right and left mouth corners
    score: float
    rotation: int = 0  # degrees counter-clockwise the photo was turned to find it

    @property
    def size(self) -> float:
        """Face size in pixels: geometric mean of the box's width and height."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return float(np.sqrt(max(w, 0.0) * max(h, 0.0)))


def detect(
    image: Photo | np.ndarray,
    *,
    detector: str = "retinaface",
    fast: bool = False,
    min_face: float = DEFAULT_MIN_FACE,
    max_side: int = DEFAULT_MAX_SIDE,
    rotations: bool = True,
    device: torch.device | str = "cpu",
    weights: WeightsResolver | None = None,
) -> list[Face]:
    """Find faces, largest first. Raises BadData when there is none at least `min_face` px.

    `detector` is "retinaface" (ResNet50; MobileNet with `fast`) or "mtcnn".
    """
    name = image.name if isinstance(image, Photo) else "image"
    faces = find_faces(
        image,
        detector=detector,
        fast=fast,
        max_side=max_side,
        rotations=rotations,
        device=device,
        weights=weights,
    )
    if not faces:
        raise BadData(
            f"no face found in {name}",
            hint="dhr needs a photo with a visible face (try --detector mtcnn or a larger photo)",
        )
    big = [f for f in faces if f.size >= min_face]
    if not big:
        raise BadData(
            f"the face in {name} is too small: {faces[0].size:.0f} px, minimum {min_face:g} px",
            hint="use a larger photo, crop closer to the face, or lower --min-face",
        )
    return big


def find_faces(
    image: Photo | np.ndarray,
    *,
    detector: str = "retinaface",
    fast: bool = False,
    max_side: int = DEFAULT_MAX_SIDE,
    rotations: bool = True,
    device: torch.device | str = "cpu",
    weights: WeightsResolver | None = None,
) -> list[Face]:
    """All faces the detector finds (any size), largest first; possibly empty."""
    rgb = as_rgb(image)
    run = load_detector(detector, fast=fast, device=str(device), weights=weights)
    small, scale = _downscale(rgb, max_side)
    h, w = small.shape[:2]
    views: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for k in (0, 1, 3, 2) if rotations else (0,):
        views[k] = run(np.ascontiguousarray(np.rot90(small, k)))
        if k == 0 and _upright_score(views[0]) >= _CONFIDENT:
            break  # the usual case: one pass
    # the photo's orientation is the view with the most confident upright face
    k = max(views, key=lambda v: (_upright_score(views[v]), len(views[v][0]) > 0, v == 0))
    boxes, scores, lms = views[k]
    faces = []
    for box, score, lm in zip(boxes, scores, lms, strict=True):
        corners = _unrotate(box.reshape(2, 2), k, w, h)
        box = np.concatenate((corners.min(0), corners.max(0)))
        lm = _unrotate(lm, k, w, h)
        # edge coordinates of the detection image -> centre coordinates of the photo
        faces.append(
            Face(
                box=(box / scale - 0.5).astype(np.float64),
                landmarks=(lm / scale - 0.5).astype(np.float64),
                score=float(score),
                rotation=90 * k,
            )
        )
    faces.sort(key=lambda f: (f.size, f.score), reverse=True)
    return faces


def _upright_score(found: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Best score among faces that look upright in this view (MTCNN also fires, with
    scrambled landmarks, on sideways faces; their FFHQ roll angle gives them away)."""
    best = 0.0
    for score, lm in zip(found[1], found[2], strict=True):
        eye_to_eye = lm[1] - lm[0]
        eye_to_mouth = (lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2
        x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])  # FFHQ's x axis
        if abs(np.degrees(np.arctan2(x[1], x[0]))) <= _MAX_ROLL:
            best = max(best, float(score))
    return best


def select_faces(
    faces: list[Face], number: int | None = None, all_faces: bool = False
) -> list[Face]:
    """Faces to process: all of them, face `number` (1 = largest), or the largest."""
    if all_faces:
        return list(faces)
    if number is None:
        return faces[:1]
    if not 1 <= number <= len(faces):
        raise BadData(
            f"face {number} requested but {len(faces)} face{'s' if len(faces) != 1 else ''} found",
            hint=f"use --face 1..{len(faces)} (1 = largest) or --all-faces",
        )
    return [faces[number - 1]]


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    # per-axis rounding: use the mean of the two actual scale factors
    return np.asarray(small), (size[0] / w + size[1] / h) / 2


def _unrotate(points: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Map (x, y) edge coordinates in np.rot90(image, k) back to the unrotated image (W x H)."""
    x, y = points[..., 0], points[..., 1]
    if k == 0:
        ox, oy = x, y
    elif k == 1:  # rotated 90 degrees counter-clockwise
        ox, oy = w - y, x
    elif k == 2:
        ox, oy = w - x, h - y
    else:  # k == 3
        ox, oy = y, h - x
    return np.stack((ox, oy), axis=-1)


# --- detectors ------------------------------------------------------------------------------


def load_detector(
    detector: str = "retinaface",
    *,
    fast: bool = False,
    device: str = "cpu",
    weights: WeightsResolver | None = None,
) -> _Detector:
    """A ready detector (weights loaded once per process)."""
    if detector not in DETECTORS:
        raise UsageError(f"unknown detector {detector!r}", hint="use retinaface or mtcnn")
    if detector == "mtcnn":
        paths = tuple(weights_file(f"mtcnn-{n}", weights) for n in ("pnet", "rnet", "onet"))
        return mtcnn_detector(paths, device)
    name = "retinaface-mobilenet" if fast else "retinaface-resnet50"
    return retinaface_detector(weights_file(name, weights), fast, device)


def weights_file(name: str, weights: WeightsResolver | None = None) -> Path:
    """Local path of a detector weight file: through `weights`, else (MTCNN) from an installed
    facenet-pytorch."""
    if weights is not None:
        return weights(name)
    if name.startswith("mtcnn-"):
        return facenet_pytorch_weights(name)
    raise ModelUnavailable(
        f"model file {name!r} is not available here",
        hint="dhr fetches it through its model hub (`dhr models download`)",
    )


def facenet_pytorch_weights(name: str) -> Path:
    """facenet_pytorch/data/{pnet,rnet,onet}.pt of an installed facenet-pytorch, found without
    importing the package (it pins an old torch)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "data" / f"{name.removeprefix('mtcnn-')}.pt"
        if path.is_file():
            return path
    raise ModelUnavailable(
        f"MTCNN weights {name!r} not found: facenet-pytorch is not installed",
        hint="pip install --no-deps facenet-pytorch",
    )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """MTCNN's layers are too small to split across threads; on a busy CPU extra intra-op
    threads only spin (measured: 0.25 s vs 1.4 s per 512 px photo on 2 shared cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.lru_cache(maxsize=4)
def mtcnn_detector(paths: tuple[Path, Path, Path], device: str = "cpu") -> _Detector:
    """MTCNN from the P-, R- and O-Net weight files (cached per process)."""
    net = MTCNN()
    try:
        net.load_state_dicts(*(torch_load(p) for p in paths))
    except (RuntimeError, AttributeError, TypeError) as e:
        raise BadData(f"{paths[0].parent} does not hold MTCNN weights: {first_line(e)}") from e
    net.to(device)

    def run(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with _one_thread():
            det = net.detect(torch.from_numpy(rgb.copy()).permute(2, 0, 1), min_size=20.0)
        return det.boxes.cpu().numpy(), det.scores.cpu().numpy(), det.landmarks.cpu().numpy()

    return run


@functools.lru_cache(maxsize=4)
def retinaface_detector(
    path: Path, fast: bool = False, device: str = "cpu", threshold: float = 0.9
) -> _Detector:
    """facexlib's RetinaFace (ResNet50, or MobileNet-0.25 when `fast`) from a weight file
    (cached per process). `threshold` is the minimum face confidence."""
    name = "retinaface-mobilenet" if fast else "retinaface-resnet50"
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice for pretrained=False
        net = RetinaFace(
            network_name="mobile0.25" if fast else "resnet50",
            device=torch.device(device),
        )
    state = torch_load(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BadData(f"{path} is not a RetinaFace checkpoint (no state dict inside)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BadData(f"{path} does not match {name}: {first_line(e)}") from e
    net.eval()

    @torch.no_grad()
    def run(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # facexlib expects BGR; its priors use edge coordinates like MTCNN's boxes
        out = net.detect_faces(rgb[..., ::-1].astype(np.float32), conf_threshold=threshold)
        out = np.asarray(out, dtype=np.float64).reshape(-1, 15)
        return out[:, :4], out[:, 4], out[:, 5:].reshape(-1, 5, 2)

    return run

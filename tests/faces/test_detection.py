"""Face detection: MTCNN with facenet-pytorch's real weights, RetinaFace loading, selection."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhr_cli import faces
from dhr_cli.errors import BadData, ModelUnavailable, UsageError
from dhr_cli.faces.detection import facenet_pytorch_weights


def _check_astronaut_landmarks(face: faces.Face) -> None:
    """Plausible anatomy: the astronaut's face is around x 180-270, y 60-175."""
    lm = face.landmarks
    assert 170 < face.box[0] < 200 and 250 < face.box[2] < 280
    assert 50 < face.box[1] < 80 and 160 < face.box[3] < 190
    (lex, ley), (rex, rey), (nx, ny), (mlx, mly), (mrx, mry) = lm
    assert lex < nx < rex and abs(ley - rey) < 8  # eyes level, nose between them
    assert ny > max(ley, rey) and min(mly, mry) > ny  # nose below eyes, mouth below nose
    assert mlx < mrx
    assert 35 < rex - lex < 55  # interocular distance ~43 px


def test_mtcnn_finds_the_astronaut(mtcnn_faces: list[faces.Face]) -> None:
    assert len(mtcnn_faces) == 1
    face = mtcnn_faces[0]
    assert face.score > 0.99 and face.rotation == 0
    assert 90 < face.size < 115
    _check_astronaut_landmarks(face)
    assert face.landmarks.dtype == np.float64 and face.landmarks.shape == (5, 2)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sideways_faces_are_found_and_mapped_back(
    astronaut: np.ndarray, mtcnn_faces: list[faces.Face], k: int
) -> None:
    turned = np.ascontiguousarray(np.rot90(astronaut, k))
    (face,) = faces.detect(turned, detector="mtcnn")
    assert face.rotation != 0
    # map the upright detection into the turned image: np.rot90 moves pixel centre (x, y)
    h, w = astronaut.shape[:2]
    x, y = mtcnn_faces[0].landmarks.T
    expected = {1: (y, w - 1 - x), 2: (w - 1 - x, h - 1 - y), 3: (h - 1 - y, x)}[k]
    assert np.abs(face.landmarks - np.stack(expected, axis=1)).max() < 3.0


def test_no_rotation_search_when_disabled(astronaut: np.ndarray) -> None:
    turned = np.ascontiguousarray(np.rot90(astronaut, 1))
    assert faces.find_faces(turned, detector="mtcnn", rotations=False) == []


def test_no_face_and_too_small(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noise = (rng.random((160, 200, 3)) * 40 + 100).astype(np.uint8)
    with pytest.raises(BadData, match="no face found"):
        faces.detect(noise, detector="mtcnn")
    tiny = np.asarray(Image.fromarray(astronaut).resize((160, 160), Image.Resampling.LANCZOS))
    with pytest.raises(BadData, match="too small") as e:
        faces.detect(tiny, detector="mtcnn", min_face=48)
    assert "--min-face" in str(e.value)
    (face,) = faces.detect(tiny, detector="mtcnn", min_face=20)
    assert 25 < face.size < 40


def test_big_photo_detected_on_a_downscaled_copy(
    astronaut: np.ndarray, mtcnn_faces: list[faces.Face]
) -> None:
    big = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.Resampling.BICUBIC))
    (face,) = faces.detect(big, detector="mtcnn", max_side=512)
    # full-resolution coordinates: 3x the 512 photo's (pixel centres: x' = 3x + 1)
    assert np.abs(face.landmarks - (mtcnn_faces[0].landmarks * 3 + 1)).max() < 6.0


def test_faces_sorted_by_size_and_selected(astronaut: np.ndarray) -> None:
    canvas = np.full((512, 800, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[100:356, 530:786] = np.asarray(Image.fromarray(astronaut).resize((256, 256)))
    found = faces.detect(canvas, detector="mtcnn")
    assert len(found) == 2
    assert found[0].size > found[1].size and found[0].box[0] < 512 <= found[1].box[0]
    assert faces.select_faces(found) == [found[0]]
    assert faces.select_faces(found, 2) == [found[1]]
    assert faces.select_faces(found, all_faces=True) == found
    with pytest.raises(BadData, match="face 3 requested but 2 faces found"):
        faces.select_faces(found, 3)
    # a minimum size between the two keeps only the big one
    assert len(faces.detect(canvas, detector="mtcnn", min_face=found[1].size + 1)) == 1


def test_detector_weights_and_errors(tmp_path: Path) -> None:
    paths = [facenet_pytorch_weights(f"mtcnn-{n}") for n in ("pnet", "rnet", "onet")]
    assert [p.name for p in paths] == ["pnet.pt", "rnet.pt", "onet.pt"]
    with pytest.raises(UsageError):
        faces.load_detector("haar")
    # no resolver for RetinaFace weights, or the hub's offline with an empty cache: a clear
    # ModelUnavailable
    with pytest.raises(ModelUnavailable):
        faces.load_detector("retinaface", fast=True)
    from dhr_cli.packs.shared import detector_weights

    with pytest.raises(ModelUnavailable):
        faces.load_detector("retinaface", fast=True, weights=detector_weights(tmp_path, True))
    with pytest.raises(BadData):
        faces.retinaface_detector(paths[0], fast=True)  # an MTCNN file is not RetinaFace


def test_retinaface_runs_from_a_state_dict_file(tmp_path: Path) -> None:
    """Real RetinaFace weights need the network; a random-weight file with the published
    layout ('module.' prefixes) must load and run end to end."""
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = RetinaFace("mobile0.25", device=torch.device("cpu"))
    torch.manual_seed(0)
    path = tmp_path / "retina.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    run = faces.retinaface_detector(path, fast=True)
    rgb = np.zeros((96, 128, 3), np.uint8)
    boxes, scores, lms = run(rgb)
    assert boxes.shape[1:] == (4,) and lms.shape[1:] == (5, 2) and len(scores) == len(boxes)

"""MTCNN modules: facenet-pytorch's shipped weights load strictly; shapes; cascade edge cases."""

from __future__ import annotations

import torch

from dhr_cli.faces.detection import facenet_pytorch_weights
from dhr_cli.nets.checkpoints import torch_load
from dhr_cli.nets.mtcnn import MTCNN, ONet, PNet, RNet, _nms_min


def _loaded() -> MTCNN:
    net = MTCNN()
    net.load_state_dicts(
        *(torch_load(facenet_pytorch_weights(f"mtcnn-{n}")) for n in ("pnet", "rnet", "onet"))
    )
    return net


def test_shipped_weights_load_strictly_and_shapes() -> None:
    net = _loaded()
    prob, reg = net.pnet(torch.zeros(2, 3, 12, 12))
    assert prob.shape == (2, 1, 1) and reg.shape == (2, 4, 1, 1)
    prob, reg = net.pnet(torch.zeros(1, 3, 100, 60))
    assert prob.shape == (1, 45, 25)  # stride 2, 12 px window
    p, r = net.rnet(torch.zeros(3, 3, 24, 24))
    assert p.shape == (3,) and r.shape == (3, 4)
    p, r, lm = net.onet(torch.zeros(3, 3, 48, 48))
    assert p.shape == (3,) and r.shape == (3, 4) and lm.shape == (3, 10)
    assert ((p >= 0) & (p <= 1)).all()
    for cls in (PNet, RNet, ONet):
        assert not any(k.startswith("pool") for k in cls().state_dict())


def test_blank_image_gives_no_detections() -> None:
    det = _loaded().detect(torch.full((3, 64, 80), 128, dtype=torch.uint8))
    assert (
        det.boxes.shape == (0, 4) and det.scores.shape == (0,) and det.landmarks.shape == (0, 5, 2)
    )


def test_nms_min_drops_nested_boxes() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 2, 6, 6], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.95, 0.8])
    keep = _nms_min(boxes, scores, 0.7)
    assert keep.tolist() == [1, 2]  # the small box inside the big one wins by score; big dropped

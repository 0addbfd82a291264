"""MTCNN face detector (Zhang et al. 2016, "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks"): P-Net, R-Net, O-Net and their cascade.

Layer names match the state dicts that the `facenet-pytorch` wheel ships
(facenet_pytorch/data/{pnet,rnet,onet}.pt, converted from the authors' Caffe models), so
those weights load directly. Facts about that conversion that the modules follow:
convolutions take ordinary RGB images [B,3,H,W] normalised as (x - 127.5) / 128; the dense
layers expect the last feature map flattened in (W, H, C) order (the Caffe models were
trained on transposed images); box regressions are (dx1, dy1, dx2, dy2) as fractions of the
box size; O-Net's ten landmark outputs are five x then five y, as fractions of the box.

No file I/O here: `MTCNN.load_state_dicts` takes the three state dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms, roi_align


def _conv_prelu(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, kernel_size=k), nn.PReLU(cout)


def _flatten_whc(x: Tensor) -> Tensor:
    # The converted dense weights index the feature map as (W, H, C).
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Face probability map [B,H',W'] and box regression map [B,4,H',W']."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Face probability [B] and box regression [B,4]."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: final score, box and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Face probability [B], box regression [B,4], landmarks [B,10] (5 x then 5 y)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


@dataclass
class Detections:
    """MTCNN output in pixel-edge coordinates (pixel i spans [i, i+1))."""

    boxes: Tensor  # [N,4] x1, y1, x2, y2
    scores: Tensor  # [N]
    landmarks: Tensor  # [N,5,2] (x, y): image-left eye, image-right eye, nose, mouth corners


class MTCNN(nn.Module):
    """The three-stage cascade: image pyramid + P-Net, then R-Net, then O-Net."""

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.thresholds = thresholds
        self.factor = factor
        self.eval()

    def load_state_dicts(self, pnet: dict, rnet: dict, onet: dict) -> None:
        """Load the three networks' weights (strict: every key must match)."""
        self.pnet.load_state_dict(pnet)
        self.rnet.load_state_dict(rnet)
        self.onet.load_state_dict(onet)

    @torch.no_grad()
    def detect(self, image: Tensor, min_size: float = 20.0) -> Detections:
        """Detect faces in one RGB image [3,H,W] with values 0..255 (uint8 or float).

        `min_size` is the smallest face side (pixels) searched for; a larger value
        shortens the pyramid and makes detection faster.
        """
        device = next(self.parameters()).device
        img = ((image.to(device=device, dtype=torch.float32) - 127.5) / 128.0)[None]
        empty = Detections(
            torch.zeros(0, 4, device=device),
            torch.zeros(0, device=device),
            torch.zeros(0, 5, 2, device=device),
        )

        boxes, scores = self._stage1(img, max(float(min_size), 12.0))
        if len(boxes) == 0:
            return empty

        # Stage 2: R-Net re-scores and refines every proposal on a 24x24 crop.
        prob, reg = self.rnet(self._crops(img, boxes, 24))
        keep = prob > self.thresholds[1]
        boxes, scores, reg = boxes[keep], prob[keep], reg[keep]
        keep = nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], reg[keep]))
        if len(boxes) == 0:
            return empty

        # Stage 3: O-Net gives the final score, box and the five landmarks.
        prob, reg, lm = self.onet(self._crops(img, boxes, 48))
        keep = prob > self.thresholds[2]
        boxes, scores, reg, lm = boxes[keep], prob[keep], reg[keep], lm[keep]
        wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        landmarks = boxes[:, None, :2] + wh * torch.stack((lm[:, :5], lm[:, 5:]), dim=-1)
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes, scores, 0.7)
        return Detections(boxes[keep], scores[keep], landmarks[keep])

    def _stage1(self, img: Tensor, min_size: float) -> tuple[Tensor, Tensor]:
        """P-Net over an image pyramid: candidate square boxes and their scores."""
        h, w = img.shape[-2:]
        scale = 12.0 / min_size
        side = min(h, w) * scale
        all_boxes, all_scores = [], []
        while side >= 12:
            size = (math.ceil(h * scale), math.ceil(w * scale))
            level = F.interpolate(img, size=size, mode="bilinear", antialias=True)
            prob, reg = self.pnet(level)
            ys, xs = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if len(ys):
                # each output cell is a 12x12 window at stride 2 of the scaled image
                x1 = xs.float() * 2 / scale
                y1 = ys.float() * 2 / scale
                cell = torch.stack((x1, y1, x1 + 12 / scale, y1 + 12 / scale), dim=1)
                sc = prob[0, ys, xs]
                keep = nms(cell, sc, 0.5)
                all_boxes.append(_regress(cell[keep], reg[0][:, ys, xs].T[keep]))
                all_scores.append(sc[keep])
            scale *= self.factor
            side *= self.factor
        if not all_boxes:
            return img.new_zeros(0, 4), img.new_zeros(0)
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        keep = nms(boxes, scores, 0.7)
        return _square(boxes[keep]), scores[keep]

    @staticmethod
    def _crops(img: Tensor, boxes: Tensor, size: int) -> Tensor:
        # roi_align resamples every box to size x size at once; outside the image it reads 0,
        # as the original zero-padded crops do.
        rois = torch.cat((boxes.new_zeros(len(boxes), 1), boxes), dim=1)
        return roi_align(img, rois, output_size=size, spatial_scale=1.0, aligned=True)


def _regress(boxes: Tensor, reg: Tensor) -> Tensor:
    """Apply (dx1, dy1, dx2, dy2) offsets given as fractions of the box size."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + reg * wh


def _square(boxes: Tensor) -> Tensor:
    """Grow each box to a square around its centre (the next stage's input is square)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat((centre - half, centre + half), dim=1)


def _nms_min(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """NMS with overlap = intersection / smaller area, which also drops boxes nested in others."""
    order = scores.argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        overlap = inter / torch.minimum(area[i], area[rest]).clamp(min=1e-9)
        order = rest[overlap <= threshold]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)

"""Class table of the synthetic face domain: the per-pixel labels the renderer and occluders emit.

This is the synthetic counterpart of a face-parsing model's output (CelebAMask-HQ's 19 classes).
Each class records:

- ``true_ood``: the pixel is outside what the synthetic generator can draw (ground truth for the
  out-of-domain mask: occluders and textured backgrounds);
- ``parsing_ood``: the class plays the role of CelebAMask-HQ's non-face classes that DHR's parsing
  step hands to the out-of-domain side (background, cloth, hat, jewellery). Note that the plain
  gradient background and the clothes are *in* the synthetic domain (the generator learns them)
  but still count as "parsing" classes, exactly as background/cloth do for a real parser;
- ``celebamask``: the closest CelebAMask-HQ class name(s), for mapping a real parser onto this
  table (``None`` where CelebAMask-HQ has no such class).

| id | name       | drawn by   | true_ood | parsing_ood | CelebAMask-HQ        |
|----|------------|------------|----------|-------------|----------------------|
| 0  | background | renderer   | no       | yes         | background           |
| 1  | skin       | renderer   | no       | no          | skin, neck, l_ear, r_ear |
| 2  | hair       | renderer   | no       | no          | hair                 |
| 3  | brows      | renderer   | no       | no          | l_brow, r_brow       |
| 4  | eyes       | renderer   | no       | no          | l_eye, r_eye         |
| 5  | nose       | renderer   | no       | no          | nose                 |
| 6  | mouth      | renderer   | no       | no          | mouth, u_lip, l_lip  |
| 7  | cloth      | renderer   | no       | yes         | cloth                |
| 8  | hat        | occluders  | yes      | yes         | hat                  |
| 9  | earring    | occluders  | yes      | yes         | ear_r (earring)      |
| 10 | glasses    | occluders  | yes      | no          | eye_g                |
| 11 | hand       | occluders  | yes      | no          | -                    |
| 12 | microphone | occluders  | yes      | no          | - (microphones, bars)|
| 13 | sticker    | occluders  | yes      | no          | -                    |
| 14 | texture    | occluders  | yes      | yes         | background           |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassInfo:
    """One row of the class table."""

    id: int
    name: str
    true_ood: bool
    parsing_ood: bool
    celebamask: tuple[str, ...] | None


CLASS_TABLE: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", False, True, ("background",)),
    ClassInfo(1, "skin", False, False, ("skin", "neck", "l_ear", "r_ear")),
    ClassInfo(2, "hair", False, False, ("hair",)),
    ClassInfo(3, "brows", False, False, ("l_brow", "r_brow")),
    ClassInfo(4, "eyes", False, False, ("l_eye", "r_eye")),
    ClassInfo(5, "nose", False, False, ("nose",)),
    ClassInfo(6, "mouth", False, False, ("mouth", "u_lip", "l_lip")),
    ClassInfo(7, "cloth", False, True, ("cloth",)),
    ClassInfo(8, "hat", True, True, ("hat",)),
    ClassInfo(9, "earring", True, True, ("ear_r",)),
    ClassInfo(10, "glasses", True, False, ("eye_g",)),
    ClassInfo(11, "hand", True, False, None),
    ClassInfo(12, "microphone", True, False, None),
    ClassInfo(13, "sticker", True, False, None),
    ClassInfo(14, "texture", True, True, ("background",)),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASS_TABLE)
CLASS_IDS: dict[str, int] = {c.name: c.id for c in CLASS_TABLE}
NUM_CLASSES = len(CLASS_TABLE)

BACKGROUND = CLASS_IDS["background"]
SKIN = CLASS_IDS["skin"]
HAIR = CLASS_IDS["hair"]
BROWS = CLASS_IDS["brows"]
EYES = CLASS_IDS["eyes"]
NOSE = CLASS_IDS["nose"]
MOUTH = CLASS_IDS["mouth"]
CLOTH = CLASS_IDS["cloth"]
HAT = CLASS_IDS["hat"]
EARRING = CLASS_IDS["earring"]
GLASSES = CLASS_IDS["glasses"]
HAND = CLASS_IDS["hand"]
MICROPHONE = CLASS_IDS["microphone"]
STICKER = CLASS_IDS["sticker"]
TEXTURE = CLASS_IDS["texture"]

#: Boolean lookup tables indexed by class id.
TRUE_OOD = np.array([c.true_ood for c in CLASS_TABLE], dtype=bool)
PARSING_OOD = np.array([c.parsing_ood for c in CLASS_TABLE], dtype=bool)

#: A distinct colour per class for overlays and sample sheets.
CLASS_COLORS = np.array(
    [
        (0, 0, 0),
        (230, 180, 150),
        (120, 70, 30),
        (40, 30, 20),
        (60, 120, 255),
        (255, 140, 0),
        (220, 20, 60),
        (90, 90, 160),
        (0, 200, 0),
        (255, 215, 0),
        (0, 255, 255),
        (255, 0, 255),
        (128, 128, 128),
        (255, 255, 255),
        (100, 60, 0),
    ],
    dtype=np.uint8,
)


def colorize(classes: np.ndarray) -> np.ndarray:
    """Map a class map (H, W) of ids to an RGB image (H, W, 3) uint8 for viewing."""
    return CLASS_COLORS[classes]

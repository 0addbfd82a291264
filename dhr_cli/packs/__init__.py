"""Model packs: everything one face domain needs. A pack is data (`settings.PackSettings`, read
from a description: the built-in ``ffhq.json`` and ``synthetic.json`` here, or a user's folder
with a ``pack.json``); `pack.Pack` loads its networks lazily, once per process.

``ffhq``  (files from the model hub; real photos)
    StyleGAN2 FFHQ config-f 1024, e4e (LSAP/pSp files load the same way), facexlib's BiSeNet
    (19 CelebAMask-HQ classes), LPIPS VGG/Alex, the e4e release's InterFaceGAN / GANSpace
    directions. Photos are detected and FFHQ-aligned. Settings are the authors' released ones.
``synthetic``  (files bundled in ``dhr_cli/synthetic/pack``; the offline synthetic face domain)
    A 64-px StyleGAN2 trained on the parametric renderer, an e4e-style encoder, a small parser
    over the 15 synthetic classes, attribute directions; inputs are aligned 64-px squares. Its
    segmentation settings are calibrated (`dhr_cli.synthetic.calibrate`) and read from the
    manifest's ``segmentation`` section.

Only this package's `settings` module is imported by the command line before a model is
needed; the rest loads torch.
"""

from __future__ import annotations

from pathlib import Path

from ..lazy import lazy_exports

_LAZY: dict[str, str] = {
    "BUILTIN": ".settings",
    "DEFAULT_PACK": ".settings",
    "PACK_NAMES": ".settings",
    "DirectionInfo": ".settings",
    "FileRef": ".settings",
    "PackSettings": ".settings",
    "SlicSettings": ".settings",
    "check_pack_name": ".settings",
    "pack_settings": ".settings",
    "require_files": ".require",
    "Pack": ".pack",
    "apply_cpu_threads": ".pack",
    "load_pack": ".pack",
    "random_pack": ".stand_in",
    "synthetic_pack_from": ".stand_in",
    "synthetic_settings": ".stand_in",
}
SYNTHETIC_DIR = Path(__file__).parent.parent / "synthetic" / "pack"

__all__ = sorted([*_LAZY, "SYNTHETIC_DIR"])


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

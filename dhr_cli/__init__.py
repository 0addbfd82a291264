"""dhr: edit faces in photos with StyleGAN2 inversion and Domain-Specific Hybrid Refinement.

The package root stays light (no torch import) so the CLI starts fast; the
Python API is re-exported lazily:

    import dhr_cli
    G = dhr_cli.load_generator("stylegan2-ffhq-config-f.pt")
    engine = dhr_cli.Engine(dhr_cli.load_pack("synthetic"), dhr_cli.EngineOptions(method="dhr"))
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access (PEP 562)
_LAZY: dict[str, str] = {
    "load_generator": ".nets.checkpoints",
    "load_encoder": ".nets.checkpoints",
    "load_pack": ".packs",
    "Engine": ".app.engine",
    "EngineOptions": ".app.options",
    "invert_photo": ".app.invert",
    "mask_photo": ".app.invert",
    "EditRequest": ".app.request",
    "EditSession": ".app.edit",
    "Project": ".project",
    "run_demo": ".demo",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

"""dhr: edit faces in photos with StyleGAN2 inversion and Domain-Specific Hybrid Refinement.

The package root stays light (no torch import) so the CLI starts fast; the
Python API is re-exported lazily:

    import dhr_cli
    G = dhr_cli.load_generator("stylegan2-ffhq-config-f.pt")
    engine = dhr_cli.Engine(dhr_cli.load_pack("synthetic"), dhr_cli.EngineOptions(method="dhr"))
"""

from __future__ import annotations

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


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dhr_cli' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

"""Does a model file load as the architecture its registry entry names?

A file without a published sha256 is trusted on first use (`trust.first_use_problem`); before
its hash is recorded it must load here, through dhr's own readers (restricted unpickler,
`torch.load(weights_only=True)`, safetensors: no code runs), as the network its entry claims,
with that network's parameter names and shapes. A pickle with a payload, a file of some other
network or a truncated download is refused and nothing is recorded.

Torch and the network definitions are imported inside the checks: the hub stays torch-free
until a file actually has to be checked.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import BadData, DhrError, first_line

Check = Callable[[Path], None]  # raises DhrError when the file is not the architecture


def _differences(found: Any, expected: dict[str, Any]) -> list[str]:
    return [
        f"{k} {getattr(found, k)!r} (expected {v!r})"
        for k, v in expected.items()
        if getattr(found, k) != v
    ]


def generator_check(**expected: Any) -> Check:
    """A check that the file holds a StyleGAN2 generator whose `GeneratorConfig` has the
    `expected` fields (size, style_dim, n_mlp, channels, ...)."""

    def check(path: Path) -> None:
        from .nets.checkpoints import load_generator

        differ = _differences(load_generator(path).config, expected)
        if differ:
            raise BadData(f"{path} holds another StyleGAN2 generator: " + ", ".join(differ))

    return check


def encoder_check(**expected: Any) -> Check:
    """A check that the file holds an e4e/pSp encoder whose `EncoderConfig` has the `expected`
    fields (n_styles, style_dim, stage_widths, ...)."""

    def check(path: Path) -> None:
        from .nets.checkpoints import load_encoder

        differ = _differences(load_encoder(path).config, expected)
        if differ:
            raise BadData(f"{path} holds another encoder: " + ", ".join(differ))

    return check


def _retinaface(network: str) -> Check:
    def check(path: Path) -> None:
        import torch
        from facexlib.detection.retinaface import RetinaFace

        from .nets.checkpoints import check_state_shapes, torch_load

        with warnings.catch_warnings(), torch.device("meta"):  # shapes only: no memory
            warnings.simplefilter("ignore")  # torchvision's notice for pretrained=False
            net = RetinaFace(network_name=network, device=torch.device("meta"))
        state = torch_load(path)  # as faces.detection reads it
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise BadData(f"{path} is not a RetinaFace checkpoint (no state dict inside)")
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
        check_state_shapes(net, state, source=path, what=f"RetinaFace {network}")

    return check


def _bisenet(path: Path) -> None:
    from .nets.parsing import load_parser

    load_parser(path)


def _arcface(path: Path) -> None:
    from .nets.identity import load_identity

    load_identity(path)


# registry `arch` name -> its check (tests add small architectures of their own)
ARCHITECTURES: dict[str, Check] = {
    "stylegan2-ffhq-1024": generator_check(
        size=1024,
        style_dim=512,
        n_mlp=8,
        # StyleGAN2 config-f: feature channels per resolution
        channels={4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32},
    ),
    "e4e-ir-se50-ffhq": encoder_check(
        n_styles=18,
        style_dim=512,
        stage_widths=(64, 128, 256, 512),
        stage_units=(3, 4, 14, 3),
        use_se=True,
        input_nc=3,
    ),
    "retinaface-resnet50": _retinaface("resnet50"),
    "retinaface-mobilenet0.25": _retinaface("mobile0.25"),
    "bisenet-parsing-19": _bisenet,
    "arcface-ir-se50": _arcface,
}


def load_problem(arch: str, path: Path) -> str | None:
    """Why `path` does not load as architecture `arch`, or None when it does."""
    check = ARCHITECTURES.get(arch)
    if check is None:
        return f"no way to check it as {arch!r} (a registry error)"
    try:
        check(Path(path))
    except DhrError as e:
        return f"it does not load as {arch}: {e.message}"
    except Exception as e:  # noqa: BLE001 - anything a hostile file provokes is a refusal
        return f"it does not load as {arch}: {type(e).__name__}: {first_line(e)}"
    return None

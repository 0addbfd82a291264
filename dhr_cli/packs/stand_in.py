"""Packs whose networks are built in memory: random weights at the synthetic pack's shapes
(tests, development without trained weights) and a synthetic pack read from another folder
(a pack being trained, a calibration candidate)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..errors import BadData
from ..nets.e4e import Encoder, EncoderConfig
from ..nets.parsing import SmallParser
from ..nets.stylegan2 import Generator, GeneratorConfig, resolutions
from ..synthetic import measure
from .pack import Pack
from .settings import PackSettings, pack_settings, read_json

__all__ = ["random_pack", "synthetic_pack_from", "synthetic_settings"]


def synthetic_settings(manifest: dict | None = None) -> PackSettings:
    """The synthetic pack's settings with the calibration of `manifest` (its "segmentation"
    section; {} = the documented fallbacks; None = the bundled manifest's)."""
    if manifest is None:
        return pack_settings("synthetic")
    return pack_settings("synthetic", calibration=dict(manifest.get("segmentation") or {}))


def synthetic_pack_from(folder: Path | str, *, device: str = "cpu") -> Pack:
    """A synthetic pack loaded from another folder with the bundled layout; no hub
    verification, settings from its manifest."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json", missing_ok=True)
    if not manifest:
        raise BadData(f"{folder} holds no manifest.json")
    modules = {
        "generator": measure.load_generator(folder / "generator.safetensors", device),
        "encoder": measure.load_encoder(folder / "encoder.safetensors", device),
        "parser": measure.load_parser(folder / "parser.safetensors", device),
    }
    if (folder / "directions.safetensors").is_file():
        modules["directions"] = measure.load_directions(folder / "directions.safetensors", device)
    settings = replace(synthetic_settings(manifest), provenance=f"folder {folder}")
    return Pack(settings, device=device, modules=modules)


def random_pack(
    seed: int = 0,
    *,
    settings: PackSettings | None = None,
    channels: dict[int, int] | None = None,
    style_dim: int = 64,
    n_mlp: int = 2,
) -> Pack:
    """A pack of the synthetic pack's shapes with randomly initialised generator, encoder and
    parser (real LPIPS from the hub)."""
    settings = settings or replace(synthetic_settings({}), provenance="random weights")
    settings = replace(settings, style_dim=style_dim)
    size = settings.generator_size
    torch.manual_seed(seed)
    g = Generator(
        GeneratorConfig(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channels=channels or {r: max(16, 128 // max(1, r // 8)) for r in resolutions(size)},
        )
    )
    with torch.no_grad():
        g.latent_avg.copy_(g.mean_latent(1000)[0])
    e = Encoder(
        EncoderConfig(
            input_size=settings.encoder_size,
            n_styles=g.n_latent,
            style_dim=style_dim,
            stage_widths=(8, 16, 16, 32),
            stage_units=(1, 1, 1, 1),
            se_reduction=4,
        )
    )
    with torch.no_grad():
        e.latent_avg.copy_(g.latent_avg.expand(g.n_latent, -1))
        for p in e.styles.parameters():
            p.mul_(0.01)  # codes near latent_avg, like a trained encoder's
    parser = SmallParser(
        len(settings.class_names),
        width=8,
        input_size=size,
        class_names=settings.class_names,
    )
    return Pack(
        settings,
        modules={"generator": g.eval(), "encoder": e.eval(), "parser": parser.eval()},
    )

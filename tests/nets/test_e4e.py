"""e4e encoder: golden equivalence with Encoder4Editing (IR-SE50), checkpoint layout, variants."""

from __future__ import annotations

import argparse
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dhr_cli.nets.checkpoints import encoder_from_state_dict, load_e4e
from dhr_cli.nets.e4e import Encoder, EncoderConfig
from dhr_cli.nets.stylegan2 import GeneratorConfig


def _stand_in(fixtures_dir):
    spec = importlib.util.spec_from_file_location(
        "make_stand_in", fixtures_dir / "reference" / "make_stand_in.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def e4e_state(fixtures_dir):
    """The IR-SE50 Encoder4Editing stand-in weights (~270M values; built once per module)."""
    layout = json.loads((fixtures_dir / "reference" / "e4e_layout.json").read_text())
    return _stand_in(fixtures_dir).stand_in_state_dict(
        layout["e4e_encoder4editing_irse50_1024"], "fan_in"
    )


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return load_file(str(fixtures_dir / "reference" / "e4e_golden.safetensors"))


def _assert_golden(codes, golden):
    exp = golden["expected.codes"]
    err = (codes - exp).abs().max().item()
    assert err <= 1e-4 * max(1.0, exp.abs().max().item()), err


@pytest.mark.slow
def test_e4e_golden(e4e_state, golden):
    latent_avg = torch.randn(18, 512)
    enc = encoder_from_state_dict(e4e_state, latent_avg=latent_avg)
    assert enc.config == EncoderConfig()  # IR-SE50, 18 styles, 256 px, progressive
    with torch.no_grad():
        _assert_golden(enc.codes(golden["input.image"]), golden)


@pytest.mark.slow
def test_e4e_checkpoint_from_layout(fixtures_dir, e4e_state, golden, tmp_path):
    """A stand-in e4e release file (encoder + config-f 1024 decoder + latent_avg + opts)."""
    layout = json.loads(
        (fixtures_dir / "reference" / "stylegan2_rosinality_layout.json").read_text()
    )
    decoder = _stand_in(fixtures_dir).stand_in_state_dict(
        layout["rosinality_config_f_1024"], "unit"
    )
    latent_avg = torch.randn(1, 512).repeat(18, 1)
    state = {f"encoder.{k}": v for k, v in e4e_state.items()}
    state.update({f"decoder.{k}": v for k, v in decoder.items()})
    opts = argparse.Namespace(
        encoder_type="Encoder4Editing", stylegan_size=1024, start_from_latent_avg=True
    )
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": state, "latent_avg": latent_avg, "opts": opts}, path)
    del state
    enc, gen = load_e4e(path)
    assert gen.config == GeneratorConfig.config_f(1024)
    assert torch.equal(gen.latent_avg, latent_avg[0])
    with torch.no_grad():
        w = enc(golden["input.image"])  # forward = codes + latent_avg
    _assert_golden(w - latent_avg, golden)


SMALL = EncoderConfig(
    input_size=64,
    n_styles=10,
    style_dim=64,
    stage_widths=(16, 32, 48, 64),
    stage_units=(1, 1, 2, 1),
)


def test_small_encoder_shapes_and_delta_structure():
    torch.manual_seed(0)
    enc = Encoder(SMALL).eval()
    enc.latent_avg.normal_()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        codes = enc.codes(x)
        assert codes.shape == (2, 10, 64)
        assert torch.allclose(enc(x), codes + enc.latent_avg, atol=1e-6)
        # progressive stage 0: a single w broadcast to every row (e4e's first training stage)
        enc.progressive_stage = 0
        flat = enc.codes(x)
        assert torch.allclose(flat, flat[:, :1].expand_as(flat))
        assert torch.allclose(flat[:, 0], codes[:, 0])
        enc.progressive_stage = 4  # rows 1..4 get deltas, the rest are w0
        part = enc.codes(x)
        assert torch.allclose(part[:, :5], codes[:, :5], atol=1e-6)
        assert torch.allclose(part[:, 5:], codes[:, :1].expand(-1, 5, -1))
        enc.progressive_stage = enc.n_styles - 1
        # a photo of another size is resized (antialiased bilinear) to the input size first
        big = F.interpolate(x, size=(128, 128), mode="nearest")
        small = F.interpolate(big, size=(64, 64), mode="bilinear", antialias=True)
        assert torch.allclose(enc(big), enc(small), atol=1e-5)


def test_psp_mode_predicts_rows_independently():
    torch.manual_seed(0)
    cfg = EncoderConfig(**{**SMALL.to_dict(), "progressive": False})
    enc = Encoder(cfg).eval()
    e4e = Encoder(SMALL).eval()
    e4e.load_state_dict(enc.state_dict())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        psp, prog = enc.codes(x), e4e.codes(x)
    assert torch.allclose(psp[:, 0], prog[:, 0], atol=1e-6)
    assert torch.allclose(prog[:, 1], prog[:, 0] + psp[:, 1], atol=1e-5)


def test_encoder_config_round_trip_and_validation():
    assert EncoderConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(ValueError):
        EncoderConfig(input_size=100)
    with pytest.raises(ValueError):
        EncoderConfig(stage_widths=(64, 128, 256))


def test_encoder_is_trainable():
    enc = Encoder(SMALL).train()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    enc(x).square().mean().backward()
    assert all(p.grad is not None for p in enc.parameters())

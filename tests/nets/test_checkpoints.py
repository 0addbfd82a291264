"""Generator / encoder checkpoint formats: rosinality, e4e/pSp, GANInverter, stylegan2-ada, dhr."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import load_file

import dhr_cli
from dhr_cli.errors import BadData, InputMissing
from dhr_cli.nets.checkpoints import (
    encoder_config_from_state_dict,
    load_e4e,
    load_encoder,
    load_generator,
    save_models,
)
from dhr_cli.nets.e4e import Encoder, EncoderConfig
from dhr_cli.nets.stylegan2 import GeneratorConfig

SMALL_ENCODER = EncoderConfig(
    input_size=64,
    n_styles=10,
    style_dim=64,
    stage_widths=(16, 32, 48, 64),
    stage_units=(1, 1, 2, 1),
)


def _stand_in(fixtures_dir):
    spec = importlib.util.spec_from_file_location(
        "make_stand_in", fixtures_dir / "reference" / "make_stand_in.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_golden(fixtures_dir):
    return load_file(str(fixtures_dir / "reference" / "stylegan2_tiny_golden.safetensors"))


@pytest.fixture(scope="module")
def tiny_state(tiny_golden):
    return {k[len("g_ema.") :]: v for k, v in tiny_golden.items() if k.startswith("g_ema.")}


@pytest.fixture(scope="module")
def small_encoder():
    torch.manual_seed(1)
    enc = Encoder(SMALL_ENCODER).eval()
    enc.latent_avg.normal_()
    return enc


def _check_tiny(gen, golden):
    assert gen.config.size == 64 and gen.config.channels == {4: 64, 8: 64, 16: 32, 32: 32, 64: 16}
    with torch.no_grad():
        out = gen(golden["input.wplus"])
    exp = golden["expected.img_from_wplus"]
    assert (out - exp).abs().max() <= 1e-4 * max(1.0, exp.abs().max().item())


def test_rosinality_1024_stand_in_through_load_generator(fixtures_dir, tmp_path):
    layout = json.loads(
        (fixtures_dir / "reference" / "stylegan2_rosinality_layout.json").read_text()
    )
    state = _stand_in(fixtures_dir).stand_in_state_dict(layout["rosinality_config_f_1024"], "unit")
    latent_avg = torch.randn(512)
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": state, "latent_avg": latent_avg}, path)
    gen = load_generator(path)
    assert gen.config == GeneratorConfig.config_f(1024)
    assert not gen.training and gen.n_latent == 18
    assert torch.equal(gen.latent_avg, latent_avg)
    own = gen.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    # the config-f 1024 stand-in restricted to <= 256 px equals the 256 stand-in, so an early
    # exit at 256 must reproduce the 256 golden image (one cheap forward instead of a 1024 one)
    golden = load_file(str(fixtures_dir / "reference" / "stylegan2_256_golden.safetensors"))
    w = torch.cat([golden["input.wplus"], golden["input.wplus"][:, -4:]], dim=1)
    with torch.no_grad():
        img = gen(w, stop_at=256)
    exp = golden["expected.img_from_wplus"]
    assert (img - exp).abs().max() <= 1e-4 * max(1.0, exp.abs().max().item())


def test_rosinality_training_checkpoint_without_latent_avg(tmp_path, tiny_state, tiny_golden):
    path = tmp_path / "050000.pt"
    torch.save({"g_ema": tiny_state, "args": argparse.Namespace(size=64)}, path)
    gen = load_generator(path)
    _check_tiny(gen, tiny_golden)
    assert torch.allclose(gen.latent_avg, gen.mean_latent(4096, seed=0)[0])


def test_rosinality_safetensors_loads(fixtures_dir, tiny_golden):
    gen = load_generator(fixtures_dir / "reference" / "stylegan2_tiny_golden.safetensors")
    _check_tiny(gen, tiny_golden)


def test_loading_does_not_touch_the_global_rng(tmp_path, tiny_state):
    path = tmp_path / "g.pt"
    torch.save({"g_ema": tiny_state}, path)
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    load_generator(path)
    assert torch.equal(torch.rand(3), a)


def _e4e_checkpoint(encoder, gen_state, opts):
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items() if k != "latent_avg"}
    state.update({f"decoder.{k}": v for k, v in gen_state.items()})
    return {"state_dict": state, "latent_avg": encoder.latent_avg.clone(), "opts": opts}


@pytest.mark.parametrize(
    "opts",
    [
        argparse.Namespace(encoder_type="Encoder4Editing", start_from_latent_avg=True),
        {"encoder_type": "Encoder4Editing", "stylegan_size": 64},
        None,
    ],
)
def test_e4e_layout(tmp_path, small_encoder, tiny_state, tiny_golden, opts):
    path = tmp_path / "e4e.pt"
    torch.save(_e4e_checkpoint(small_encoder, tiny_state, opts), path)
    enc, gen = load_e4e(path)
    assert enc.config == SMALL_ENCODER
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(enc(x), small_encoder(x), atol=1e-6)
    _check_tiny(gen, tiny_golden)
    assert torch.equal(gen.latent_avg, small_encoder.latent_avg[0])
    assert load_encoder(path).config == SMALL_ENCODER
    assert load_generator(path).config.size == 64


def test_psp_encoder_type_from_opts(tmp_path, small_encoder, tiny_state):
    opts = {"encoder_type": "GradualStyleEncoder", "start_from_latent_avg": False}
    path = tmp_path / "psp.pt"
    torch.save(_e4e_checkpoint(small_encoder, tiny_state, opts), path)
    enc = load_encoder(path)
    assert not enc.config.progressive and not enc.config.add_latent_avg
    ref = Encoder(SMALL_ENCODER.__class__(**{**SMALL_ENCODER.to_dict(), "progressive": False}))
    ref.load_state_dict(small_encoder.state_dict())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(enc(x), ref.eval().codes(x), atol=1e-6)
    opts["encoder_type"] = "BackboneEncoderUsingLastLayerIntoW"
    torch.save(_e4e_checkpoint(small_encoder, tiny_state, opts), path)
    with pytest.raises(BadData, match="unsupported encoder type"):
        load_encoder(path)


@pytest.mark.parametrize("nesting", ["state_dict", "flat"])
def test_ganinverter_toolbox_nesting(tmp_path, small_encoder, tiny_state, tiny_golden, nesting):
    enc_state = {
        f"module.encoder.{k}" if nesting == "state_dict" else f"encoder.module.{k}": v
        for k, v in small_encoder.state_dict().items()
        if k != "latent_avg"
    }
    latent_avg = small_encoder.latent_avg.clone()
    encoder_part = (
        {"state_dict": enc_state, "latent_avg": latent_avg}
        if nesting == "state_dict"
        else {**enc_state, "latent_avg": latent_avg}
    )
    decoder_part = {f"module.{k}": v for k, v in tiny_state.items()}
    path = tmp_path / "lsap_ffhq_r50.pt"
    torch.save({"encoder": encoder_part, "decoder": decoder_part}, path)
    enc, gen = load_e4e(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(enc(x), small_encoder(x), atol=1e-6)
    assert torch.equal(enc.latent_avg, latent_avg)
    _check_tiny(gen, tiny_golden)


def test_dhr_safetensors_round_trip(tmp_path, small_encoder, tiny_state, tiny_golden):
    gen = load_generator(_save_rosinality(tmp_path, tiny_state))
    gen.latent_avg.normal_()
    path = save_models(tmp_path / "pack.safetensors", generator=gen, encoder=small_encoder)
    gen2 = load_generator(path)
    assert gen2.config == gen.config and torch.equal(gen2.latent_avg, gen.latent_avg)
    _check_tiny(gen2, tiny_golden)
    enc2, gen3 = load_e4e(path)
    assert enc2.config == SMALL_ENCODER and gen3 is not None
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(enc2(x), small_encoder(x), atol=1e-6)
    only_gen = save_models(tmp_path / "g.safetensors", generator=gen)
    with pytest.raises(BadData, match="no encoder"):
        load_encoder(only_gen)


def _save_rosinality(tmp_path, state):
    path = tmp_path / "rosinality.pt"
    torch.save({"g_ema": state}, path)
    return path


def test_encoder_config_inference_from_state(small_encoder):
    assert encoder_config_from_state_dict(small_encoder.state_dict()) == SMALL_ENCODER


def test_errors_are_clear(tmp_path, tiny_state):
    with pytest.raises(InputMissing):
        load_generator(tmp_path / "nope.pt")
    path = _save_rosinality(tmp_path, tiny_state)
    with pytest.raises(BadData, match="no encoder"):
        load_encoder(path)
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(BadData):
        load_generator(junk)
    text = tmp_path / "model.pt"
    text.write_text("hello")
    with pytest.raises(BadData):
        load_generator(text)


def test_a_registry_name_is_not_a_path(tmp_path, monkeypatch):
    # the nets read the path they are given and nothing else: registry names are the pack's
    # business (packs.Pack resolves them through the hub; tests/test_packs.py)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputMissing):
        load_generator("stylegan2-ffhq-1024")


def test_package_exports_loaders():
    assert dhr_cli.load_generator is load_generator
    assert dhr_cli.load_encoder is load_encoder


# --- stylegan2-ada-pytorch pickles ---------------------------------------------------------


class _Persistent:
    """Pickles like a stylegan2-ada persistent-class object (torch_utils.persistence)."""

    def __init__(self, class_name, params=(), buffers=(), modules=(), **attrs):
        self.class_name = class_name
        self.params = OrderedDict(params)
        self.buffers = OrderedDict(buffers)
        self.modules = OrderedDict(modules)
        self.attrs = attrs

    def __reduce__(self):
        state = {
            "training": False,
            "_parameters": OrderedDict(
                (k, torch.nn.Parameter(v.clone())) for k, v in self.params.items()
            ),
            "_buffers": OrderedDict((k, v.clone()) for k, v in self.buffers.items()),
            "_modules": self.modules,
            **self.attrs,
        }
        meta = {
            "type": "class",
            "version": 6,
            "module_src": _EVIL_SOURCE,  # what unpickling with the real package would exec
            "class_name": self.class_name,
            "state": state,
        }
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


_EVIL_SOURCE = "import os\nopen(os.environ['DHR_TEST_MARKER'], 'w').write('executed')\n"


@pytest.fixture
def fake_ada_modules(monkeypatch):
    """Make `torch_utils.persistence` / `dnnlib.util` importable names so pickle can refer to them."""

    def _reconstruct_persistent_obj(meta):  # never called by dhr
        raise AssertionError("the real reconstructor must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = easydict
    for name, mod in (
        ("torch_utils", types.ModuleType("torch_utils")),
        ("torch_utils.persistence", persistence),
        ("dnnlib", types.ModuleType("dnnlib")),
        ("dnnlib.util", util),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    return easydict


def _ada_generator(state, w_avg, easydict, lr=0.01, conv_clamp=None):
    """Rosinality state -> stylegan2-ada object tree, by the inverse of the rename table."""
    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    style_dim = state["style.1.weight"].shape[1]
    fcs = {
        f"fc{i}": _Persistent(
            "FullyConnectedLayer",
            params={"weight": state[f"style.{i + 1}.weight"], "bias": state[f"style.{i + 1}.bias"]},
            activation="lrelu",
            weight_gain=lr / style_dim**0.5,
            bias_gain=lr,
        )
        for i in range(n_mlp)
    }
    mapping = _Persistent(
        "MappingNetwork", buffers={"w_avg": w_avg}, modules=fcs, num_layers=n_mlp, w_avg_beta=0.995
    )

    def fc(prefix):
        return _Persistent(
            "FullyConnectedLayer",
            params={
                "weight": state[f"{prefix}.modulation.weight"],
                "bias": state[f"{prefix}.modulation.bias"],
            },
            activation="linear",
            bias_gain=1.0,
        )

    def layer(src, noise_idx, up, filt):
        return _Persistent(
            "SynthesisLayer",
            params={
                "weight": state[f"{src}.conv.weight"][0],
                "noise_strength": state[f"{src}.noise.weight"].reshape(()),
                "bias": state[f"{src}.activate.bias"],
            },
            buffers={
                "resample_filter": filt,
                "noise_const": state[f"noises.noise_{noise_idx}"][0, 0],
            },
            modules={"affine": fc(f"{src}.conv")},
            up=up,
            conv_clamp=conv_clamp,
            activation="lrelu",
        )

    def torgb(src):
        return _Persistent(
            "ToRGBLayer",
            params={
                "weight": state[f"{src}.conv.weight"][0],
                "bias": state[f"{src}.bias"].reshape(3),
            },
            modules={"affine": fc(f"{src}.conv")},
            conv_clamp=conv_clamp,
        )

    default_filter = torch.tensor([1.0, 3, 3, 1])
    default_filter = torch.outer(default_filter, default_filter) / 64
    blocks = {
        "b4": _Persistent(
            "SynthesisBlock",
            params={"const": state["input.input"][0]},
            buffers={"resample_filter": default_filter},
            modules={"conv1": layer("conv1", 0, 1, default_filter), "torgb": torgb("to_rgb1")},
            in_channels=0,
        )
    }
    n_rgb = sum(1 for k in state if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    for k in range(n_rgb):
        r = 2 ** (k + 3)
        blocks[f"b{r}"] = _Persistent(
            "SynthesisBlock",
            buffers={"resample_filter": state[f"to_rgbs.{k}.upsample.kernel"] / 4},
            modules={
                "conv0": layer(
                    f"convs.{2 * k}", 2 * k + 1, 2, state[f"convs.{2 * k}.conv.blur.kernel"] / 4
                ),
                "conv1": layer(f"convs.{2 * k + 1}", 2 * k + 2, 1, default_filter),
                "torgb": torgb(f"to_rgbs.{k}"),
            },
            architecture="skip",
        )
    synthesis = _Persistent("SynthesisNetwork", modules=blocks, img_resolution=2 ** (n_rgb + 2))
    kwargs = easydict(z_dim=style_dim, w_dim=style_dim, mapping_kwargs=easydict(num_layers=n_mlp))
    return _Persistent(
        "Generator",
        modules={"synthesis": synthesis, "mapping": mapping},
        _init_kwargs=kwargs,
        z_dim=style_dim,
        c_dim=0,
    )


def test_stylegan2_ada_pickle_converts_without_executing_code(
    tmp_path, monkeypatch, fake_ada_modules, tiny_state, tiny_golden
):
    marker = tmp_path / "executed.txt"
    monkeypatch.setenv("DHR_TEST_MARKER", str(marker))
    w_avg = torch.randn(64)
    g_ema = _ada_generator(tiny_state, w_avg, fake_ada_modules)
    data = {
        "G": g_ema,
        "D": _Persistent("Discriminator", params={"x": torch.zeros(2)}),
        "G_ema": g_ema,
        "augment_pipe": None,
        "training_set_kwargs": fake_ada_modules(resolution=64),
    }
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps(data, protocol=3))  # stylegan2-ada's python 3.7 default
    gen = load_generator(path)
    assert not marker.exists()
    assert gen.config.lr_mlp == 0.01 and gen.config.conv_clamp is None
    assert torch.equal(gen.latent_avg, w_avg)
    _check_tiny(gen, tiny_golden)
    # the rosinality-layout generator built from the same weights renders the same image
    ref = load_generator(_save_rosinality(tmp_path, tiny_state))
    w = tiny_golden["input.wplus"]
    with torch.no_grad():
        assert torch.allclose(gen(w), ref(w), atol=1e-4)
    # ada-trained models clamp activations: the attribute is honoured
    path.write_bytes(
        pickle.dumps({"G_ema": _ada_generator(tiny_state, w_avg, fake_ada_modules, conv_clamp=256)})
    )
    assert load_generator(path).config.conv_clamp == 256


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_code_executing_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(BadData, match="could execute code"):
        load_generator(pkl)
    pt = tmp_path / "evil.pt"
    torch.save({"g_ema": _Evil(marker)}, pt)
    with pytest.raises(BadData, match="not plain weights"):
        load_generator(pt)
    with pytest.raises(BadData):
        load_encoder(pt)
    assert not marker.exists()

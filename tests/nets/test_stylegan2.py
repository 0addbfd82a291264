"""StyleGAN2 generator: golden equivalence with the reference implementation, and the hooks."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from dhr_cli.nets.stylegan2 import (
    Generator,
    GeneratorConfig,
    Upsample,
    _DepthwiseFIR,
    hybrid_feature,
)
from dhr_cli.packs import pack_settings


def _within(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    err = (got - expected).abs().max().item()
    return err, 1e-4 * max(1.0, expected.abs().max().item())


def _stand_in(fixtures_dir):
    spec = importlib.util.spec_from_file_location(
        "make_stand_in", fixtures_dir / "reference" / "make_stand_in.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    """The tiny golden generator (size 64, channels from the file's metadata) and its data."""
    path = fixtures_dir / "reference" / "stylegan2_tiny_golden.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    data = load_file(str(path))
    config = GeneratorConfig(
        size=int(meta["size"]),
        style_dim=int(meta["style_dim"]),
        n_mlp=int(meta["n_mlp"]),
        channels=json.loads(meta["channels"]),
        lr_mlp=float(meta["lr_mlp"]),
        blur_kernel=tuple(int(x) for x in meta["blur_kernel"].split(",")),
    )
    g = Generator(config)
    state = {k[len("g_ema.") :]: v for k, v in data.items() if k.startswith("g_ema.")}
    g.load_state_dict({**state, "latent_avg": torch.zeros(config.style_dim)})
    return g.eval(), data


def test_tiny_golden_from_z_and_wplus(tiny):
    g, data = tiny
    with torch.no_grad():
        w = g.mapping(data["input.z"])
        assert torch.allclose(g.as_wplus(w), data["expected.latent_from_z"], atol=1e-5)
        for latent, key in (
            (w, "expected.img_from_z"),
            (data["input.wplus"], "expected.img_from_wplus"),
        ):
            err, tol = _within(g(latent), data[key])  # batch 2: activation modulation
            assert err <= tol, (key, err, tol)
            err, tol = _within(g(latent[1:]), data[key][1:])  # batch 1: folded weights
            assert err <= tol, (key, err, tol)


def test_256_golden(fixtures_dir):
    layout = json.loads(
        (fixtures_dir / "reference" / "stylegan2_rosinality_layout.json").read_text()
    )
    state = _stand_in(fixtures_dir).stand_in_state_dict(layout["rosinality_config_f_256"], "unit")
    data = load_file(str(fixtures_dir / "reference" / "stylegan2_256_golden.safetensors"))
    g = Generator(GeneratorConfig.config_f(256))
    g.load_state_dict({**state, "latent_avg": torch.zeros(512)})
    g.eval()
    with torch.no_grad():
        w = g.mapping(data["input.z"])
        err, tol = _within(g.as_wplus(w), data["expected.latent_from_z"])
        assert err <= tol
        # one batch-2 forward covers both stored inputs
        img = g(torch.cat([g.as_wplus(w), data["input.wplus"]]))
    for i, key in enumerate(("expected.img_from_z", "expected.img_from_wplus")):
        err, tol = _within(img[i : i + 1], data[key])
        assert err <= tol, (key, err, tol)


def _upfirdn2d_reference(x, kernel, up, pad0, pad1):
    """Direct definition: zero-insert `up`, pad, convolve with the (flipped) kernel."""
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    k = kernel.flip(0, 1)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, k, groups=c)


def test_resampling_matches_upfirdn_definition(tiny):
    g, _ = tiny
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    k = torch.randn(4, 4, dtype=torch.float64)  # deliberately not symmetric
    up = g.to_rgbs[0].upsample
    up.kernel = k.clone()
    assert torch.allclose(up(x), _upfirdn2d_reference(x, k, 2, 2, 1), atol=1e-10)
    blur = g.convs[0].conv.blur
    assert blur.pad == (1, 1)
    blur.kernel = k.clone()
    assert torch.allclose(blur(x), _upfirdn2d_reference(x, k, 1, 1, 1), atol=1e-10)
    # other FIR lengths (asymmetric crops) follow the same definition
    for taps in ((1, 2, 1), (1, 1)):
        up = Upsample(taps)
        k = up.kernel.double()
        up.kernel = k
        ref = _upfirdn2d_reference(x, k, 2, *up.pad)
        assert ref.shape[-1] == 12 and torch.allclose(up(x), ref, atol=1e-10)


def test_fir_custom_backward_is_exact():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 4, dtype=torch.float64)
    for pads in ((1, 1), (2, 1)):
        fn = lambda x, b, p=pads: _DepthwiseFIR.apply(x, k, b, *p)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)  # double backward


def test_w_input_and_truncation(tiny):
    g, data = tiny
    w = g.mapping(data["input.z"][:1]).detach()
    with torch.no_grad():
        assert torch.equal(g(w), g(w.unsqueeze(1).repeat(1, g.n_latent, 1)))
    g.latent_avg.copy_(torch.arange(g.style_dim, dtype=torch.float32))
    try:
        assert torch.allclose(g.truncate(w, 0.0), g.latent_avg.expand_as(w))
        assert torch.allclose(g.truncate(w, 1.0), w, atol=1e-5)
        assert torch.allclose(g.truncate(w, 0.5), 0.5 * (w + g.latent_avg), atol=1e-5)
    finally:
        g.latent_avg.zero_()
    with pytest.raises(ValueError):
        g(torch.zeros(1, g.n_latent + 1, g.style_dim))


def test_mean_latent_is_deterministic(tiny):
    g, _ = tiny
    a, b = g.mean_latent(256, seed=3), g.mean_latent(256, seed=3)
    assert a.shape == (1, g.style_dim) and torch.equal(a, b)


def test_layer_index_convention():
    g = Generator(GeneratorConfig.config_f(1024))
    assert (g.n_latent, g.num_layers) == (18, 17)
    # the official DHR feature_idx (the ffhq pack's setting) is the 128x128 block output
    assert g.block_output_layer(128) == pack_settings("ffhq").feature_layer == 11
    assert g.layer_resolution(11) == 128 and g.layer_channels(11) == 256
    assert g.layer_shape(11) == (1, 256, 128, 128)
    assert [g.layer_resolution(i) for i in range(6)] == [4, 4, 8, 8, 16, 16]
    assert g.block_output_layer(128) == 11 and g.block_output_layer(4) == 1
    assert [g.conv_resolution(i) for i in (0, 1, 2, 15, 16)] == [4, 8, 8, 1024, 1024]
    with pytest.raises(ValueError):
        g.layer_resolution(17)
    assert Generator(GeneratorConfig.config_f(256)).block_output_layer(32) == 7  # 32x32


@pytest.mark.parametrize("layer", [0, 3, 4, 5])
def test_feature_modulation_eq4(tiny, layer):
    g, data = tiny
    w = data["input.wplus"][:1]
    with torch.no_grad():
        base = g(w)
        img, f_l = g(w, feature_layer=layer, return_feature=True)
        assert torch.equal(img, base)
        assert tuple(f_l.shape) == g.layer_shape(layer)
        assert torch.equal(g.feature_at(w, layer), f_l)
        # feeding the generator's own feature back changes nothing, whatever the mask
        mask = torch.rand(1, 1, 64, 64)
        same = g(w, feature_layer=layer, feature=f_l, feature_mask=mask)
        assert (same - base).abs().max() < 1e-4
        # mask 1 everywhere = fully in-domain: the feature is ignored
        other = torch.randn_like(f_l)
        kept = g(w, feature_layer=layer, feature=other, feature_mask=torch.ones(1, 1, 64, 64))
        assert (kept - base).abs().max() < 1e-4
        # mask 0 = out-of-domain everywhere = plain replacement
        rep = g(w, feature_layer=layer, feature=other, feature_mask=torch.zeros(1, 1, 64, 64))
        assert torch.allclose(rep, g(w, feature_layer=layer, feature=other), atol=1e-4)
        assert (rep - base).abs().max() > 1e-2


def test_hybrid_feature_pools_the_mask():
    f_l, f = torch.randn(2, 4, 8, 8), torch.randn(1, 4, 8, 8)
    m = (torch.rand(2, 1, 32, 32) > 0.5).float()
    mp = F.avg_pool2d(m, 4)
    assert torch.allclose(hybrid_feature(f_l, f, m), f_l * mp + f * (1 - mp), atol=1e-6)
    with pytest.raises(ValueError):
        hybrid_feature(f_l, torch.randn(1, 3, 8, 8), m)


def test_feature_modulation_is_differentiable(tiny):
    g, data = tiny
    w = data["input.wplus"][:1]
    layer = 5
    with torch.no_grad():
        _, f0 = g(w, feature_layer=layer, return_feature=True)
    f = f0.clone().requires_grad_(True)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32] = 1
    g.zero_grad(set_to_none=True)
    g(w, feature_layer=layer, feature=f, feature_mask=mask).square().mean().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    # the in-domain half of f receives no gradient through Eq. 4's f * (1 - m) term
    assert f.grad[..., : f.shape[-1] // 2].abs().max() == 0
    assert g.convs[-1].conv.weight.grad.abs().sum() > 0
    assert g.conv1.conv.weight.grad is not None
    g.zero_grad(set_to_none=True)


def test_early_exit_equals_smaller_generator(tiny):
    g, data = tiny
    w = data["input.wplus"][:1]
    half = Generator(
        GeneratorConfig(
            size=32,
            style_dim=g.style_dim,
            n_mlp=2,
            channels={r: g.channels[r] for r in (4, 8, 16, 32)},
        )
    )
    state = g.state_dict()
    half.load_state_dict({k: state[k] for k in half.state_dict()})
    half.eval()
    with torch.no_grad():
        early = g(w, stop_at=32)
        assert early.shape == (1, 3, 32, 32)
        assert torch.allclose(early, half(w[:, : half.n_latent]), atol=1e-4)
        assert g(w, stop_at=4).shape == (1, 3, 4, 4)
        assert torch.equal(g(w, stop_at=64), g(w))
        _, f = g(w, stop_at=32, feature_layer=5, return_feature=True)
        assert f.shape == (1, 32, 16, 16)
    with pytest.raises(ValueError):
        g(w, stop_at=16, feature_layer=7, return_feature=True)
    with pytest.raises(ValueError):
        g(w, stop_at=48)


def test_noise_modes(tiny):
    g, data = tiny
    w = data["input.wplus"][:1]
    with torch.no_grad():
        a = g(w, randomize_noise=True)
        b = g(w, randomize_noise=True)
        assert not torch.equal(a, b)
        stored = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
        assert torch.equal(g(w, noise=stored), g(w))
        fresh = g.make_noise(seed=1)
        assert [n.shape[-1] for n in fresh] == [n.shape[-1] for n in stored]


def test_channels_last_and_nchw_agree(tiny):
    g, data = tiny
    w = data["input.wplus"]
    with torch.no_grad():
        a = g(w)
        g.channels_last = False
        try:
            b = g(w)
        finally:
            g.channels_last = None
    assert torch.allclose(a, b, atol=1e-3)


def test_bf16_autocast_runs_close_to_fp32(tiny):
    g, data = tiny
    w = data["input.wplus"][:1]
    with torch.no_grad():
        ref = g(w)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img = g(w)
    assert img.dtype == torch.float32
    assert (img - ref).abs().max() < 0.05 * ref.abs().max()


def test_config_round_trip_and_validation():
    cfg = GeneratorConfig(
        size=64, style_dim=64, n_mlp=4, channels={4: 32, 8: 32, 16: 16, 32: 16, 64: 8}, lr_mlp=1.0
    )
    assert GeneratorConfig.from_json(cfg.to_json()) == cfg
    g = Generator(cfg)
    assert g.n_latent == 10 and g.num_layers == 9
    assert g.style[1].lr_mul == 1.0
    assert GeneratorConfig.config_f(1024).channels[1024] == 32
    with pytest.raises(ValueError):
        GeneratorConfig(size=48)
    with pytest.raises(ValueError):
        GeneratorConfig(size=64, channels={4: 8, 8: 8})


def test_small_generator_runs_batched_backward():
    cfg = GeneratorConfig(
        size=64, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 16, 64: 8}, lr_mlp=1.0
    )
    g = Generator(cfg)
    z = torch.randn(3, 64)
    img = g(g.mapping(z), randomize_noise=True)
    assert img.shape == (3, 3, 64, 64) and torch.isfinite(img).all()
    img.mean().backward()
    grads = [p.grad for p in g.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert math.isfinite(float(g.style[1].weight.grad.abs().sum()))


def test_resume_at_the_feature_layer_equals_the_full_forward():
    g = Generator(
        GeneratorConfig(
            size=64, style_dim=32, n_mlp=2, channels={r: 16 for r in (4, 8, 16, 32, 64)}
        )
    )
    g.requires_grad_(False)
    w = g.as_wplus(g.mapping(torch.randn(1, 32, generator=torch.Generator().manual_seed(0))))
    mask = (torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    for layer in (1, 3, 5, 7):
        f = torch.randn(g.layer_shape(layer), generator=torch.Generator().manual_seed(layer))
        full = g(w, feature_layer=layer, feature=f, feature_mask=mask)
        resumed = g(w, feature_layer=layer, feature=f, feature_mask=mask, resume=g.prefix(w, layer))
        assert torch.equal(full, resumed)
    with pytest.raises(ValueError, match="odd"):
        g.prefix(w, 4)

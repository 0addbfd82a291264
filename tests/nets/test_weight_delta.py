"""Weight deltas: tune, store theta* - theta in a project file, re-apply to a fresh generator."""

from __future__ import annotations

import pytest
import torch

from dhr_cli.nets.stylegan2 import Generator, GeneratorConfig
from dhr_cli.nets.weight_delta import (
    apply_delta,
    compute_delta,
    delta_nbytes,
    restore,
    snapshot,
)
from dhr_cli.project import Project

CONFIG = GeneratorConfig(
    size=64, style_dim=64, n_mlp=2, channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16}
)


def _fresh() -> Generator:
    torch.manual_seed(7)  # the "pretrained" weights: identical for every call
    return Generator(CONFIG).eval()


def _tuned(gen: Generator, w: torch.Tensor, steps: int = 5) -> None:
    """A few DHR-style Adam steps on the synthesis weights (the mapping stays frozen)."""
    target = torch.zeros(1, 3, 64, 64)
    params = [p for n, p in gen.named_parameters() if not n.startswith("style.")]
    opt = torch.optim.Adam(params, lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        (gen(w) - target).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_round_trip_through_the_project_file(tmp_path, dtype):
    w = torch.randn(1, CONFIG.style_dim).unsqueeze(1).repeat(1, 10, 1)
    gen = _fresh()
    base = snapshot(gen)
    _tuned(gen, w)
    with torch.no_grad():
        tuned_img = gen(w)
    delta = compute_delta(gen, base, dtype=dtype)
    assert delta and not any(k.startswith("style.") for k in delta)  # untouched: not stored
    assert all(t.dtype == dtype and t.is_contiguous() for t in delta.values())
    assert set(delta) <= {n for n, _ in gen.named_parameters()}

    project = Project(tensors={"latent.wplus": w})
    project.deltas = delta
    path = project.save(tmp_path / "photo.jpg.dhr")
    loaded = Project.load(path).deltas
    assert set(loaded) == set(delta)

    fresh = _fresh()
    apply_delta(fresh, loaded)
    with torch.no_grad():
        err = (fresh(w) - tuned_img).abs().max().item()
    assert err < (1e-3 if dtype == torch.float16 else 1e-5), err
    assert delta_nbytes(loaded) == sum(t.numel() * t.element_size() for t in delta.values())

    apply_delta(fresh, loaded, alpha=-1.0)  # undo
    pristine = dict(_fresh().named_parameters())
    for name, p in fresh.named_parameters():
        assert torch.allclose(p, pristine[name], atol=1e-6)


def test_snapshot_restore_and_errors():
    gen = _fresh()
    base = snapshot(gen, ["conv1.conv.weight"])
    with torch.no_grad():
        gen.conv1.conv.weight.add_(1.0)
    assert set(compute_delta(gen, base)) == {"conv1.conv.weight"}
    assert set(compute_delta(gen, snapshot(gen), include_unchanged=True)) == {
        n for n, _ in gen.named_parameters()
    }
    restore(gen, base)
    assert not compute_delta(gen, base)
    with pytest.raises(KeyError):
        snapshot(gen, ["nope"])
    with pytest.raises(KeyError):
        apply_delta(gen, {"nope": torch.zeros(1)})
    with pytest.raises(ValueError):
        apply_delta(gen, {"conv1.conv.weight": torch.zeros(3)})


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 3, 3), (1, 64, 64, 3, 3)])
def test_quantised_storage_round_trip_is_exact_and_bounded(bits, shape):
    from dhr_cli.nets.weight_delta import dequantize, quantize, quantized_roundtrip

    g = torch.Generator().manual_seed(bits)
    t = torch.randn(shape, generator=g) * 1e-3
    t.view(-1)[:3] = 0.0
    codes, e = quantize(t, bits, 32)
    assert codes.dtype == torch.uint8 and e.dtype == torch.int8
    assert codes.numel() == (t.numel() * bits + 7) // 8
    r = dequantize(codes, e, t.shape, bits, 32)
    assert torch.equal(r, quantized_roundtrip(t, bits, 32))
    # quantising the stored values again changes nothing
    assert torch.equal(quantized_roundtrip(r, bits, 32), r)
    # error within half a step of the group's scale (<= amax / qmax, the scale's upper bound)
    qmax = 2 ** (bits - 1) - 1
    err = (r - t).abs().reshape(-1)
    assert float(err.max()) <= float(t.abs().max()) / qmax + 1e-12
    assert bool((r.reshape(-1)[:3] == 0).all())


@pytest.mark.parametrize("bits", [4, 8])
def test_quarter_octave_scales_keep_the_round_trip_exact_over_many_magnitudes(bits):
    """Groups whose largest value sits anywhere within an octave, over 60 octaves: the stored
    values quantise to themselves (the file reproduces what the refinement handed out)."""
    from dhr_cli.nets.weight_delta import quantize, quantized_roundtrip

    g = torch.Generator().manual_seed(10 + bits)
    n_groups = 4096
    t = torch.randn(n_groups, 16, generator=g)
    t = t * torch.exp2(torch.rand(n_groups, 1, generator=g) * 50 - 25)
    r = quantized_roundtrip(t, bits, 16)
    assert torch.equal(quantized_roundtrip(r, bits, 16), r)
    assert torch.equal(quantize(r, bits, 16)[1], quantize(t, bits, 16)[1])
    # the step is within a quarter octave of the smallest that holds the group
    qmax = 2 ** (bits - 1) - 1
    err = (r - t).abs().amax(dim=1)
    assert bool((err <= 0.5 * 2**0.25 * t.abs().amax(dim=1) / qmax * (1 + 1e-6)).all())


@pytest.mark.parametrize("bits", [4, 8])
def test_power_of_two_exponents_of_earlier_files_still_decode(bits):
    """Format 2.0 files written before the quarter-octave scales hold powers of two (steps=1)."""
    from dhr_cli.nets.weight_delta import dequantize, quantize

    g = torch.Generator().manual_seed(20 + bits)
    t = torch.randn(3, 40, generator=g) * 1e-3
    codes, e = quantize(t, bits, 32, steps=1)
    r = dequantize(codes, e, t.shape, bits, 32, steps=1)
    assert torch.equal(r.half().float(), r)  # q * 2^e: exact in float16 too
    qmax = 2 ** (bits - 1) - 1
    assert float((r - t).abs().max()) <= float(t.abs().max()) / qmax
    # read with the wrong scale steps, the values would differ: the metadata must say which
    assert not torch.equal(dequantize(codes, e, t.shape, bits, 32), r)


def test_parameter_resolution_and_mixed_bits_follow_the_generator_blocks():
    """int4 deltas with int8 from a resolution up: a parameter's resolution comes from its
    name, the block its convolution writes (a tRGB follows its block's second conv)."""
    from dhr_cli.nets.stylegan2 import parameter_resolution
    from dhr_cli.nets.weight_delta import delta_bits

    gen = _fresh()
    big = 10**6  # as if every tensor were large (the small ones keep 8 bits anyway)
    for name, param in gen.named_parameters():
        head, _, rest = name.partition(".")
        res = parameter_resolution(name)
        if head == "style":
            assert res is None
        elif head == "convs":
            assert res == gen.conv_resolution(int(rest.split(".")[0]) + 1)
        elif head == "to_rgbs":
            assert res == gen.conv_resolution(2 * int(rest.split(".")[0]) + 2)
        else:
            assert res == 4, name
        if res is not None:
            modulation = ".modulation." in name
            int8 = res >= 32 or (modulation and res >= 16)
            assert delta_bits(name, big, "int4", 32) == (8 if int8 else 4)
            if param.numel() <= 65536:
                assert delta_bits(name, param.numel(), "int4", 32) == 8
        assert delta_bits(name, big, "int4") == 4 and delta_bits(name, big, "int8", 32) == 8
        assert delta_bits(name, big, "float16", 32) is None

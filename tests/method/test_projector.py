"""The W projector's schedule, noise regulariser and the cached-target LPIPS."""

from __future__ import annotations

import math

import torch

from dhr_cli.method.losses import TargetLPIPS, masked_mse, region_losses
from dhr_cli.method.projector import lr_at, noise_regularization, normalize_noise_


def test_lr_schedule() -> None:
    assert lr_at(0.0, 0.1) == 0.0  # warm-up starts at zero
    assert math.isclose(lr_at(0.025, 0.1), 0.05)  # halfway through the 5% warm-up
    assert math.isclose(lr_at(0.5, 0.1), 0.1)
    assert math.isclose(lr_at(0.875, 0.1), 0.05)  # halfway through the cosine ramp-down
    assert lr_at(1.0, 0.1) == 0.0


def test_noise_regularization_penalises_correlation() -> None:
    g = torch.Generator().manual_seed(0)
    white = [torch.randn(1, 1, 32, 32, generator=g)]
    smooth = [torch.ones(1, 1, 32, 32)]
    assert noise_regularization(white) < 1e-2 < noise_regularization(smooth)
    n = [torch.randn(1, 1, 8, 8, generator=g) * 3 + 2]
    normalize_noise_(n)
    assert abs(float(n[0].mean())) < 1e-6 and abs(float(n[0].std()) - 1) < 1e-5


def test_target_lpips_matches_spatial_maps(rpack) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    y = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    for net in (rpack.lpips_vgg, rpack.lpips_alex):
        ref = net.spatial_maps(x, y)
        got = TargetLPIPS(net, y).maps(x)
        for a, b in zip(ref, got, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(TargetLPIPS(net, y).distance(x), net(x, y), rtol=1e-4, atol=1e-6)


def test_region_losses_split_the_image(rpack) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    y = x.clone()
    y[..., 32:] = -y[..., 32:]  # differ only on the right half
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32] = 1  # in-domain = left half, identical there
    l_in, l_out, parts = region_losses(x, y, mask, TargetLPIPS(rpack.lpips_alex, y))
    assert parts["mse_in"] == 0.0 and parts["mse_out"] > 0.1
    assert float(l_out) > float(l_in)
    torch.testing.assert_close(masked_mse(x, y, torch.ones(1, 1, 64, 64)), torch.mean((x - y) ** 2))
    assert float(masked_mse(x, y, torch.zeros(1, 1, 64, 64))) == 0.0

"""Domain-Specific Segmentation: score/threshold/combination logic on hand-made maps,
equivalence with perceptual.stage_masked_mean, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhr_cli.method.projector import ProjectorConfig
from dhr_cli.method.segment import (
    SegmentConfig,
    combine_masks,
    segment,
    superpixel_classes,
    superpixel_mask,
    superpixel_scores,
    superpixels,
    thresholds_for,
)
from dhr_cli.nets.parsing import in_domain_mask
from dhr_cli.nets.perceptual import stage_masked_mean

NAMES = ("background", "skin", "eyes", "hair")


def quadrants(size: int = 8) -> np.ndarray:
    lab = np.ones((size, size), dtype=np.int32)
    h = size // 2
    lab[:h, h:] = 2
    lab[h:, :h] = 3
    lab[h:, h:] = 4
    return lab


def quadrant_map(values: list[float], size: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    h = size // 2
    m[..., :h, :h], m[..., :h, h:], m[..., h:, :h], m[..., h:, h:] = values
    return m


def test_hand_made_maps_give_the_expected_mask() -> None:
    labels = quadrants(8)
    # two stages (8x8 and 4x4), constant per quadrant
    maps = [quadrant_map([0.1, 0.5, 0.2, 0.6], 8), quadrant_map([0.2, 0.2, 0.1, 0.3], 4)]
    scores = superpixel_scores(maps, labels)
    np.testing.assert_allclose(scores, [0.3, 0.7, 0.3, 0.9])

    # parsing: quadrant 1 skin, 2 eyes, 3 background, 4 hair (probabilities 0.9 / rest)
    probs = torch.full((1, 4, 8, 8), 0.1 / 3)
    for q, c in zip((1, 2, 3, 4), (1, 2, 0, 3), strict=True):
        probs[0, c][torch.from_numpy(labels == q)] = 0.9
    classes = superpixel_classes(probs, labels)
    assert classes.tolist() == [1, 2, 0, 3]

    tau = {"skin": 0.7, "eyes": 0.8}
    th = thresholds_for(classes, NAMES, tau, 0.6)
    np.testing.assert_allclose(th, [0.7, 0.8, 0.6, 0.6])
    m_s = superpixel_mask(labels, scores, th)
    # in-domain iff score < tau: q1 0.3<0.7 yes, q2 0.7<0.8 yes, q3 0.3<0.6 yes, q4 0.9<0.6 no
    expect_s = np.isin(labels, [1, 2, 3]).astype(np.float32)
    np.testing.assert_array_equal(m_s, expect_s)

    m_p = in_domain_mask(probs, ("background",), class_names=NAMES)
    np.testing.assert_array_equal(m_p[0, 0].numpy(), (labels != 3).astype(np.float32))
    m = combine_masks(torch.from_numpy(m_s)[None, None], m_p)
    np.testing.assert_array_equal(m[0, 0].numpy(), np.isin(labels, [1, 2]).astype(np.float32))


def test_quantile_thresholds_and_defaults() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    th = thresholds_for(np.zeros(5, int), NAMES, {}, 0.6, scores=scores, quantile=0.5)
    np.testing.assert_allclose(th, 0.3)
    assert superpixel_mask(np.arange(1, 6)[None], scores, th).tolist() == [[1, 1, 0, 0, 0]]
    # classes missing from the table use the default
    np.testing.assert_allclose(
        thresholds_for(np.array([3, 1]), NAMES, {"skin": 0.9}, 0.5), [0.5, 0.9]
    )


@pytest.mark.parametrize("mode", ["area", "nearest"])
def test_scores_equal_stage_masked_mean(mode: str) -> None:
    rng = np.random.default_rng(0)
    labels = superpixels(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), 20, 10.0, 0.0)
    k = int(labels.max())
    maps = [
        torch.rand(1, 1, s, s, generator=torch.Generator().manual_seed(s)) for s in (32, 16, 8, 4)
    ]
    onehot = torch.from_numpy(
        (labels[None] == np.arange(1, k + 1)[:, None, None]).astype(np.float32)
    )[None]
    expected = stage_masked_mean(maps, onehot, mode=mode, eps=0.0)[0].double().numpy()
    got = superpixel_scores(maps, labels, mode=mode)
    if mode == "nearest":  # regions that vanish on a stage: 0 here, 0/0 there
        expected = np.nan_to_num(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_superpixels_start_at_one_and_are_consecutive() -> None:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, 32:] = 200
    lab = superpixels(rgb)
    assert lab.min() == 1
    assert set(np.unique(lab)) == set(range(1, lab.max() + 1))


def _config(rpack, seed: int) -> SegmentConfig:
    s = rpack.settings
    return SegmentConfig(
        projector=ProjectorConfig(steps=3, work_res=64, lpips_res=64),
        class_names=s.class_names,
        tau=s.tau,
        tau_default=s.tau_default,
        ood_classes=s.ood_classes,
        seed=seed,
    )


def _occluded_sample(rpack):
    """A synthetic occluded face: (sample, image tensor in [-1, 1], segment()'s networks)."""
    from dhr_cli.synthetic.benchset import make_sample

    sample = make_sample(1, "occluded", 77)
    img = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 127.5 - 1
    kw = dict(
        generator=rpack.generator,
        lpips_vgg=rpack.lpips_vgg,
        parser=rpack.parser,
        latent_stats=rpack.latent_stats(),
    )
    return sample, img, kw


def test_segment_is_deterministic(rpack) -> None:
    sample, img, kw = _occluded_sample(rpack)
    a = segment(img, sample.image, config=_config(rpack, 5), **kw)
    b = segment(img, sample.image, config=_config(rpack, 5), **kw)
    c = segment(img, sample.image, config=_config(rpack, 6), **kw)
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(a.coarse.w, b.coarse.w)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not torch.equal(a.coarse.w, c.coarse.w)
    assert a.mask.shape == (1, 1, 64, 64)
    assert set(a.mask.unique().tolist()) <= {0.0, 1.0}
    assert len(a.coarse.maps) == 5  # one map per VGG stage


def test_full_size_maps_score_the_coarse_latent_at_the_generator_size(rpack) -> None:
    """maps="full" (the ffhq pack's, as released): the coarse latent rendered at the full size
    and LPIPS-VGG against the full-size crop, not the projection's own low-resolution maps."""
    from dataclasses import replace

    from dhr_cli.method.losses import TargetLPIPS
    from dhr_cli.method.segment import full_size_maps

    sample, img, kw = _occluded_sample(rpack)
    base = _config(rpack, 5)
    cfg = replace(base, projector=replace(base.projector, work_res=32, lpips_res=32))
    coarse = segment(img, sample.image, config=cfg, **kw)
    full = segment(img, sample.image, config=replace(cfg, maps="full"), **kw)
    assert torch.equal(coarse.coarse.w, full.coarse.w)  # the same projection
    assert coarse.coarse.maps[0].shape[-1] == 32
    maps = full_size_maps(rpack.generator, rpack.lpips_vgg, full.coarse, img)
    assert [m.shape[-1] for m in maps] == [64, 32, 16, 8, 4]
    with torch.no_grad():
        render = rpack.generator(full.coarse.w, noise=full.coarse.noises)
        want = TargetLPIPS(rpack.lpips_vgg, img).maps(render)
    assert all(torch.equal(a, b) for a, b in zip(maps, want, strict=True))
    np.testing.assert_allclose(full.scores, superpixel_scores(maps, full.labels), rtol=1e-12)
    with pytest.raises(ValueError, match="maps"):
        replace(cfg, maps="half")

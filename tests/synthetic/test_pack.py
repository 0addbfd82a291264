"""The shipped synthetic pack: manifest, hashes, shapes, a forward pass, determinism (no training)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from dhr_cli import hub
from dhr_cli.nets.parsing import SmallParser, in_domain_mask
from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import classes as C
from dhr_cli.synthetic import measure as M
from dhr_cli.synthetic import render as R

EXPECTED_FILES = {
    "generator.safetensors",
    "encoder.safetensors",
    "directions.safetensors",
    "parser.safetensors",
    "probe.safetensors",
}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((M.PACK_DIR / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pack() -> M.SyntheticPack:
    torch.manual_seed(0)
    return M.load_pack()


def test_manifest_lists_every_file_with_matching_hash_and_size(manifest):
    assert manifest["pack"] == "synthetic"
    assert set(manifest["files"]) == EXPECTED_FILES
    total = 0
    for name, info in manifest["files"].items():
        data = (M.PACK_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(data) == info["size"], name
        assert info["licence"] == "MIT (dhr project)"
        assert info["role"] and info["name"].startswith("synthetic-")
        total += len(data)
    assert total <= 20 * 1024 * 1024


def test_manifest_records_training_and_metrics(manifest):
    training = manifest["training"]
    assert training["command"].startswith("python -m dhr_cli.synthetic.train")
    assert isinstance(training["seed"], int)
    for stage in ("data", "generator", "probe", "encoder", "parser"):
        assert training["stages"][stage]["wall_s"] > 0
        assert training["stages"][stage]["cpu_s"] > 0
    assert manifest["latent"]["style_dim"] == 64
    assert {"smile", "age"} <= set(manifest["directions"])
    for d in manifest["directions"].values():
        assert 0 < d["r2"] <= 1
    m = manifest["metrics"]
    assert {"generator", "encoder", "directions"} <= set(m)


def test_hub_registers_the_bundled_files(manifest):
    reg = hub.registry()
    for name, info in manifest["files"].items():
        entry = reg[info["name"]]
        assert entry.bundled == M.PACK_DIR / name
        assert entry.sha256 == info["sha256"]


def test_latent_convention_round_trip():
    z27 = A.sample_z(np.random.default_rng(3), 5)
    z = M.domain_z(z27)
    assert z.shape == (5, 64)
    np.testing.assert_allclose(M.renderer_z(z), z27, atol=1e-12)
    u = M.pixel_norm(np.random.default_rng(4).standard_normal((2, 64)))
    np.testing.assert_allclose((u**2).sum(1), 64.0)


def test_generator_shapes_and_determinism(pack):
    g = pack.generator
    assert (g.size, g.n_latent, g.style_dim) == (64, 10, 64)
    z = torch.as_tensor(M.eval_latents(2, 7), dtype=torch.float32)
    with torch.no_grad():
        a = g(g.mapping(z))
        b = g(g.mapping(z), randomize_noise=True)  # noise strengths are 0
    assert a.shape == (2, 3, 64, 64)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        w = g.mapping(torch.randn(4000, 64, generator=torch.Generator().manual_seed(0)))
    # latent_avg is the mean w: within a few standard errors of this sample's mean
    err = (g.latent_avg - w.mean(0)).abs() / (w.std(0) / 4000**0.5)
    assert float(err.max()) < 6


def test_generator_reproduces_renders(pack):
    # regression guard on a few faces; the bar (LPIPS <= 0.10 on 200 held-out z, 0.018
    # at export) is measured by benchmarks/synthetic_quality.py
    from dhr_cli.packs.shared import lpips

    z = M.eval_latents(6, 11)
    target = M.render_images(M.renderer_z(z))
    out = M.synthesize(pack.generator, z).clamp(-1, 1)
    assert float((out - target).pow(2).mean()) < 0.05
    with torch.no_grad():
        lp = lpips("alex")(out, target).mean()
    assert float(lp) < 0.10


def test_encoder_round_trip(pack):
    z = M.eval_latents(4, 12)
    x = M.render_images(M.renderer_z(z))
    with torch.no_grad():
        wp = pack.encoder(x)
        out = pack.generator(wp).clamp(-1, 1)
    assert wp.shape == (4, 10, 64)
    # regression guard (0.0061 here; the bar, MSE <= 0.01 on 200 renders, is measured
    # by benchmarks/synthetic_quality.py: 0.0077 at export)
    assert float((out - x).pow(2).mean()) < 0.025


def test_directions_shapes_and_smile_edit(pack):
    assert {"smile", "age"} <= set(pack.directions)
    for d in pack.directions.values():
        assert d.shape == (1, 64) and torch.isfinite(d).all()
    g, probe = pack.generator, pack.probe
    z = torch.as_tensor(M.eval_latents(4, 13), dtype=torch.float32)
    k = A.ATTRIBUTE_INDEX["smile"]
    with torch.no_grad():
        w = g.mapping(z)
        lo = probe(g(w - pack.direction("smile")))[:, k]
        hi = probe(g(w + pack.direction("smile")))[:, k]
    # strengths -1 and +1 (2 std-units apart): the probe measures about 0.87 per unit on
    # generator outputs (benchmarks/synthetic_quality.py), so the right sign and a clear move
    assert float((hi - lo).mean()) > 0.4


def test_sweep_statistics_of_true_edits_and_of_a_direction(pack):
    true = M.renderer_sweep(pack.probe, "smile", n_faces=6, strengths=(-2, -1, 0, 1, 2))
    assert true["attribute"] == "smile" and true["spearman"] > 0.8 and true["slope"] > 0.5
    assert true["off_target_worst"] != "smile" and true["off_target_max_at_1"] >= 0
    sw = M.direction_sweep(pack.generator, pack.probe, pack.direction("smile"), "smile", n_faces=6)
    assert sw["slope"] > 0.2 and set(sw) == set(true)
    # the generator drawing the exact edits (moved in z): smile rises, and at strength 0 it
    # reads the same faces as a direction sweep does (both draw G(mapping(z)))
    gz = M.generator_edit_sweep(pack.generator, pack.probe, "smile", n_faces=6, strengths=(0, 2))
    sw0 = M.direction_sweep(
        pack.generator, pack.probe, pack.direction("smile"), "smile", n_faces=6, strengths=(0, 2)
    )
    assert gz["slope"] > 0.2 and set(gz) == set(true)
    assert gz["target_range"][0] == pytest.approx(sw0["target_range"][0], abs=1e-4)
    # statistics by hand: a reading that follows the strength exactly, nothing else moving
    s = np.array([-1.0, 0.0, 1.0])
    readings = np.zeros((3, 2, A.Z_DIM))
    readings[:, :, A.ATTRIBUTE_INDEX["age"]] = s[:, None]
    st = M.sweep_statistics(readings, s, "age")
    assert st["spearman"] == pytest.approx(1.0) and st["slope"] == pytest.approx(1.0)
    assert st["off_target_max"] == 0.0 and st["off_target_shift_max"] == 0.0
    # per-face jitter that cancels on average moves |d| but not the mean shift; a shift
    # that only one end of the sweep shows is found there
    jitter = readings.copy()
    jitter[0, :, A.ATTRIBUTE_INDEX["jaw"]] = [0.5, -0.5]
    jitter[2, :, A.ATTRIBUTE_INDEX["hair_red"]] = [0.3, 0.1]
    st = M.sweep_statistics(jitter, s, "age")
    assert st["off_target_max"] == pytest.approx(0.5) and st["off_target_worst"] == "jaw"
    assert st["off_target_shift_max"] == pytest.approx(0.2)
    assert st["off_target_shift_worst"] == "hair_red" and st["off_target_shift_at"] == 1.0
    with pytest.raises(ValueError):
        M.sweep_statistics(readings[[0, 2]], np.array([-1.0, 1.0]), "age")


def test_probe_readability_on_renders_and_generator_outputs(pack):
    r = M.probe_readability(pack.generator, pack.probe, n=60)
    assert list(r) == list(A.ATTRIBUTE_NAMES)
    assert all(set(v) == {"render", "generator"} for v in r.values())
    assert all(-1.0 <= x <= 1.0 for v in r.values() for x in v.values())
    # the probe reads renders well; the generator draws smile and age, barely the nose
    assert r["smile"]["render"] > 0.9 and r["age"]["render"] > 0.9
    assert r["smile"]["generator"] > 0.6 and r["age"]["generator"] > 0.6
    assert r["nose_length"]["generator"] < r["nose_length"]["render"] - 0.5


def test_parser_on_a_render(pack):
    face = R.render(A.sample_z(np.random.default_rng(5)))
    x = M.to_tensor(face.image)
    with torch.no_grad():
        probs = pack.parser.probabilities(x)
    assert probs.shape == (1, C.NUM_CLASSES, 64, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 64))
    assert pack.parser.class_names == C.CLASS_NAMES
    acc = (probs.argmax(1)[0].numpy() == face.classes).mean()
    assert acc > 0.85


def test_probe_reads_renders(pack):
    z27 = A.sample_z(np.random.default_rng(6), 16)
    x = M.render_images(z27)
    pred = M.probe_attributes(pack.probe, x)
    assert pred.shape == (16, 27)
    for name in ("smile", "age", "skin_tone", "hair_dark"):
        k = A.ATTRIBUTE_INDEX[name]
        assert np.corrcoef(pred[:, k], z27[:, k])[0, 1] > 0.8, name


def test_small_parser_api_with_random_weights():
    torch.manual_seed(0)
    p = SmallParser(C.NUM_CLASSES, width=8, class_names=C.CLASS_NAMES).eval()
    with torch.no_grad():
        probs = p.probabilities(torch.zeros(2, 3, 48, 80))
    assert probs.shape == (2, C.NUM_CLASSES, 48, 80)
    m = in_domain_mask(probs, ("hat", "texture"), class_names=p.class_names)
    assert m.shape == (2, 1, 48, 80)
    with pytest.raises(ValueError):
        SmallParser(3, class_names=("a", "b"))

"""Helpers of the synthetic pack's training script (export, directions, losses; no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhr_cli.nets.stylegan2 import Generator, GeneratorConfig
from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import measure as M
from dhr_cli.synthetic import train as T


def test_save_module_keeps_an_unchanged_file_byte_for_byte(tmp_path):
    path = tmp_path / "m.safetensors"
    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}
    T.save_module(path, state, "probe", {"width": 2})
    first = path.read_bytes()
    # safetensors writes the metadata in no fixed order, so a rewrite could change the bytes
    # (and the manifest's sha256) although nothing changed
    T.save_module(path, {k: v.clone() for k, v in state.items()}, "probe", {"width": 2})
    assert path.read_bytes() == first
    # a changed tensor, or changed metadata, is written
    T.save_module(path, {**state, "b": torch.zeros(4)}, "probe", {"width": 2})
    assert path.read_bytes() != first
    loaded, meta = M.read_safetensors(path)
    assert torch.equal(loaded["b"], torch.zeros(4)) and meta["kind"] == "probe"
    T.save_module(path, {**state, "b": torch.zeros(4)}, "probe", {"width": 3})
    assert M.read_safetensors(path)[1]["config"] == '{"width": 3}'
    # an unreadable file is replaced, not an error
    path.write_bytes(b"not a safetensors file")
    T.save_module(path, state, "probe", {"width": 2})
    assert torch.equal(M.read_safetensors(path)[0]["a"], state["a"])


class _LinearMapping(torch.nn.Module):
    """A stand-in generator whose mapping is w = pixel_norm(z) @ mix.T (64 -> 64)."""

    style_dim = 64

    def __init__(self, mix: torch.Tensor) -> None:
        super().__init__()
        self.mix = mix

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        z = z * z.shape[-1] ** 0.5 / z.norm(dim=-1, keepdim=True)
        return z @ self.mix.T


def test_regression_directions_are_the_mean_change_of_w_per_label():
    gen = torch.Generator().manual_seed(3)
    mix = torch.randn(64, 64, generator=gen, dtype=torch.float64)
    # w moves by mix[:, k] per unit of label k whatever the other labels do
    dirs, info = T.fit_directions(_LinearMapping(mix.float()), ("smile", "age"), n=4000)
    for name in ("smile", "age"):
        want = mix[:, A.ATTRIBUTE_INDEX[name]].float()
        got = dirs[name][0]
        assert info[name]["method"] == "regression" and info[name]["r2"] > 0.95
        assert torch.allclose(got, want, atol=0.05 * want.norm().item()), name


def test_edit_batch_moves_one_attribute_of_each_face_deterministically():
    z, which, s, edited = T.edit_batch(seed=0, step=7, n=12)
    again = T.edit_batch(seed=0, step=7, n=12)
    assert all(np.array_equal(a, b) for a, b in zip((z, which, s, edited), again, strict=True))
    assert not np.array_equal(T.edit_batch(seed=0, step=8, n=12)[0], z)
    assert z.shape == (12, T.STYLE_DIM) and edited.shape == (12, A.Z_DIM)
    assert np.all(np.abs(s) <= T.EDIT_MAX_STRENGTH)
    before = M.renderer_z(z.astype(np.float64))
    for i in range(12):
        k = A.ATTRIBUTE_INDEX[T.EDIT_ATTRIBUTES[which[i]]]
        moved = np.flatnonzero(~np.isclose(edited[i], before[i], atol=1e-6))
        assert set(moved) <= {k}, (i, moved)
        assert edited[i, k] == pytest.approx(before[i, k] + s[i], abs=1e-4)


def test_edit_consistency_loss_trains_the_generator_along_the_directions():
    torch.manual_seed(0)
    g = Generator(
        GeneratorConfig(
            size=64, style_dim=T.STYLE_DIM, n_mlp=2, channels={r: 8 for r in (4, 8, 16, 32, 64)}
        )
    )
    dirs = torch.randn(len(T.EDIT_ATTRIBUTES), T.STYLE_DIM)

    def perceptual(a, b):
        return (a - b).pow(2).mean((1, 2, 3))

    loss = T.edit_consistency_loss(g, dirs, T.edit_batch(0, 0, 4), perceptual)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    # synthesis and mapping both learn from it (where w + s d lands is the mapping's too)
    grads = {n: p.grad for n, p in g.named_parameters() if p.requires_grad}
    moved = {n for n, grad in grads.items() if grad is not None and grad.abs().sum() > 0}
    assert any(n.startswith(("style", "mapping")) for n in moved), sorted(moved)[:5]
    assert len(moved) > len(grads) // 2

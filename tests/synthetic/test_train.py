"""Export helpers of the synthetic pack's training script (no training here)."""

from __future__ import annotations

import torch

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
    loaded, meta = T.M.read_safetensors(path)
    assert torch.equal(loaded["b"], torch.zeros(4)) and meta["kind"] == "probe"
    T.save_module(path, {**state, "b": torch.zeros(4)}, "probe", {"width": 3})
    assert T.M.read_safetensors(path)[1]["config"] == '{"width": 3}'
    # an unreadable file is replaced, not an error
    path.write_bytes(b"not a safetensors file")
    T.save_module(path, state, "probe", {"width": 2})
    assert torch.equal(T.M.read_safetensors(path)[0]["a"], state["a"])


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
        want = mix[:, T.R.ATTRIBUTE_INDEX[name]].float()
        got = dirs[name][0]
        assert info[name]["method"] == "regression" and info[name]["r2"] > 0.95
        assert torch.allclose(got, want, atol=0.05 * want.norm().item()), name

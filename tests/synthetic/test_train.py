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

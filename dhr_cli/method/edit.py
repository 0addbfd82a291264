"""Semantic edits of an inverted photo (DHR, Cao et al., Sec. 3.4): W+ moves along latent
directions and the image is rendered through the refined generator with the out-of-domain
feature held fixed, then pasted back into the photo.

Edit arithmetic (`apply_edits`)::

    w_edit = w + sum_i strength_i * d_i  (rows A..B only with --layers A:B)  + GANSpace deltas

- Linear directions (`LinearEdit`): a [1, D] direction moves every W+ row, an [n_latent, D]
  one moves each row by its own vector. FFHQ: the InterFaceGAN age / smile / pose directions of
  the e4e release (unit-norm rows; pose is [1, 18, 512]): strength = distance moved in W. The
  synthetic pack: its own directions, scaled so strength 1.0 = +1 std-unit of the attribute.
  User files (`--direction FILE[:STRENGTH]`, [D], [1, D] or [n_latent, D] in .pt / .npy /
  .safetensors, loaded without executing code) are used at their own scale.
- GANSpace (`GanspaceEdit`, FFHQ only), the e4e release's convention (editings/ganspace.py):
  with the PCA file's mean, unit components comp[k] and per-component std, the coordinate of
  W+ row 0 along comp[k] in std units is c = <w_0 - mean, comp[k]> / std[k]; the edit sets it
  to STRENGTH on rows START..END-1: delta = (STRENGTH - c) * std[k] * comp[k]. STRENGTH is
  therefore a target coordinate, not a step (0 moves to the mean, not nowhere). Several
  GANSpace edits add their deltas, each computed on the unedited code. Presets published with
  e4e: eyes 54:7:8:20, beard 58:7:9:-20, lip 34:10:11:20.

Rendering (`render_edit`): the project's own recipe through `refine.render_stored`, i.e. the
generator with theta + the stored weight delta, and for DHR the stored feature f mixed with the
generator's feature of the *edited* code by the stored mask, f' = f_l(w_edit) m + f (1 - m)
(Eq. 4): the in-domain face follows the edit, the out-of-domain feature stays as refined.
Because the layers after l and the RGB skip of the layers before it still follow the edited
code, DHR edits then also hold the out-of-domain *pixels* (`keep_out_of_domain`, on by default,
`--no-keep-ood` turns it off): the edit is blended into the unedited reconstruction by the
in-domain mask, feathered inwards (`edit_blend_mask`). `pti` projects have no feature,
`feature` projects replace f_l everywhere, `encoder` projects have neither. Pasting back
repeats `dhr invert`'s reconstruction step exactly, so an edit whose strengths are all 0 writes
the same bytes as the reconstruction (PNG).

Files (`EditSession.edit_input`): a photo argument edits every face project of that photo
(``photo.jpg.dhr``, ``photo.jpg.face2.dhr``, ...) into one image; a project argument edits that
face. Without an argument `latest_project` picks the project most recently written by `dhr
invert` in the current folder. Outputs: ``<stem>.<tag><ext>`` beside the project file (which
is beside the photo unless `dhr invert -o DIR` put it in DIR: edits follow it there; tag like
``smile+1.5_age-1``), or ``-o FILE`` / ``-o DIR/``; a sweep writes a strip
``<stem>.sweep-<name><start>to<stop>x<n><ext>`` (and with frames each frame under its own tag).
The project file is never modified unless `save` records the edit in its history.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadData, InputMissing, UsageError, not_found

if TYPE_CHECKING:
    import torch

    from ..faces import Photo
    from ..packs import Pack
    from ..project import Project

__all__ = [
    "DIRECTION_OPTIONS",
    "FFHQ_DIRECTIONS",
    "GANSPACE_PRESETS",
    "Direction",
    "DirectionLibrary",
    "EditRequest",
    "EditSession",
    "GanspaceEdit",
    "GanspacePCA",
    "LinearEdit",
    "Sweep",
    "apply_edits",
    "as_rows",
    "edit_blend_mask",
    "edit_tag",
    "latest_project",
    "load_direction_file",
    "parse_direction_arg",
    "parse_ganspace",
    "parse_layers",
    "parse_named",
    "parse_sweep",
    "render_edit",
    "strip_image",
]

# first-class CLI options (`--smile 1.5`); every other pack direction goes through --edit
DIRECTION_OPTIONS: tuple[str, ...] = ("smile", "age", "pose")

# FFHQ: name -> (hub registry name, shape as published, source)
FFHQ_DIRECTIONS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "smile": ("interfacegan-smile", (1, 512), "e4e release, interfacegan_directions/smile.pt"),
    "age": ("interfacegan-age", (1, 512), "e4e release, interfacegan_directions/age.pt"),
    "pose": ("interfacegan-pose", (1, 18, 512), "e4e release, interfacegan_directions/pose.pt"),
}
FFHQ_UNIT = "distance in W (unit-norm direction)"
GANSPACE_FILE = "ganspace-ffhq-pca"
# published with the e4e release (editings/ganspace.py examples): component, start, end, strength
GANSPACE_PRESETS: dict[str, tuple[int, int, int, float]] = {
    "eyes": (54, 7, 8, 20.0),
    "beard": (58, 7, 9, -20.0),
    "lip": (34, 10, 11, 20.0),
}
DIRECTION_SUFFIXES = (".pt", ".pth", ".npy", ".safetensors")
MAX_TAG = 120
STRIP_MAX_HEIGHT = 512  # strip frames are reduced to at most this height


# ============================================================================ parsing


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise UsageError(f"{what}: {text.strip()!r} is not a finite number")
    return v


def parse_named(text: str, option: str = "--edit") -> tuple[str, float]:
    """'NAME=STRENGTH' -> (name, strength); `option` names the flag in errors."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(
            f"{option} expects NAME=STRENGTH, got {text!r}", hint=f"e.g. {option} smile=1.5"
        )
    return name, _number(value, f"{option} {name}")


def parse_layers(text: str | None, n_latent: int | None = None) -> tuple[int, int] | None:
    """--layers 'A:B' (W+ rows A..B-1, like a Python slice; 'A:' and ':B' allowed)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not m or not (m.group(1) or m.group(2)):
        raise UsageError(
            f"--layers expects A:B (W+ rows A to B-1), got {text!r}", hint="e.g. --layers 0:8"
        )
    a = int(m.group(1)) if m.group(1) else 0
    b = int(m.group(2)) if m.group(2) else (n_latent if n_latent is not None else 10**6)
    if n_latent is not None:
        b = min(b, n_latent) if not m.group(2) else b
        if b > n_latent:
            raise UsageError(
                f"--layers {text}: the W+ code has only {n_latent} rows (0..{n_latent})"
            )
    if a >= b:
        raise UsageError(f"--layers {text}: empty row range (need A < B)")
    return a, b


@dataclass(frozen=True)
class GanspaceSpec:
    """A parsed --ganspace value (component, rows START..END-1, target strength)."""

    component: int
    start: int
    end: int
    strength: float
    preset: str | None = None


def parse_ganspace(text: str) -> GanspaceSpec:
    """--ganspace 'IDX:START:END:STRENGTH' or a preset 'eyes[:STRENGTH]' (eyes, beard, lip)."""
    parts = [p.strip() for p in text.split(":")]
    name = parts[0].lower()
    if name in GANSPACE_PRESETS:
        if len(parts) > 2:
            raise UsageError(f"--ganspace {text!r}: a preset takes at most a strength (NAME[:S])")
        k, a, b, s = GANSPACE_PRESETS[name]
        if len(parts) == 2:
            s = _number(parts[1], f"--ganspace {name}")
        return GanspaceSpec(k, a, b, s, preset=name)
    if len(parts) != 4:
        raise UsageError(
            f"--ganspace expects IDX:START:END:STRENGTH or a preset, got {text!r}",
            hint="presets: "
            + ", ".join(
                f"{n} ({':'.join(f'{x:g}' for x in v)})" for n, v in GANSPACE_PRESETS.items()
            ),
        )
    try:
        k, a, b = (int(p) for p in parts[:3])
    except ValueError:
        raise UsageError(f"--ganspace {text!r}: IDX, START and END must be integers") from None
    if k < 0 or a < 0 or b <= a:
        raise UsageError(f"--ganspace {text!r}: need IDX >= 0 and 0 <= START < END")
    return GanspaceSpec(k, a, b, _number(parts[3], "--ganspace strength"))


def parse_direction_arg(text: str) -> tuple[Path, float]:
    """--direction 'FILE[:STRENGTH]' -> (path, strength); strength 1 by default."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not tail.startswith(("\\", "/")):
        try:
            return Path(head), _number(tail, f"--direction {head}")
        except UsageError:
            if Path(text).suffix.lower() in DIRECTION_SUFFIXES:
                return Path(text), 1.0
            raise
    return Path(text), 1.0


@dataclass(frozen=True)
class Sweep:
    """--sweep 'NAME=START:STOP:N': N strengths from START to STOP (both included)."""

    name: str
    start: float
    stop: float
    count: int

    @property
    def values(self) -> list[float]:
        if self.count == 1:
            return [self.start]
        return [float(f"{v:.10g}") for v in np.linspace(self.start, self.stop, self.count)]

    @property
    def tag(self) -> str:
        return f"sweep-{_safe(self.name)}{_fmt(self.start)}to{_fmt(self.stop)}x{self.count}"


def parse_sweep(text: str | None) -> Sweep | None:
    if text is None:
        return None
    name, sep, rng = text.partition("=")
    parts = rng.split(":")
    if not sep or not name.strip() or len(parts) != 3:
        raise UsageError(
            f"--sweep expects NAME=START:STOP:N, got {text!r}", hint="e.g. --sweep smile=-3:3:7"
        )
    name = name.strip()
    start = _number(parts[0], f"--sweep {name} start")
    stop = _number(parts[1], f"--sweep {name} stop")
    try:
        count = int(parts[2])
    except ValueError:
        raise UsageError(f"--sweep {name}: N must be a whole number, got {parts[2]!r}") from None
    if not 1 <= count <= 100:
        raise UsageError(f"--sweep {name}: N must be between 1 and 100, got {count}")
    return Sweep(name, start, stop, count)


@dataclass
class EditRequest:
    """What the command line asked for, before it is resolved against a project's pack."""

    named: list[tuple[str, float]] = field(default_factory=list)  # (name, strength) in order
    ganspace: list[GanspaceSpec] = field(default_factory=list)
    directions: list[tuple[Path, float]] = field(default_factory=list)
    layers: str | None = None
    sweep: Sweep | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name, _ in self.named:
            if name in seen:
                raise UsageError(f"the {name} edit is given twice")
            seen.add(name)
        if self.sweep is not None and self.sweep.name in seen:
            # the sweep sets that strength in every frame: the fixed value would be dropped
            raise UsageError(
                f"the {self.sweep.name} edit is given twice: as a fixed strength and by --sweep",
                hint=f"drop the fixed {self.sweep.name} strength; other edits apply to every frame",
            )
        parse_layers(self.layers)  # syntax errors before any work

    @property
    def empty(self) -> bool:
        return not (self.named or self.ganspace or self.directions or self.sweep)


# ============================================================================ directions


@dataclass(frozen=True)
class Direction:
    """A latent direction: [1, D] (moves every W+ row) or [n_latent, D] (one vector per row)."""

    name: str
    vector: torch.Tensor
    source: str
    unit: str = ""


@dataclass(frozen=True)
class LinearEdit:
    """w + strength * direction, on W+ rows `rows` (None = all)."""

    direction: Direction
    strength: float
    rows: tuple[int, int] | None = None

    def delta(self, wplus: torch.Tensor) -> torch.Tensor:
        import torch

        v = self.direction.vector.to(wplus.device, wplus.dtype)
        d = (self.strength * v).expand(wplus.shape[1], -1)[None].clone()
        if self.rows is not None:
            keep = torch.zeros(wplus.shape[1], dtype=torch.bool, device=wplus.device)
            keep[self.rows[0] : self.rows[1]] = True
            d[:, ~keep] = 0
        return d

    @property
    def tag(self) -> str:
        return f"{_safe(self.direction.name)}{_fmt(self.strength)}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "direction",
            "name": self.direction.name,
            "strength": self.strength,
            "rows": list(self.rows) if self.rows else None,
            "source": self.direction.source,
        }


@dataclass(frozen=True)
class GanspacePCA:
    """The GANSpace PCA of W: mean [1, D], unit components [K, D], std [K]."""

    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_state(cls, state: Any, style_dim: int) -> GanspacePCA:
        import torch

        if not isinstance(state, dict) or not {"mean", "comp", "std"} <= set(state):
            raise BadData("the GANSpace file must hold 'mean', 'comp' and 'std'")
        mean, comp, std = (torch.as_tensor(state[k]).float() for k in ("mean", "comp", "std"))
        comp = comp.reshape(comp.shape[0], -1)
        if comp.shape[1] != style_dim or mean.numel() != style_dim or std.numel() != comp.shape[0]:
            raise BadData(
                f"GANSpace PCA shapes mean {list(mean.shape)}, comp {list(comp.shape)}, "
                f"std {list(std.shape)} do not fit a W of {style_dim}"
            )
        return cls(mean.reshape(1, style_dim), comp, std.reshape(-1))


@dataclass(frozen=True)
class GanspaceEdit:
    """GANSpace edit (e4e convention): set the std-unit coordinate of W+ row 0 along
    comp[component] to `strength`, applied to rows start..end-1."""

    component: int
    start: int
    end: int
    strength: float
    pca: GanspacePCA
    preset: str | None = None

    def delta(self, wplus: torch.Tensor) -> torch.Tensor:
        import torch

        dev, dt = wplus.device, wplus.dtype
        comp = self.pca.comp[self.component].to(dev, dt)
        std = self.pca.std[self.component].to(dev, dt)
        coord = torch.dot(wplus[0, 0] - self.pca.mean[0].to(dev, dt), comp) / std
        d = torch.zeros_like(wplus)
        d[:, self.start : self.end] = (self.strength - coord) * std * comp
        return d

    @property
    def tag(self) -> str:
        if self.preset:
            return f"{self.preset}{_fmt(self.strength)}"
        return f"ganspace{self.component}r{self.start}-{self.end}{_fmt(self.strength)}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ganspace",
            "name": self.preset or f"ganspace{self.component}",
            "component": self.component,
            "rows": [self.start, self.end],
            "strength": self.strength,
            "source": "GANSpace FFHQ PCA (e4e release)",
        }


Edit = LinearEdit | GanspaceEdit


def apply_edits(wplus: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """W+ [1, n_latent, D] plus every edit's delta (each computed on the unedited code).
    Linear edits of strength 0 add nothing at all, so the code stays bit-identical."""
    out = wplus.clone()
    for e in edits:
        if isinstance(e, LinearEdit) and e.strength == 0:
            continue
        out = out + e.delta(wplus)
    return out


def as_rows(t: Any, *, n_latent: int, style_dim: int, name: str, pack: str = "") -> torch.Tensor:
    """A direction as [1, D] or [n_latent, D] float32 (BadData for any other shape)."""
    import torch

    if not isinstance(t, torch.Tensor):
        a = np.asarray(t)
        if a.dtype.kind not in "biufc":  # strings, bytes, dates: torch cannot even hold them
            raise BadData(f"direction {name} holds {a.dtype} values, not numbers")
        t = torch.as_tensor(a)
    if not t.is_floating_point():
        raise BadData(f"direction {name} is not a floating-point tensor ({t.dtype})")
    shape = list(t.shape)
    v = t.detach().to("cpu", torch.float32)
    while v.ndim > 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim == 1:
        v = v[None]
    accepted = f"[{style_dim}], [1, {style_dim}] or [{n_latent}, {style_dim}]"
    if v.ndim != 2 or v.shape[0] not in (1, n_latent):
        raise BadData(
            f"direction {name} has shape {shape}; the {pack or 'project'} pack needs {accepted}"
        )
    if v.shape[1] != style_dim:
        raise BadData(
            f"direction {name} has shape {shape}: {v.shape[1]} columns, but the "
            f"{pack or 'project'} pack's W has {style_dim} (a direction for another pack?)",
            hint=f"a direction for this pack is {accepted}",
        )
    if not bool(torch.isfinite(v).all()):
        raise BadData(f"direction {name} contains NaN or infinite values")
    return v.contiguous()


def load_direction_file(path: Path) -> tuple[Any, dict[str, str]]:
    """The tensor in a user direction file (.pt/.pth via weights-only torch.load, .npy without
    pickle, .safetensors) and its metadata ({} unless safetensors). A file holding several
    tensors must name one 'direction'."""
    path = Path(path)
    if not path.is_file():
        raise not_found(path, "direction file")
    suffix = path.suffix.lower()
    meta: dict[str, str] = {}
    if suffix == ".npy":
        try:
            obj: Any = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise BadData(f"cannot read {path} as a .npy array: {e}") from e
    elif suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                obj = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise BadData(f"cannot read {path} as safetensors: {e}") from e
    elif suffix in (".pt", ".pth"):
        from ..nets.checkpoints import torch_load

        obj = torch_load(path)
    else:
        raise UsageError(
            f"{path}: unknown direction format {suffix or '(no suffix)'}",
            hint="use a .pt, .npy or .safetensors file",
        )
    if isinstance(obj, dict):
        arrays = {k: v for k, v in obj.items() if hasattr(v, "shape")}
        if "direction" in arrays:
            obj = arrays["direction"]
        elif len(arrays) == 1:
            obj = next(iter(arrays.values()))
        else:
            raise BadData(
                f"{path} holds {len(arrays)} tensors ({', '.join(list(arrays)[:6])}); "
                "a direction file must hold one (or one called 'direction')"
            )
    if not hasattr(obj, "shape"):
        raise BadData(f"{path} holds a {type(obj).__name__}, not a direction tensor")
    return obj, meta


def _ffhq_file(name: str, pack: Pack) -> Path:
    """The one place the edit module asks the hub for an FFHQ direction file."""
    from .. import hub

    return hub.fetch(name, models_dir=pack.models_dir, offline=pack.offline)


def _known_elsewhere(name: str, pack_name: str) -> str | None:
    """The other pack that has a direction called `name` (for a clearer error)."""
    if pack_name != "ffhq" and (name in FFHQ_DIRECTIONS or name in GANSPACE_PRESETS):
        return "ffhq"
    if pack_name != "synthetic":
        from ..packs import read_manifest

        if name in (read_manifest().get("directions") or {}):
            return "synthetic"
    return None


class DirectionLibrary:
    """The directions a pack offers (loaded on first use, once per pack)."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self.n_latent = pack.settings.n_latent
        self._cache: dict[str, Direction] = {}
        self._pca: GanspacePCA | None = None

    @property
    def style_dim(self) -> int:
        """Width of the pack's W (FFHQ: 512, known without loading the generator)."""
        if self.pack.name == "ffhq":
            return 512
        return int(self.pack.generator.style_dim)

    def names(self) -> list[str]:
        if self.pack.name == "ffhq":
            return list(FFHQ_DIRECTIONS)
        return list(self.pack.directions)

    def has_ganspace(self) -> bool:
        return self.pack.name == "ffhq"

    def check_name(self, name: str) -> None:
        """UsageError (misspelt) or BadData (a direction of the other pack) unless the pack
        offers `name`; reads no file."""
        if name in self.names():
            return
        other = _known_elsewhere(name, self.pack.name)
        if other is not None:
            raise BadData(
                f"{name!r} is a direction of the {other} pack, but the project was made with "
                f"the {self.pack.name} pack",
                hint=f"directions of the {self.pack.name} pack: {', '.join(self.names())}",
            )
        import difflib

        close = difflib.get_close_matches(name, self.names(), n=2)
        raise UsageError(
            f"unknown direction {name!r} for the {self.pack.name} pack",
            hint=(f"did you mean {', '.join(close)}? " if close else "")
            + f"available: {', '.join(self.names())} (`dhr edit --list`)",
        )

    def get(self, name: str) -> Direction:
        if name in self._cache:
            return self._cache[name]
        self.check_name(name)
        if self.pack.name == "ffhq":
            from ..nets.checkpoints import torch_load

            reg, _, source = FFHQ_DIRECTIONS[name]
            raw = torch_load(_ffhq_file(reg, self.pack))
            unit = FFHQ_UNIT
        else:
            raw = self.pack.directions[name]
            source = f"{self.pack.name} pack, directions.safetensors"
            unit = self._synthetic_unit(name)
        vec = as_rows(
            raw,
            n_latent=self.n_latent,
            style_dim=self.style_dim,
            name=name,
            pack=self.pack.name,
        )
        d = Direction(name, vec, source, unit)
        self._cache[name] = d
        return d

    def _synthetic_unit(self, name: str) -> str:
        from ..packs import read_manifest

        info = (read_manifest().get("directions") or {}).get(name) or {}
        return str(info.get("unit", "std-units of the attribute (1.0 = +1 std)"))

    def user(self, path: Path) -> Direction:
        """A direction from a user file, checked against this pack (read once)."""
        key = f"file:{Path(path).resolve()}"
        if key not in self._cache:
            self._cache[key] = self._read_user(Path(path))
        return self._cache[key]

    def _read_user(self, path: Path) -> Direction:
        raw, meta = load_direction_file(path)
        declared = meta.get("pack")
        if declared and declared != self.pack.name:
            raise BadData(
                f"{path} is a direction for the {declared} pack, but the project was made with "
                f"the {self.pack.name} pack"
            )
        vec = as_rows(
            raw,
            n_latent=self.n_latent,
            style_dim=self.style_dim,
            name=str(path),
            pack=self.pack.name,
        )
        return Direction(Path(path).stem, vec, str(path), "as stored in the file")

    def pca(self) -> GanspacePCA:
        if not self.has_ganspace():
            raise UsageError(
                f"GANSpace edits need the ffhq pack; the {self.pack.name} pack has no PCA file",
                hint=f"use its directions instead: {', '.join(self.names())}",
            )
        if self._pca is None:
            from ..nets.checkpoints import torch_load

            state = torch_load(_ffhq_file(GANSPACE_FILE, self.pack))
            self._pca = GanspacePCA.from_state(state, 512)
        return self._pca

    def ganspace(self, spec: GanspaceSpec) -> GanspaceEdit:
        pca = self.pca()
        k = pca.comp.shape[0]
        if spec.component >= k:
            raise UsageError(f"--ganspace: component {spec.component} out of range (0..{k - 1})")
        if spec.end > self.n_latent:
            raise UsageError(
                f"--ganspace: rows {spec.start}:{spec.end} exceed the {self.n_latent} W+ rows"
            )
        return GanspaceEdit(
            spec.component, spec.start, spec.end, spec.strength, pca, preset=spec.preset
        )

    def named(self, name: str, strength: float, rows: tuple[int, int] | None) -> Edit:
        """A named edit: a pack direction, or (FFHQ) a GANSpace preset by name."""
        if name in GANSPACE_PRESETS and name not in self.names() and self.has_ganspace():
            k, a, b, _ = GANSPACE_PRESETS[name]
            return self.ganspace(GanspaceSpec(k, a, b, strength, preset=name))
        return LinearEdit(self.get(name), strength, rows)

    def resolve(
        self, request: EditRequest, overrides: dict[str, float] | None = None
    ) -> list[Edit]:
        """The request's edits for this pack. `overrides` replaces the strength of the edit with
        that name (a pack direction, a GANSpace preset or a --direction file's stem) or adds it:
        one frame of a sweep."""
        rows = parse_layers(request.layers, self.n_latent)
        overrides = dict(overrides or {})
        used: set[str] = set()
        edits: list[Edit] = []
        for name, strength in request.named:
            used.add(name)
            edits.append(self.named(name, overrides.get(name, strength), rows))
        for spec in request.ganspace:
            if spec.preset is not None and spec.preset in overrides:
                used.add(spec.preset)
                spec = GanspaceSpec(
                    spec.component, spec.start, spec.end, overrides[spec.preset], spec.preset
                )
            edits.append(self.ganspace(spec))
        for path, strength in request.directions:
            d = self.user(path)
            used.add(d.name)
            edits.append(LinearEdit(d, overrides.get(d.name, strength), rows))
        for name, strength in overrides.items():
            if name not in used:
                edits.append(self.named(name, strength, rows))
        return edits

    def listing(self) -> dict[str, Any]:
        """What `dhr edit --list` shows for this pack."""
        from .. import hub

        rows: list[dict[str, Any]] = []
        if self.pack.name == "ffhq":
            for name, (reg, shape, source) in FFHQ_DIRECTIONS.items():
                cached = hub.local_path(reg, models_dir=self.pack.models_dir) is not None
                rows.append(
                    {
                        "name": name,
                        "option": f"--{name}",
                        "shape": list(shape),
                        "unit": FFHQ_UNIT,
                        "source": "e4e release",
                        "detail": source,
                        "file": reg,
                        "cached": cached,
                    }
                )
            cached = hub.local_path(GANSPACE_FILE, models_dir=self.pack.models_dir) is not None
            for name, (k, a, b, s) in GANSPACE_PRESETS.items():
                rows.append(
                    {
                        "name": name,
                        "option": f"--ganspace {name}[:STRENGTH]",
                        "shape": [1, 512],
                        "unit": f"target std-units on component {k}, rows {a}:{b} (preset {s:g})",
                        "source": "e4e release",
                        "detail": "GANSpace preset, e4e release ganspace_pca/ffhq_pca.pt",
                        "file": GANSPACE_FILE,
                        "cached": cached,
                    }
                )
            extra = {
                "ganspace": "--ganspace IDX:START:END:STRENGTH (80 components, W+ rows "
                "START..END-1; STRENGTH = target coordinate in std units, e4e convention)"
            }
        else:
            for name in self.names():
                d = self.get(name)
                rows.append(
                    {
                        "name": name,
                        "option": f"--{name}" if name in DIRECTION_OPTIONS else f"--edit {name}=S",
                        "shape": list(d.vector.shape),
                        "unit": "std-units of the attribute",
                        "source": f"{self.pack.name} pack",
                        "detail": f"{d.source}; {d.unit}",
                        "file": self.pack.settings.models.get("directions"),
                        "cached": True,
                    }
                )
            extra = {}
        return {
            "pack": self.pack.name,
            "n_latent": self.n_latent,
            "directions": rows,
            **extra,
            "user_directions": f"--direction FILE[:STRENGTH] ([D], [1, D] or "
            f"[{self.n_latent}, D]; .pt, .npy or .safetensors)",
        }


# ============================================================================ rendering


def render_edit(
    generator: torch.nn.Module,
    project: Project,
    wplus: torch.Tensor,
    *,
    keep_out_of_domain: bool = True,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The aligned image [1, 3, S, S] of an edited W+ rendered the way the project's method
    renders (theta + stored delta; stored feature with the stored mask for DHR).

    keep_out_of_domain: for projects rendered with Eq. 4 (a stored feature mixed by a stored
    mask, i.e. DHR), also hold the out-of-domain *pixels*: out = r + m_e (edit - r), with r the
    unedited reconstruction and m_e the in-domain mask feathered inwards (`edit_blend_mask`).
    Holding the feature at layer l alone leaves the later layers and the RGB skip of the
    earlier ones free to follow the edited code, which moves occluders and backgrounds by a
    few grey levels (measured in benchmarks/edit_synthetic.py). A zero edit returns r exactly.
    reference: the unedited reconstruction when already rendered (sweeps reuse it).
    """
    from .refine import render_stored, stored_feature_mask

    mask = stored_feature_mask(project) if keep_out_of_domain else None
    try:
        img = render_stored(generator, project, wplus=wplus)
        if mask is None:
            return img
        if reference is None:
            reference = render_stored(generator, project)
    except ValueError as e:
        raise BadData(f"the project cannot be rendered: {e}") from e
    m = edit_blend_mask(mask, img.shape[-1]).to(img)
    return reference + m * (img - reference)


def edit_blend_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Where an edit may change pixels: the in-domain mask [1, 1, h, w] (1 = in-domain) at
    `size`, feathered *inwards* only (min of the mask and its Gaussian blur, sigma = size/64)
    so out-of-domain pixels keep exactly their reconstruction and the seam falls inside the
    face."""
    import torch
    import torch.nn.functional as F

    m = mask.to(torch.float32)
    if m.shape[-1] != size:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    sigma = size / 64
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    padded = F.pad(m, (r, r, r, r), mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return torch.minimum(m, blurred).clamp(0, 1)


def strip_image(frames: Sequence[np.ndarray], max_height: int = STRIP_MAX_HEIGHT) -> np.ndarray:
    """Frames side by side (each reduced to at most `max_height` rows, Lanczos)."""
    from PIL import Image

    out = []
    for f in frames:
        h, w = f.shape[:2]
        if h > max_height:
            size = (max(1, round(w * max_height / h)), max_height)
            f = np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS))
        out.append(f)
    return np.concatenate(out, axis=1)


# ============================================================================ names


def _fmt(x: float) -> str:
    return format(float(f"{x:.6g}"), "+g")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "direction"


def edit_tag(edits: Sequence[Edit], rows: tuple[int, int] | None = None) -> str:
    """File-name tag of a set of edits, e.g. 'smile+1.5_age-1' (rows: '_rows0-8')."""
    tag = "_".join(e.tag for e in edits) or "edit"
    if rows is not None and any(isinstance(e, LinearEdit) for e in edits):
        tag += f"_rows{rows[0]}-{rows[1]}"
    if len(tag) > MAX_TAG:
        import hashlib

        tag = tag[: MAX_TAG - 9] + "~" + hashlib.sha256(tag.encode()).hexdigest()[:8]
    return tag


# A signed strength as _fmt writes it, one edit's tag, and whole tags as edit_tag and Sweep.tag
# build them (names start with a letter so that dates such as 2024-05-01 are not taken for tags).
_NUM = r"[+-](?:\d+(?:\.\d+)?(?:e[+-]\d+)?|inf)"
_ONE_EDIT = rf"[A-Za-z][\w.-]*?{_NUM}"
_TAG = re.compile(
    rf"(?:sweep-[A-Za-z][\w.-]*?{_NUM}to{_NUM}x\d+|{_ONE_EDIT})(?:_{_ONE_EDIT})*(?:_rows\d+-\d+)?"
    r"|.+~[0-9a-f]{8}"
)


def is_edit_tag(text: str) -> bool:
    """Whether `text` is a tag `dhr edit` puts in its file names ('smile+1.5_age-1', ...)."""
    return _TAG.fullmatch(text) is not None


# ============================================================================ files


def _invert_time(path: Path) -> str | None:
    """The time of the last `invert` step in a project's history (None if never inverted)."""
    from ..project import read_metadata

    try:
        history = json.loads(read_metadata(path).get("history") or "[]")
    except (BadData, InputMissing, ValueError):
        return None
    times = [
        str(h.get("time")) for h in history if isinstance(h, dict) and h.get("step") == "invert"
    ]
    return max(times) if times else None


def latest_project(folder: Path | None = None) -> Path:
    """The project in `folder` (default: the current one) most recently written by `dhr invert`:
    newest invert time in its history, ties and never-inverted projects by file mtime."""
    from ..project import SUFFIX

    folder = Path(".") if folder is None else Path(folder)  # relative names in messages
    candidates = [p for p in folder.glob("*" + SUFFIX) if p.is_file()]
    if not candidates:
        raise InputMissing(
            f"no project file (*{SUFFIX}) in {folder.resolve()}",
            hint="run `dhr invert PHOTO` first, or name the photo: dhr edit PHOTO --smile 1.5",
        )

    def key(p: Path) -> tuple[int, str, float]:
        t = _invert_time(p)
        return (t is not None, t or "", p.stat().st_mtime)

    return max(candidates, key=key)


def _face_projects(photo: Path) -> list[Path]:
    """Every face project of a photo in invert's naming (face 1, then face2, face3, ...)."""
    from ..project import default_path

    first = default_path(photo)
    out = [first]
    k = 2
    while True:
        p = first.with_name(f"{photo.name}.face{k}.dhr")
        if not p.is_file():
            return out
        out.append(p)
        k += 1


def _find_photo(project: Project, project_path: Path) -> Path | None:
    """The project's source photo: beside the project (a moved folder), else where it was
    recorded; the first candidate with the recorded sha256 (BadData if only other versions
    of the photo are found)."""
    if project.source_path is None:
        return None
    src = Path(project.source_path)
    candidates = [project_path.parent / src.name, src]
    found = [c for c in dict.fromkeys(candidates) if c.is_file()]
    for c in found:
        try:
            project.check_source(c)
        except BadData:
            continue
        return c
    if found:
        project.check_source(found[0])  # raises: the photo was changed since `dhr invert`
    return None


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # identical to the reconstruction's resize in `dhr invert` (byte-identical round trip)
    from PIL import Image

    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


@dataclass
class _Face:
    path: Path
    project: Project
    identity: bool
    crop_size: int


@dataclass
class EditSession:
    """One `dhr edit` call: the request, output and paste options, and the packs and
    direction libraries loaded so far (models are loaded once for all inputs)."""

    request: EditRequest
    output: str | None = None  # -o as typed: a trailing '/' marks a folder
    many: bool = False
    pack_name: str | None = None  # --pack: the projects must have been made with it
    device: str = "cpu"
    models_dir: Path | None = None
    offline: bool | None = None
    frames: bool = False
    save: bool = False
    skip_existing: bool = False
    paste: bool = True
    keep_out_of_domain: bool = True
    blend_radius: float = 32.0
    format: str | None = None
    quality: int | None = None
    packs: dict[str, Pack] = field(default_factory=dict)
    libraries: dict[str, DirectionLibrary] = field(default_factory=dict)
    _ready: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ models

    def pack(self, name: str, *, render: bool = False) -> Pack:
        """The pack `name` (loaded once); `render`: check its generator file is at hand."""
        from ..packs import PACK_NAMES, apply_cpu_threads, load_pack

        if name not in PACK_NAMES:
            raise BadData(f"the project names an unknown pack {name!r}")
        if name not in self.packs:
            self.packs[name] = load_pack(
                name, device=self.device, models_dir=self.models_dir, offline=self.offline
            )
        p = self.packs[name]
        if render and name not in self._ready:
            p.require(["generator"] + (["directions"] if name == "synthetic" else []), lpips=())
            apply_cpu_threads(p)
            self._ready.add(name)
        return p

    def library(self, name: str) -> DirectionLibrary:
        if name not in self.libraries:
            self.libraries[name] = DirectionLibrary(self.pack(name))
        return self.libraries[name]

    def prepare(self, inputs: Sequence[Path]) -> None:
        """Fail fast, once for the whole batch: load the packs of the inputs' projects and
        resolve the request against each (unknown names, wrong shapes, missing direction files
        are errors of the command, not of one input). Unreadable inputs are left to
        `edit_input`, which reports them per input."""
        from ..project import project_path_for, read_metadata

        names: list[str] = []
        for arg in inputs:
            try:
                name = read_metadata(project_path_for(arg)).get("pack") or self.pack_name
            except (BadData, InputMissing):
                continue
            if name and name not in names:
                names.append(name)
        sweep = self.request.sweep
        overrides = {sweep.name: sweep.values[0]} if sweep is not None else {}
        for name in names:
            if self.pack_name is not None and name != self.pack_name:
                continue  # reported per input
            self.pack(name, render=True)
            self.library(name).resolve(self.request, overrides)

    # ------------------------------------------------------------ inputs

    def _faces_for(self, arg: Path) -> tuple[list[Path], Path | None]:
        """Project files and the photo (when given) for one command-line input."""
        from ..project import SUFFIX

        if arg.suffix == SUFFIX:
            if not arg.is_file():
                raise InputMissing(
                    f"project file not found: {arg}", hint="run `dhr invert PHOTO` first"
                )
            return [arg], None
        projects = _face_projects(arg)
        if not arg.exists():
            if projects[0].is_file():  # the photo moved after invert: its projects tell the rest
                return projects, None
            raise not_found(arg)
        if not projects[0].is_file():
            raise InputMissing(
                f"{arg} has no project file ({projects[0].name})",
                hint=f"run `dhr invert {arg}` first (or give the .dhr file)",
            )
        return projects, arg

    def _load(self, path: Path) -> _Face:
        from ..project import Project

        p = Project.load(path)
        if self.pack_name is not None and p.pack and p.pack != self.pack_name:
            raise BadData(
                f"{path} was made with the {p.pack} pack, not {self.pack_name}",
                hint=f"drop --pack or use --pack {p.pack}",
            )
        name = p.pack or self.pack_name or "ffhq"
        p.pack = name
        pack = self.pack(name, render=True)
        g = pack.generator
        if tuple(p.wplus.shape[1:]) != (g.n_latent, g.style_dim):
            raise BadData(
                f"{path}: its W+ code is {list(p.wplus.shape)}, but the {name} pack's generator "
                f"takes [1, {g.n_latent}, {g.style_dim}] (a project of another pack?)"
            )
        info = p.params.get("invert")
        if info is None:
            from .. import console

            console.log.warn(f"{path} was not refined by `dhr invert`: editing its encoder code")
            info = {}
        size = pack.settings.generator_size
        c2p = p.crop_to_photo
        identity = info.get("identity_alignment")
        if identity is None:
            identity = pack.settings.aligned_input or (
                c2p is not None and bool((c2p.numpy() == np.eye(3)).all())
            )
        if c2p is None and not identity and self.paste:
            raise BadData(f"{path} holds no alignment (align.crop_to_photo) to paste back with")
        return _Face(path, p, bool(identity), int(info.get("crop_size", size)))

    # ------------------------------------------------------------ outputs

    def _target(self, folder: Path, name: str) -> Path:
        """`-o FILE` (one input), `-o DIR/` (or an existing folder, or several inputs), else
        `name` in `folder` (beside the project)."""
        out = self.output
        if out is None:
            return folder / name
        if self._output_file() is None or self.many:
            return Path(out) / name
        return Path(out)

    def _output_file(self) -> str | None:
        """-o as typed when it names a file (not a folder), else None."""
        out = self.output
        if out is None or out.endswith(("/", os.sep)) or Path(out).is_dir():
            return None
        return out

    def check_output(self) -> None:
        """UsageError (before any work) for -o FILE with several inputs, or with a suffix that
        names another format than --format (`-o x.jpg --format png` wrote PNG into x.jpg)."""
        from ..faces import output_format, suffix_format

        out = self._output_file()
        if out is None:
            return
        if self.many:
            raise UsageError("-o FILE works with one input; give a folder (-o DIR/) for several")
        own = suffix_format(out)
        if self.format and own is not None and own != output_format("x", self.format):
            raise UsageError(
                f"-o {out} names another format than --format {self.format}",
                hint="drop --format, or give the file the format's suffix",
            )

    def output_warnings(self, inputs: Sequence[Path]) -> list[str]:
        """What the user may not expect: -o FILE with a suffix that is no image format (a typo
        such as .jgp) gets the source photo's format under that name; --quality does nothing
        when every image written is lossless."""
        from ..faces import suffix_format, unused_quality
        from ..project import SUFFIX

        warnings = []
        out = self._output_file()
        suffix = Path(out).suffix if out is not None else ""
        if suffix and not self.format and suffix_format(out) is None:
            warnings.append(
                f"-o {out}: {suffix!r} is not an image suffix; the file gets the photo's own "
                "format (choose one with --format or a suffix such as .png)"
            )
        # outputs take the photo's suffix; a project is named after its photo (x.png.dhr)
        written = (
            [out]
            if out is not None
            else [p.with_suffix("") if p.suffix == SUFFIX else p for p in inputs]
        )
        if quality := unused_quality(self.quality, written, self.format):
            warnings.append(quality)
        return warnings

    def clashes(self, inputs: Sequence[Path]) -> dict[Path, Path]:
        """Inputs of a batch whose edited images would replace those of an earlier input (same
        stem and suffix, same folder), each mapped to that input."""
        from ..faces import SAVE_FORMATS, output_format
        from ..pipeline import output_collisions

        if len(inputs) < 2:
            return {}
        forced = SAVE_FORMATS[output_format("x", self.format)] if self.format else None
        return output_collisions(inputs, self.output, per_suffix=True, forced_suffix=forced)

    # ------------------------------------------------------------ one input

    def edit_input(self, arg: Path) -> dict[str, Any]:
        """Edit one input (photo or project); returns a JSON-able record of what was written."""
        import torch

        from ..faces import SAVE_FORMATS, load_image, output_format, save_image
        from ..files import ensure_folder
        from ..pipeline import recon_extension, to_uint8
        from .refine import stored_feature_mask

        if self.request.empty:
            raise UsageError("nothing to edit", hint="e.g. --smile 1.5 (see `dhr edit --list`)")
        self.check_output()
        arg = Path(arg)
        paths, photo_path = self._faces_for(arg)
        faces = [self._load(p) for p in paths]
        main = faces[0]
        if photo_path is None:
            photo_path = _find_photo(main.project, main.path)
            if photo_path is None and self.paste:
                raise InputMissing(
                    f"the photo of {main.path} is missing: {main.project.source_path}",
                    hint="put the photo back beside the project, or use --no-paste",
                )
        photo = None
        if photo_path is not None:
            for f in faces:
                f.project.check_source(photo_path)
            photo = load_image(photo_path)
            # beside the project: where `dhr invert [-o DIR]` wrote the reconstruction too
            stem, folder = photo_path.stem, main.path.parent
            ext = recon_extension(photo, self.format)
        else:
            source = main.project.source_path
            stem = Path(source).stem if source else main.path.name.split(".")[0]
            folder = main.path.parent
            ext = SAVE_FORMATS[output_format("x", self.format)]
        pack_name = main.project.pack or "ffhq"
        lib = self.library(pack_name)
        rows = parse_layers(self.request.layers, lib.n_latent)

        sweep = self.request.sweep
        overrides = [{}] if sweep is None else [{sweep.name: v} for v in sweep.values]
        edit_sets = [lib.resolve(self.request, ov) for ov in overrides]
        tags = [edit_tag(es, rows) for es in edit_sets]
        if sweep is None:
            shown = edit_sets[0]
            tag = tags[0]
            frame_paths = [self._target(folder, f"{stem}.{tag}{ext}")]
            strip_path = None
        else:
            shown = [e for e in edit_sets[0] if _edit_name(e) != sweep.name]
            tag = sweep.tag + ("_" + edit_tag(shown, rows) if shown else "")
            strip_path = self._target(folder, f"{stem}.{tag}{ext}")
            frame_paths = (
                [strip_path.parent / f"{stem}.{t}{ext}" for t in tags] if self.frames else []
            )
        wanted = ([strip_path] if strip_path is not None else []) + frame_paths
        _refuse_overwriting(wanted, [p for p in (photo_path, *paths) if p is not None])
        record: dict[str, Any] = {
            "input": str(arg),
            "project": str(main.path),
            "pack": pack_name,
            "method": (main.project.params.get("invert") or {}).get("method", "encoder"),
            "edits": [e.describe() for e in shown],
            "tag": tag,
        }
        if len(faces) > 1:
            record["projects"] = [str(f.path) for f in faces]
        if self.skip_existing and all(p.exists() for p in wanted):
            return {**record, "skipped": True, "outputs": [str(p) for p in wanted]}

        generator = self.pack(pack_name, render=True).generator
        # the unedited reconstruction of each face whose out-of-domain pixels are held,
        # rendered once for every frame
        references = [
            render_edit(generator, f.project, f.project.wplus, keep_out_of_domain=False)
            if self.keep_out_of_domain and stored_feature_mask(f.project) is not None
            else None
            for f in faces
        ]
        images = []
        for edits in edit_sets:
            crops = []
            for f, reference in zip(faces, references, strict=True):
                w = f.project.wplus.to(torch.float32)
                img = render_edit(
                    generator,
                    f.project,
                    apply_edits(w, edits),
                    keep_out_of_domain=self.keep_out_of_domain,
                    reference=reference,
                )
                crops.append(to_uint8(img))
            images.append(self._compose(photo, faces, crops))

        like = photo if self.paste else None
        for path in wanted:
            ensure_folder(path)
        written: list[str] = []
        if strip_path is not None:
            save_image(
                strip_path, strip_image(images), like=like, format=self.format, quality=self.quality
            )
            written.append(str(strip_path))
            record["strip"] = str(strip_path)
            record["sweep"] = {"name": sweep.name, "values": sweep.values}
            record["frames"] = [str(p) for p in frame_paths]
        else:
            record["output"] = str(frame_paths[0])
        for path, img in zip(frame_paths, images, strict=False):
            save_image(path, img, like=like, format=self.format, quality=self.quality)
            written.append(str(path))
        record["outputs"] = written
        if self.save:
            from ..project import Project

            params: dict[str, Any] = {"edits": record["edits"], "tag": tag, "outputs": written}
            if sweep is not None:
                params["sweep"] = record["sweep"]
            if rows is not None:
                params["layers"] = list(rows)
            for f in faces:
                fresh = Project.load(f.path)  # what is on disk, plus one history entry
                fresh.record_step("edit", params)
                fresh.save(f.path)
            record["saved"] = True
        return record

    def _compose(
        self, photo: Photo | None, faces: list[_Face], crops: list[np.ndarray]
    ) -> np.ndarray:
        """Paste the crops into the photo exactly as `dhr invert` pastes its reconstruction."""
        from ..faces import paste_back

        if not self.paste or photo is None:
            return crops[0]
        image = photo.rgb
        for f, crop in zip(faces, crops, strict=True):
            if f.identity:
                image = _resize_rgb(crop, (photo.width, photo.height))
            else:
                image = paste_back(
                    image,
                    crop,
                    f.project.crop_to_photo.numpy(),
                    align_size=f.crop_size,
                    blend_radius=self.blend_radius,
                )
        return image

    def listing(self, pack_name: str) -> dict[str, Any]:
        """`dhr edit --list` for one pack (nothing is downloaded: FFHQ files show as cached
        or not)."""
        return self.library(pack_name).listing()


def _refuse_overwriting(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """UsageError when an output would replace the photo or a project being edited (-o photo.jpg
    would otherwise lose the original for good)."""
    for out in outputs:
        for src in inputs:
            if out.exists() and src.exists() and os.path.samefile(out, src):
                raise UsageError(
                    f"the output {out} is an input of this edit ({src}); it would be overwritten",
                    hint="give another file or a folder with -o",
                )


def _edit_name(e: Edit) -> str:
    if isinstance(e, LinearEdit):
        return e.direction.name
    return e.preset or f"ganspace{e.component}"

"""`Pack`: one face domain's networks, loaded lazily and once per process, as its description
(`PackSettings`) says. Nothing here knows a pack by name: the built-in ``ffhq`` and
``synthetic`` packs and a user's pack folder are all descriptions.

`load_pack(name_or_folder, device=..., models_dir=..., offline=...)` returns a cached `Pack`;
its models are built on first use (`pack.generator`, `pack.encoder`, ...). `pack.require()`
checks every file of a run up front and raises one `ModelUnavailable` naming all the missing
ones (the CLI's fail-fast path, exit code 5).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import hub
from ..errors import BadData
from ..files import sha256_file
from ..memory import return_free_memory
from ..nets.checkpoints import load_encoder, load_generator, read_tensor_file
from ..nets.parsing import load_parser
from ..synthetic import measure
from ..trust import Hashes
from . import shared
from .require import require_files
from .settings import FileRef, PackSettings, pack_settings

__all__ = ["Pack", "apply_cpu_threads", "load_pack"]

# (role, format) -> loader(path, device) of a network
_LOADERS: dict[tuple[str, str], Callable[[Path, str], nn.Module]] = {
    ("generator", "checkpoint"): lambda p, d: load_generator(p).to(d),
    ("generator", "dhr-synthetic"): measure.load_generator,
    ("encoder", "checkpoint"): lambda p, d: load_encoder(p).to(d),
    ("encoder", "dhr-synthetic"): measure.load_encoder,
    ("parser", "bisenet"): lambda p, d: load_parser(p, device=d),
    ("parser", "small-parser"): measure.load_parser,
}


class Pack:
    """One face domain's networks and settings; every network is built on first use.

    Attributes (lazy): `generator` (stylegan2.Generator, frozen, eval), `encoder` (e4e),
    `parser` (FaceParser / SmallParser: `.probabilities(img) -> [B,C,H,W]`), `lpips_vgg`,
    `lpips_alex` (`Perceptual`). `direction(name)` / `file(ref)` read the pack's files.
    `latent_stats()` -> (mean w [1,D], std) over 10,000 mapped samples (the projector's).
    `models_used` -> {file label: sha256} of the files loaded so far (for the project).
    """

    def __init__(
        self,
        settings: PackSettings,
        *,
        device: str = "cpu",
        models_dir: Path | None = None,
        offline: bool | None = None,
        modules: dict[str, Any] | None = None,
        builders: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        """`modules`: networks given ready-made (kept for the pack's life); `builders`: how to
        build a network instead of loading its file (stand-in packs)."""
        self.settings = settings
        self.name = settings.label
        self.device = device
        self.models_dir = models_dir
        self.offline = offline
        self._modules: dict[str, Any] = dict(modules or {})
        self._builders: dict[str, Callable[[], Any]] = dict(builders or {})
        self._given = frozenset(self._modules)
        self._paths: dict[str, Path] = {}  # file label -> local path
        self._read: dict[str, Any] = {}  # file label -> contents (directions, PCA)
        self._lock = threading.Lock()
        self._stats: tuple[Any, float] | None = None
        self._sha: dict[str, str] = {}
        self._file_hashes: dict[tuple[str, int, int], str] = {}

    # ---------------------------------------------------------------- files

    def file(self, ref: FileRef) -> Path:
        """Local verified path of one of the pack's files (registry files through the hub)."""
        if ref.label not in self._paths:
            if ref.path is not None:
                self._paths[ref.label] = ref.path
            else:
                self._paths[ref.label] = hub.fetch(
                    ref.model, models_dir=self.models_dir, offline=self.offline
                )
        return self._paths[ref.label]

    def path(self, role: str) -> Path:
        """Local verified path of the file playing `role`."""
        return self.file(self.settings.files[role])

    def require(
        self,
        roles: Sequence[str] = ("generator", "encoder", "parser"),
        *,
        lpips: Sequence[str] = ("vgg", "alex"),
        detector: str | None = None,
        fast: bool = False,
    ) -> None:
        """Make sure every file a run needs is at hand, before any work starts
        (`require.require_files`; networks in memory, or built by a builder, need no file)."""
        found = require_files(
            self.settings,
            roles,
            lpips=lpips,
            detector=detector,
            fast=fast,
            models_dir=self.models_dir,
            offline=self.offline,
            loaded={*self._modules, *self._builders},
        )
        for role in roles:
            ref = self.settings.files.get(role)
            if ref is not None and ref.label in found:
                self._paths.setdefault(ref.label, found[ref.label])

    @property
    def models_used(self) -> dict[str, str]:
        """{file label: sha256} of the pack files loaded so far (registry name, or the path of
        a pack folder's file)."""
        out = {}
        for label, path in self._paths.items():
            if label not in self._sha:
                self._sha[label] = self._sha256(label, path)
            out[label] = self._sha[label]
        return out

    def _sha256(self, label: str, path: Path) -> str:
        if label in hub.registry():
            # a pinned hash, or the one recorded when the hub first verified the file: never
            # re-hash a multi-hundred-MB generator just to label a project
            return hub.get(label).sha256 or self._first_use_sha(label)
        return self._file_sha(path)

    def _file_sha(self, path: Path) -> str:
        """sha256 of a pack folder's file, hashed again only when its size or mtime moved."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._file_hashes:
            self._file_hashes[key] = sha256_file(path)
        return self._file_hashes[key]

    def _first_use_sha(self, name: str) -> str:
        """The hash the hub recorded when it first verified an unpinned file ("" if none)."""
        try:
            rec = Hashes(hub.cache_dir(self.models_dir)).first_use(name) or {}
        except Exception:  # noqa: BLE001 - a label only; the file itself was verified by fetch
            rec = {}
        return str(rec.get("sha256", ""))

    def check_unchanged(self, recorded: dict[str, str]) -> None:
        """BadData when a file of this pack folder differs from the one `recorded` (a
        project's models) was made with."""
        if self.settings.folder is None:
            return
        for ref in self.settings.files.values():
            label = ref.label
            if ref.path is None or label not in recorded:
                continue
            if self._file_sha(ref.path) != recorded[label]:
                raise BadData(
                    f"{ref.path} has changed since the project was made with the pack "
                    f"{self.settings.folder}",
                    hint="restore the pack's file, or run `dhr invert` again with this pack",
                )

    # ---------------------------------------------------------------- modules

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._modules:
                module = self._builders.get(key, build)()
                if hasattr(module, "requires_grad_"):
                    module.requires_grad_(False)
                    module.eval()
                self._modules[key] = module
            return self._modules[key]

    def release(self, key: str) -> bool:
        """Drop a loaded network that can be built again (from its file or its builder) to
        free its memory; the next use loads it anew. Networks given ready-made stay.
        Returns whether it was dropped."""
        rebuildable = key in self._builders or key in self.settings.files
        with self._lock:
            if key in self._given or not rebuildable or self._modules.pop(key, None) is None:
                return False
        return_free_memory()
        return True

    def _network(self, role: str) -> nn.Module:
        ref = self.settings.files[role]
        return _LOADERS[(role, ref.format)](self.file(ref), self.device)

    @property
    def generator(self) -> nn.Module:
        return self._get("generator", self._build_generator)

    @property
    def encoder(self) -> nn.Module:
        return self._get("encoder", self._build_encoder)

    @property
    def parser(self) -> nn.Module:
        return self._get("parser", lambda: self._network("parser"))

    @property
    def lpips_vgg(self) -> nn.Module:
        return self._get("lpips_vgg", lambda: self._build_lpips("vgg"))

    @property
    def lpips_alex(self) -> nn.Module:
        return self._get("lpips_alex", lambda: self._build_lpips("alex"))

    def _build_generator(self) -> nn.Module:
        g = self._network("generator")
        s = self.settings
        if (g.size, g.n_latent, g.style_dim) != (s.generator_size, s.n_latent, s.style_dim):
            raise BadData(
                f"the {self.name} generator is {g.size} px with {g.n_latent} W+ rows of "
                f"{g.style_dim}; the pack says {s.generator_size} px with {s.n_latent} rows of "
                f"{s.style_dim}",
                hint="fix the pack's settings (generator_size, n_latent, style_dim)",
            )
        return g

    def _build_encoder(self) -> nn.Module:
        e = self._network("encoder")
        rows = getattr(e, "n_styles", None)
        if rows is not None and rows != self.settings.n_latent:
            raise BadData(
                f"the {self.name} encoder writes {rows} W+ rows; the generator takes "
                f"{self.settings.n_latent}"
            )
        return e

    def _build_lpips(self, net: str) -> nn.Module:
        return shared.lpips(
            net, device=self.device, models_dir=self.models_dir, offline=self.offline
        )

    def read(self, ref: FileRef) -> Any:
        """A direction or PCA file's contents (read once, without executing code)."""
        if ref.label not in self._read:
            self._read[ref.label] = read_tensor_file(self.file(ref))[0]
        return self._read[ref.label]

    def direction(self, name: str) -> Any:
        """The raw tensor of the pack's direction `name` (checked by the caller)."""
        info = self.settings.directions[name]
        data = self.modules_direction(name)
        if data is not None:
            return data
        raw = self.read(info.file)
        if info.key is not None:
            if not isinstance(raw, dict) or info.key not in raw:
                raise BadData(f"{info.file.label} holds no direction {info.key!r}")
            return raw[info.key]
        return raw

    @property
    def directions(self) -> dict[str, Any]:
        """Every direction of the pack by name, raw (reads all their files)."""
        given = self._modules.get("directions")
        if given is not None:
            return given
        return {n: self.direction(n) for n in self.settings.directions}

    def modules_direction(self, name: str) -> Any:
        """A direction given in memory (`modules={"directions": {...}}`), else None."""
        given = self._modules.get("directions")
        return None if given is None else given.get(name)

    def latent_stats(self, n: int = 10000, seed: int = 0) -> tuple[torch.Tensor, float]:
        """(mean w [1, D], std) of `n` mapped standard-normal samples (rosinality's projector:
        std = sqrt(sum ||w - mean||^2 / n)); computed once per pack."""
        if self._stats is None:
            g = self.generator
            gen = torch.Generator(device="cpu").manual_seed(seed)
            z = torch.randn(n, g.style_dim, generator=gen).to(self.device)
            with torch.no_grad():
                w = g.mapping(z)
            mean = w.mean(0, keepdim=True)
            std = float(((w - mean).pow(2).sum() / n).sqrt())
            self._stats = (mean, std)
        return self._stats

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "pack": self.name,
            "generator_size": s.generator_size,
            "feature_layer": s.feature_layer,
            "coarse_res": s.coarse_res,
            "ood_classes": list(s.ood_classes),
            "settings": s.provenance,
        }


def apply_cpu_threads(pack: Pack) -> None:
    """Limit torch's intra-op threads to the pack's `cpu_threads` when running on the CPU."""
    n = pack.settings.cpu_threads
    if n and str(pack.device).startswith("cpu") and torch.get_num_threads() > n:
        torch.set_num_threads(n)


_PACKS: dict[tuple[Any, ...], Pack] = {}
_PACKS_LOCK = threading.Lock()


def load_pack(
    name: str,
    *,
    device: str = "cpu",
    models_dir: Path | None = None,
    offline: bool | None = None,
) -> Pack:
    """The pack `name` (a built-in pack, or a pack folder), one instance per process and
    device."""
    settings = pack_settings(name)
    key = (settings.label, str(device), str(models_dir), offline)
    with _PACKS_LOCK:
        if key not in _PACKS:
            _PACKS[key] = Pack(settings, device=str(device), models_dir=models_dir, offline=offline)
        return _PACKS[key]

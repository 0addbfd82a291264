"""One benchmark process's models and engines (`Bench`): setup (engines, directions, identity
network, warm-up) and `run_item`, which measures every method on one image: fidelity,
segmentation, edit error, wall / CPU time, peak memory, and grid thumbnails for the first K
images. Torch, the engines and the networks are imported when a benchmark is set up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .. import console
from ..app.options import EngineOptions, FaceOptions
from ..errors import BadData, DhrError, ModelUnavailable, UsageError
from ..files import atomic_write, ensure_folder
from ..project import Project
from ..runtime import seed_everything
from ..synthetic.benchset import make_sample
from .config import DEFAULT_DIR, BenchConfig, BenchItem
from .edits import edit_errors, no_edit_reference
from .metrics import fidelity, iou, peak_rss_mb, reset_peak_rss
from .results import finite
from .thumbs import png_b64

if TYPE_CHECKING:
    from ..packs import Pack

ProgressFn = Callable[[dict[str, Any]], None]


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
            from ..packs import load_pack

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
        roles: set[str] = set()
        lpips_nets: set[str] = {"alex"}
        for m in self.config.methods:
            need = EngineOptions(method=m).needs(segment=m == "dhr")
            roles |= set(need["roles"])
            lpips_nets |= set(need["lpips"])
        detector = None if self.config.aligned else "retinaface"
        self.pack.require(sorted(roles), lpips=sorted(lpips_nets), detector=detector)
        # a misspelt --grid-edit stops the run here, not as a notice after hours of work
        from ..app.directions import DirectionLibrary

        try:
            DirectionLibrary(self.pack).check_name(self.config.grid_edit[0])
        except DhrError as e:
            raise UsageError(f"--grid-edit: {e.message}", hint=e.hint) from e

    def setup(self) -> None:
        """Engines, directions, identity network; warm-up so first-call costs are not timed."""
        from ..app.engine import Engine
        from ..packs import apply_cpu_threads

        t0 = time.perf_counter()
        c = self.config
        pack = self.pack
        apply_cpu_threads(pack)
        faces = FaceOptions(aligned=c.aligned)
        for m in c.methods:
            options = EngineOptions(method=m, seed=c.seed, faces=faces, **c.overrides())
            self.engines[m] = Engine(pack, options)
        self._setup_edits()
        if not pack.settings.identities:
            self.notices.append(
                f"identity similarity not computed (the {pack.name} domain has no identities)"
            )
        elif c.identity:
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
        from ..app.directions import DirectionLibrary

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
        from ..packs.shared import identity_encoder

        c = self.config
        try:
            self.identity = identity_encoder(
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
        from ..app.engine import Engine
        from ..faces import identity_alignment

        pack = self.pack
        s = pack.settings
        if s.aligned_input:
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
        path = Path(self.config.projects or DEFAULT_DIR / "projects") / f"{item.id}.png"
        if not path.is_file():
            ensure_folder(path)
            with atomic_write(path) as f:
                Image.fromarray(sample.image).save(f, format="PNG")
        return path

    def _reusable(self, path: Path, photo: Path, method: str) -> Any:
        """The stored project if it was made by this method with these settings, else None."""
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

        from ..method.render import to_uint8

        c = self.config
        pack = self.pack
        sample = None
        t = time.perf_counter()
        if item.stratum is not None:
            from ..faces import identity_alignment

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
            record["reference"] = {"edit": no_edit_reference(sample, self.library)}
        record["align_s"] = align_s
        grid: dict[str, Any] | None = None
        if item.position < c.grid:
            grid = {"id": item.id, "stratum": item.stratum, "input": png_b64(target)}
            if true_ood is not None:
                grid["true_mask"] = png_b64(np.where(true_ood, 0, 255).astype(np.uint8))
                truth = sample.edits.get(c.grid_edit)
                if truth is not None:
                    grid["true_edit"] = png_b64(truth.image)
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
        record = finite(record)
        if grid is not None:
            record["_grid"] = grid
        return record

    def _run_method(
        self, item: BenchItem, method: str, aligned: Any, sample: Any, target: np.ndarray
    ) -> tuple[dict[str, Any], dict[str, str]]:
        import torch

        from ..app.invert import build_project
        from ..method.render import render_stored, to_uint8

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
                built = build_project(engine, photo, r)
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
            thumbs["recon"] = png_b64(recon)
            if mask is not None:
                thumbs["mask"] = png_b64(
                    np.where(mask[0, 0].cpu().numpy() >= 0.5, 255, 0).astype(np.uint8)
                )
        t = time.perf_counter()
        if self.library is not None:
            edit, grid_img = edit_errors(self, project, recon, sample)
            if edit:
                out["edit"] = edit
            if grid_item and grid_img is not None:
                thumbs["edit"] = png_b64(grid_img)
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

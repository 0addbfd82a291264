"""`dhr invert` + `dhr edit --smile 1` at the ffhq pack's real size, stage by stage.

The ffhq pack's networks at their real shapes with deterministic stand-in weights
(`packs.stand_in.full_size_pack`: config-f 1024 generator, IR-SE50 e4e, BiSeNet, LPIPS VGG/Alex;
no files, no network) on skimage's astronaut, detected with MTCNN. Defaults: the released DHR
step counts (40 coarse steps, 100 refinement steps of which 50 tune the weights).

Prints the wall time of each stage (detect + align, encode, segment, refine's weight phase,
refine's feature phase, render + save the project, edit, paste), this machine's float32 matmul
GFLOP/s and each stage's achieved fraction of it (FLOPs counted by torch's FlopCounterMode:
convolutions and matmuls; in the loops one step, times the number of steps), the FLOPs' time
at the matmul rate (the floor), the peak RSS, the project file's size, and with --curve the
project size versus render error of the storage choices; the last line is one JSON object.

    python benchmarks/ffhq_speed.py --curve                 # released defaults (~20 min, 2 cores)
    python benchmarks/ffhq_speed.py --coarse-steps 4 --steps 6 --weight-steps 3 --curve
    python benchmarks/ffhq_speed.py --device cuda           # on a GPU (peak GPU memory too)
    python benchmarks/ffhq_speed.py --curve-from DIR/refinement_float32.pt   # the curve alone
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from dhr_cli.app.engine import Engine
from dhr_cli.app.invert import build_project
from dhr_cli.app.options import EngineOptions, FaceOptions
from dhr_cli.faces import load_image
from dhr_cli.faces.paste import paste_faces
from dhr_cli.method.render import render_edit, to_uint8
from dhr_cli.packs.stand_in import full_size_pack
from dhr_cli.project import Project


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str = "cpu", n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stages:
    """Wall time and FLOPs per stage."""

    def __init__(self, count_flops: bool) -> None:
        self.count = count_flops
        self.times: dict[str, float] = {}
        self.flops: dict[str, int] = {}
        self.rss: dict[str, float] = {}  # peak RSS (MB) at the end of each stage

    @contextmanager
    def stage(self, name: str):
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False) if self.count else nullcontext()
        t = time.perf_counter()
        with mode:
            yield mode
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t
        self.rss[name] = peak_rss_mb()
        if self.count:
            self.flops[name] = self.flops.get(name, 0) + mode.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--coarse-steps", type=int, default=40)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--weight-steps", type=int, default=None, help="default: min(50, steps/2)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    ap.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    ap.add_argument("--curve", action="store_true", help="project size vs render error")
    ap.add_argument("--out", type=Path, default=None, help="keep the files here")
    ap.add_argument(
        "--curve-from",
        type=Path,
        default=None,
        metavar="PT",
        help="only the curve, of a kept refinement_float32.pt (--curve writes one into --out)",
    )
    args = ap.parse_args(argv)
    if args.curve_from:
        return curve_only(args.curve_from, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    weight_steps = args.weight_steps if args.weight_steps is not None else min(50, args.steps // 2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {os.getloadavg()}")
    gflops = matmul_gflops(args.device)
    print(f"matmul: {gflops:.1f} GFLOP/s (float32, 2048 x 2048, {args.device})")

    t = time.perf_counter()
    pack = full_size_pack(0, device=args.device)
    pack.latent_stats()
    print(
        f"stand-in pack built in {time.perf_counter() - t:.1f} s; peak RSS {peak_rss_mb():.0f} MB"
    )
    from PIL import Image
    from skimage import data

    out = args.out or Path(tempfile.mkdtemp(prefix="ffhq_speed_"))
    out.mkdir(parents=True, exist_ok=True)
    photo_path = out / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo_path)

    opts = EngineOptions(
        method="dhr",
        steps=args.steps,
        weight_steps=weight_steps,
        coarse_steps=args.coarse_steps,
        faces=FaceOptions(detector="mtcnn"),
    )
    st = Stages(not args.no_flops)
    marks: dict[str, float] = {}
    sampled: dict[str, int] = {}  # FLOPs of one step of each loop, and of what follows it

    class Sample:
        """FLOPs of chosen steps only: a counting mode held over the whole refinement keeps
        memory alive (peak RSS 5.2 GB instead of 3.8 GB at the released step counts), and
        every step of a loop costs the same FLOPs."""

        def __init__(self) -> None:
            self.mode = None

        def start(self) -> None:
            if st.count and self.mode is None:
                from torch.utils.flop_counter import FlopCounterMode

                self.mode = FlopCounterMode(display=False)
                self.mode.__enter__()

        def stop(self, key: str | None) -> None:
            """Stop counting; keep the count under `key` (None: discard it)."""
            if self.mode is not None:
                self.mode.__exit__(None, None, None)
                if key is not None:
                    sampled[key] = sampled.get(key, 0) + self.mode.get_total_flops()
                self.mode = None

    @contextmanager
    def progress(label: str, total: int, key: str | None, *_more):
        """The engine's stages (segment, refine) timed as `dhr invert` runs them."""
        name = "segment" if label == "segment" else "refine"
        sample = Sample()

        def cb(step: int, value) -> None:
            # the second step of each loop is counted (the first carries the loop's set-up,
            # the first feature step the constant prefix)
            if name == "segment":
                if step == 1:
                    sample.stop("segment: step")
                if step == 0:
                    sample.stop(None)
                    sample.start()
                if step == args.coarse_steps - 1:
                    sample.start()  # then the full-size loss maps and the parser
                return
            if step == 1 and weight_steps >= 2:
                sample.stop("refine: weight step")
            if step == weight_steps + 1:
                sample.stop("refine: feature step")
            if step in (0, weight_steps):
                sample.stop(None)
                sample.start()
            if step == weight_steps - 1:
                marks["weights_end"] = time.perf_counter()
                st.rss["refine: weights"] = peak_rss_mb()

        marks[f"{name}_start"] = time.perf_counter()
        sample.start()
        yield cb
        sample.stop("segment: tail" if name == "segment" else None)
        marks[f"{name}_end"] = time.perf_counter()
        st.rss["segment" if name == "segment" else "refine: feature"] = peak_rss_mb()

    engine = Engine(pack, opts, progress=progress)
    if args.curve:  # keep the float32 result the storage error is measured against
        from dataclasses import replace as dc_replace

        base_config = engine.refine_config
        engine.refine_config = lambda: dc_replace(base_config(), keep_raw=True)
    t_all = time.perf_counter()
    photo = load_image(photo_path)
    with st.stage("detect"):
        faces = engine.align(photo)
    aligned = faces[0]
    t = time.perf_counter()
    # as `dhr invert` runs it: encode, segment, refine, then the reconstruction
    result = engine.invert_face(aligned)
    face_s = time.perf_counter() - t
    st.times["encode"] = result.times["encode"]
    st.times["segment"] = marks["segment_end"] - marks["segment_start"]
    refine_s = marks["refine_end"] - marks["refine_start"]
    st.times["refine: weights"] = (
        marks.get("weights_end", marks["refine_start"]) - marks["refine_start"]
    )
    st.times["refine: feature"] = refine_s - st.times["refine: weights"]
    if st.count:  # sampled steps x their count (see `Sample`)
        feature_steps = args.steps - weight_steps
        st.flops["segment"] = sampled.get("segment: step", 0) * args.coarse_steps + sampled.get(
            "segment: tail", 0
        )
        st.flops["refine: weights"] = sampled.get("refine: weight step", 0) * weight_steps
        st.flops["refine: feature"] = sampled.get("refine: feature step", 0) * feature_steps
    # the rest of invert_face: the reconstruction render and its metrics
    rest = face_s - st.times["encode"] - st.times["segment"] - refine_s
    with st.stage("render + save"):
        project = build_project(engine, photo_path, result)
        path = project.save(out / "astronaut.png.dhr")
    st.times["render + save"] += rest
    project_mb = path.stat().st_size / 1e6

    g = pack.generator
    direction = torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(1))
    direction = direction / direction.norm()
    with st.stage("edit"):
        p = Project.load(path)
        crop_edit = to_uint8(render_edit(g, p, p.wplus + direction))
    with st.stage("paste"):
        image = paste_faces(photo, [(crop_edit, p.crop_to_photo.numpy(), None)])
    _sync(args.device)
    total = time.perf_counter() - t_all
    Image.fromarray(image).save(out / "astronaut_smile.png")

    print(
        f"\nastronaut {photo.width}x{photo.height}; face crop {aligned.size} px; "
        f"coarse {args.coarse_steps}, refine {args.steps} ({weight_steps} weight) steps"
    )
    print(
        f"{'stage':<18}{'wall s':>9}{'GFLOP':>10}{'GFLOP/s':>10}{'of matmul':>11}"
        f"{'peak RSS MB':>13}"
    )
    for name, sec in st.times.items():
        fl = st.flops.get(name)
        rss_at = f"{st.rss[name]:>13.0f}" if name in st.rss else f"{'-':>13}"
        if fl:
            rate = fl / 1e9 / max(sec, 1e-9)
            print(
                f"{name:<18}{sec:>9.1f}{fl / 1e9:>10.0f}{rate:>10.1f}{rate / gflops:>10.0%}"
                + rss_at
            )
        else:
            print(f"{name:<18}{sec:>9.1f}{'-':>10}{'-':>10}{'-':>11}" + rss_at)
    print(f"{'total':<18}{total:>9.1f}")
    floor = None
    if st.count:  # the counted FLOPs at this machine's matmul rate: no kernel beats this
        floor = sum(st.flops.values()) / 1e9 / gflops
        print(f"{'FLOPs at matmul':<18}{floor:>9.1f}   (the floor at full efficiency)")
    rss = peak_rss_mb()
    print(
        f"peak RSS {rss:.0f} MB; project file {project_mb:.1f} MB; "
        f"metrics {json.dumps({k: round(v, 4) for k, v in result.metrics.items()})}"
    )
    record = {
        "total_s": round(total, 1),
        "stages_s": {k: round(v, 1) for k, v in st.times.items()},
        "peak_rss_mb": round(rss),
        "project_mb": round(project_mb, 2),
        "matmul_gflops": round(gflops, 1),
        "device": args.device,
        "peak_gpu_mb": (
            round(torch.cuda.max_memory_allocated() / 2**20)
            if args.device.startswith("cuda")
            else None
        ),
        "flops_floor_s": None if floor is None else round(floor, 1),
        "coarse_steps": args.coarse_steps,
        "steps": args.steps,
        "weight_steps": weight_steps,
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    if args.curve:
        ref = result.refinement  # the float32 result, for storage experiments
        raw = {
            "wplus": ref.wplus,
            "deltas": ref.raw_deltas,
            "feature": ref.raw_feature,
            "layer": ref.layer,
            "mask": result.mask,
            "seed": 0,
        }
        torch.save(raw, out / "refinement_float32.pt")
        record["curve"] = size_curve(pack.generator, raw, out)
    print(json.dumps(record))
    return 0


def curve_only(path: Path, out: Path | None) -> int:
    """The size-versus-error curve of a kept float32 refinement (`--curve`'s
    refinement_float32.pt), without running the face again."""
    raw = torch.load(path, map_location="cpu")
    out = out or Path(tempfile.mkdtemp(prefix="ffhq_curve_"))
    out.mkdir(parents=True, exist_ok=True)
    pack = full_size_pack(int(raw.get("seed", 0)))
    rows = size_curve(pack.generator, raw, out)
    print(json.dumps({"refinement": str(path), "curve": rows}))
    return 0


# (delta_dtype, delta_group, delta_int8_from, feature_storage); "int8 from 256": the layers
# from 256 px up, the modulation weights from 128 px up and the small tensors in 8 bits
# (`nets.weight_delta.delta_bits`)
CURVE_CHOICES = [
    ("float16", 64, None, "float32"),  # format 1.0's layout
    ("int8", 64, None, "float16-masked"),
    ("int8", 64, None, "int8-masked"),
    ("int4", 64, 256, "int8-masked"),  # the ffhq pack's setting
    ("int4", 32, None, "int8-masked"),
    ("int4", 64, None, "int8-masked"),
    ("int4", 128, None, "int8-masked"),
]


def size_curve(g, raw: dict, out: Path) -> list[dict]:
    """Project size vs render error (8-bit, against the float32 refinement `raw`) of the
    storage choices (re-refined deltas are not needed: the float32 ones are kept)."""
    from dhr_cli.method.recipe import RenderRecipe
    from dhr_cli.method.refine import RefineConfig, storable_deltas, storable_feature
    from dhr_cli.method.render import render

    raw_d, raw_f, wplus, layer, mask = (
        raw[k] for k in ("deltas", "feature", "wplus", "layer", "mask")
    )
    exact = to_uint8(
        render(g, wplus, deltas=raw_d, feature=raw_f, layer=layer, feature_mask=mask)
    ).astype(np.int16)
    rows = []
    print("\nstorage (deltas / feature)              MB   p99.9   mean  max   [8-bit abs diff]")
    for dd, group, int8_from, fs in CURVE_CHOICES:
        cfg = RefineConfig(
            delta_dtype=dd, delta_group=group, delta_int8_from=int8_from, feature_storage=fs
        )
        d = storable_deltas(raw_d, cfg)
        f = storable_feature(raw_f, mask, cfg)
        img = to_uint8(
            render(g, wplus, deltas=d, feature=f, layer=layer, feature_mask=mask)
        ).astype(np.int16)
        diff = np.abs(img - exact)
        p = Project(pack="ffhq")
        p.wplus, p.mask, p.feature, p.deltas = wplus, mask, f, d
        recipe = RenderRecipe(method="dhr", layer=layer, feature_mask="in_domain")
        p.params["invert"] = {**cfg.params(), **recipe.to_params()}
        path = p.save(out / "curve.dhr")
        q = Project.load(path)
        same = torch.equal(q.feature, f) and all(
            torch.equal(q.deltas[k].float(), v.float()) for k, v in d.items()
        )
        name = dd if dd == "float16" else f"{dd}/g{group}"
        row = {
            "deltas": name + (f", int8 from {int8_from}" if int8_from else ""),
            "feature": fs,
            "mb": round(path.stat().st_size / 1e6, 2),
            "p999": float(np.percentile(diff, 99.9)),
            "mean": round(float(diff.mean()), 4),
            "max": int(diff.max()),
            "file_equals_memory": bool(same),
        }
        rows.append(row)
        print(
            f"{row['deltas']:<26} {fs:<14}{row['mb']:>7.2f}{row['p999']:>8.1f}"
            f"{row['mean']:>7.3f}{row['max']:>5}   file==memory {row['file_equals_memory']}"
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic face domain: renderer speed and sample sheets.

    python benchmarks/synthetic_render.py               # speed + sheets into docs/
    python benchmarks/synthetic_render.py --no-sheets   # speed only

Writes (by default into docs/):
  synthetic_renders.png   8x8 clean random faces (64 px each)
  synthetic_occluded.png  8x8 faces with random occluders (rows 1-5) and textured backgrounds
                          (rows 6-8)
  synthetic_masks.png     the true out-of-domain masks of synthetic_occluded.png (white = OOD)
  synthetic_sweeps.png    smile (rows 1-4) and age (rows 5-8) sweeps, z from -2.5 to +2.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import benchset as B
from dhr_cli.synthetic import occluders as O
from dhr_cli.synthetic import render as R

ROOT = Path(__file__).resolve().parents[1]


def grid(images: list[np.ndarray], cols: int = 8) -> np.ndarray:
    rows = [np.concatenate(images[i : i + cols], axis=1) for i in range(0, len(images), cols)]
    return np.concatenate(rows, axis=0)


def speed(n: int, size: int) -> tuple[float, float]:
    """Faces per second of wall time and of this process's CPU time (the CPU is shared)."""
    z = A.sample_z(np.random.default_rng(0), n)
    R.render(z[0], size=size)  # warm caches
    t, c = time.perf_counter(), time.process_time()
    for zi in z:
        R.render(zi, size=size)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--n", type=int, default=500, help="faces timed per size")
    ap.add_argument("--no-sheets", action="store_true")
    args = ap.parse_args()

    for size in (64, 128):
        wall, cpu = speed(args.n if size == 64 else args.n // 4, size)
        print(
            f"render {size}px (4x supersampling): {wall:7.1f} faces/s wall ({1000 / wall:.2f} ms), "
            f"{cpu:7.1f} faces/s per CPU-second ({1000 / cpu:.2f} ms)"
        )
    t = time.perf_counter()
    bench = B.make_benchset(60, seed=0)
    dt = time.perf_counter() - t
    per = dt / len(bench)
    print(
        f"benchmark set: {per * 1000:.1f} ms/sample (image + 8 true edits), counts {bench.counts()}"
    )

    if args.no_sheets:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    faces = [R.render(z).image for z in A.sample_z(rng, 64)]
    Image.fromarray(grid(faces)).save(args.out / "synthetic_renders.png")

    rng = np.random.default_rng(7)
    images, masks = [], []
    for i in range(64):
        face = R.render(A.sample_z(rng))
        if i < 40:
            layer = O.random_occluders(face.geometry, rng, skin_tone=face.params["skin_tone"])
            comp = O.composite(face, layer)
        else:
            comp = O.composite(face, background=O.texture_background(rng))
        images.append(comp.image)
        masks.append(np.repeat(np.where(comp.ood_mask, 255, 0).astype(np.uint8)[..., None], 3, 2))
    Image.fromarray(grid(images)).save(args.out / "synthetic_occluded.png")
    Image.fromarray(grid(masks)).save(args.out / "synthetic_masks.png")

    rng = np.random.default_rng(11)
    sweep = []
    for attr in ("smile", "age"):
        for z in A.sample_z(rng, 4):
            for v in np.linspace(-2.5, 2.5, 8):
                zz = z.copy()
                zz[A.ATTRIBUTE_INDEX[attr]] = v
                sweep.append(R.render(zz).image)
    Image.fromarray(grid(sweep)).save(args.out / "synthetic_sweeps.png")
    print(f"sheets written to {args.out}")


if __name__ == "__main__":
    main()

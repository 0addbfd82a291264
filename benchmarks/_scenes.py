"""What the scene benchmarks (engine_synthetic.py, edit_synthetic.py) share: their options,
the pack they measure (under the pack's own thread policy, as `dhr invert` runs it), the
occluded scenes of the benchmark set and the --json file that describes that set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from dhr_cli.packs import Pack, apply_cpu_threads, load_pack, synthetic_pack_from
from dhr_cli.synthetic.benchset import BenchSample, BenchSet, make_benchset


def scene_arguments(doc: str | None, methods: tuple[str, ...]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=30, help="benchmark set size (a third is occluded)")
    ap.add_argument("--seed", type=int, default=0, help="benchmark set seed (0 = default set)")
    ap.add_argument(
        "--methods",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=list(methods),
        help=f"comma-separated (default: {','.join(methods)})",
    )
    ap.add_argument(
        "--pack-dir", type=Path, default=None, help="a pack folder instead of the bundled one"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the pack's policy)"
    )
    ap.add_argument("--limit", type=int, default=None, help="only the first K occluded scenes")
    ap.add_argument("--json", type=Path, default=None)
    return ap


def open_pack(args: argparse.Namespace) -> Pack:
    if args.threads:
        torch.set_num_threads(args.threads)
    pack = synthetic_pack_from(args.pack_dir) if args.pack_dir else load_pack("synthetic")
    if not args.threads:
        apply_cpu_threads(pack)
    return pack


def occluded_scenes(args: argparse.Namespace) -> tuple[BenchSet, list[BenchSample]]:
    bench = make_benchset(args.n, args.seed)
    return bench, bench.stratum("occluded")[: args.limit]


def write_json(args: argparse.Namespace, benchset: dict[str, Any], **sections: Any) -> None:
    """With --json: the benchmark set (size, seed, then `benchset`) and the sections, as JSON."""
    if args.json:
        doc = {"benchset": {"n": args.n, "seed": args.seed, **benchset}, **sections}
        args.json.write_text(json.dumps(doc, indent=1))

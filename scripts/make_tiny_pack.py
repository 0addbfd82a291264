"""Write a pack folder of your own with random weights (the README's `--pack DIR` example).

    python scripts/make_tiny_pack.py tiny-pack          # 64 px, seed 0
    dhr invert face.png --pack tiny-pack --steps 4
    dhr edit face.png --smile 1                         # the project remembers its pack

A real pack is the same folder with trained files: a StyleGAN2 generator and its e4e encoder
in any format dhr reads (rosinality / e4e / pSp .pt, StyleGAN2-ADA .pkl, dhr safetensors).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dhr_cli.packs.stand_in import write_random_pack


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="generator size in px (a power of 2)")
    args = ap.parse_args()
    folder = write_random_pack(args.folder, seed=args.seed, size=args.size)
    print(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))


if __name__ == "__main__":
    main()

"""What the commands check and settle before any model loads (torch-free): which inputs a batch
keeps, which pack a run uses, the choices of string options, the shard of this process.
"""

from __future__ import annotations

from pathlib import Path

from .. import console, packs
from ..app.naming import drop_own_outputs, drop_repeats
from ..errors import DhrError, UsageError
from ..project import project_path_for, read_metadata
from .args import parse_shard


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{name} {value!r} is not one of: {', '.join(choices)}")


def listed(paths: list[Path], limit: int = 3) -> str:
    """The first `limit` paths, comma-separated, and how many more there are."""
    more = len(paths) - limit
    return ", ".join(map(str, paths[:limit])) + (f" (+{more} more)" if more > 0 else "")


def without_own_outputs(inputs: list[Path]) -> list[Path]:
    """A batch leaves out repeats of one file, and the files dhr wrote beside inverted photos
    (photo.recon.jpg, photo.mask.png, photo.smile+1.5.jpg, and photo.jpg.dhr when photo.jpg is
    in the batch too) that a glob over the photos' folder picks up."""
    if len(inputs) < 2:
        return inputs
    inputs, repeats = drop_repeats(inputs)
    if repeats:
        console.log.info(f"leaving out {len(repeats)} repeated input(s): {listed(repeats)}")
    kept, dropped = drop_own_outputs(inputs)
    if not kept:  # only dhr's images, named on purpose
        return inputs
    if dropped:
        console.log.info(f"leaving out {len(dropped)} file(s) that dhr wrote: {listed(dropped)}")
    return kept


def pack_for(pack: str | None, inputs: list[Path]) -> str:
    """--pack, else the pack of an input's project file (given, or beside the photo), else ffhq.

    Following the project keeps `dhr invert x.jpg --pack synthetic; dhr mask x.jpg` on one pack
    instead of starting the project afresh with another.
    """
    if pack is not None:
        return packs.check_pack_name(pack)
    for p in map(project_path_for, inputs):
        if p.is_file():
            try:
                found = read_metadata(p).get("pack")  # the header only: no tensors, no torch
            except DhrError:
                continue
            if found:
                return found
    return "ffhq"


def shard_of(text: str | None, count: int | None) -> tuple[int, int] | None:
    """--shard and --shard-count as (K, N); `auto` says which shard the scheduler gave."""
    shard = parse_shard(text, count)
    if shard is not None and text is not None and text.strip().lower() == "auto":
        console.log.info(f"shard {shard[0]}/{shard[1]} (from the scheduler's task variables)")
    return shard

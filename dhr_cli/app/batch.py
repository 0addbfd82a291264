"""Many inputs with models loaded once: shards, continuing past a failed input, a summary.

`run_batch` runs one command's work on each input of a shard (`shard_items`); a failed input
(a `DhrError`) is reported and the rest go on, and `BatchResult.raise_for_failures` ends the
command with `PartialFailure` (exit 7) naming them. Ctrl-C stops at once and says where.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import console
from ..errors import DhrError, OutputError, PartialFailure


def shard_items(items: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Items of shard K of N: every N-th item starting with the K-th (in the given order)."""
    if shard is None:
        return list(items)
    k, n = shard
    return [x for i, x in enumerate(items) if i % n == k - 1]


@dataclass
class BatchResult:
    done: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    failed: list[tuple[str, DhrError]]
    total: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "skipped": self.skipped,
            "failed": [{"input": p, **e.record()} for p, e in self.failed],
        }

    def raise_for_failures(self) -> None:
        """PartialFailure with a summary when some inputs failed."""
        if not self.failed:
            return
        lines = "; ".join(about_input(p, e.message) for p, e in self.failed[:5])
        more = "" if len(self.failed) <= 5 else f" (+{len(self.failed) - 5} more)"
        raise PartialFailure(
            f"{len(self.failed)} of {self.total} inputs failed ({len(self.done)} done, "
            f"{len(self.skipped)} skipped): {lines}{more}"
        )


def about_input(path: str | Path, message: str) -> str:
    """`path: message` for a batch's list of failures, without naming the photo twice: many
    errors already start with its name (`wide.png: the synthetic pack expects ...`) or mention
    it (`notimg.png is not an image file ...`), since the same error is shown for a single
    input."""
    full, name = str(path), Path(path).name
    for lead in (f"{full}: ", f"{name}: "):
        if message.startswith(lead):
            return f"{full}: {message[len(lead) :]}"
    if full in message:
        return message
    return f"{full}: {message}"


def run_batch(
    inputs: Iterable[Path],
    work: Callable[[Path], dict[str, Any]],
    *,
    shard: tuple[int, int] | None = None,
    label: str = "invert",
    clashes: dict[Path, Path] | None = None,
    resume: str | None = "the same command with --skip-existing continues",
) -> BatchResult:
    """Run `work` on each input of this shard, continuing past failures (DhrErrors).

    Raises the error itself when the only input failed; with several inputs the failures are
    collected (`BatchResult.raise_for_failures` turns them into PartialFailure after the caller
    has reported the rest). An input of `clashes` (see `output_collisions`) fails instead of
    overwriting the outputs of the earlier input it maps to. Ctrl-C stops at once (files already
    written stay complete) and says where, and how to go on (`resume`).
    """
    clashes = clashes or {}
    items = shard_items(list(inputs), shard)
    result = BatchResult([], [], [], total=len(items))
    for i, path in enumerate(items, start=1):
        if len(items) > 1:
            console.log.info(f"[{i}/{len(items)}] {label} {path}")
        try:
            if Path(path) in clashes:
                raise OutputError(
                    f"its outputs would replace those of {clashes[Path(path)]} "
                    "(the same name in the same folder)",
                    hint="give it a folder of its own with -o, or rename it",
                )
            rec = work(Path(path))
        except KeyboardInterrupt:
            if len(items) > 1:
                finished = len(result.done) + len(result.skipped) + len(result.failed)
                console.log.warn(
                    f"stopped at {path}, {finished} of {len(items)} inputs finished (their "
                    "files are complete)" + (f"; {resume}" if resume else "")
                )
            raise
        except DhrError as e:
            if len(items) == 1:
                raise
            console.log.error(about_input(path, str(e)))
            result.failed.append((str(path), e))
            continue
        (result.skipped if rec.get("skipped") else result.done).append(rec)
    return result

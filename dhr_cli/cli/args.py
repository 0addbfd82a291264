"""Every command-line string dhr parses, parsed once, here: shards, tau tables, W+ row ranges,
edits, GANSpace specs, direction files and sweeps. Each returns the typed value the library
takes, or raises `UsageError` naming the flag. `flag_for` names a library parameter as its flag.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..app.options import TauSpec
from ..app.request import DIRECTION_SUFFIXES, GANSPACE_PRESETS, GanspaceSpec, Sweep
from ..errors import UsageError

__all__ = [
    "flag_for",
    "parse_direction_arg",
    "parse_ganspace",
    "parse_layers",
    "parse_named",
    "parse_shard",
    "parse_sweep",
    "parse_tau",
]


def flag_for(parameter: str) -> str:
    """The command-line flag of a library parameter (work_res -> --work-res)."""
    return "--" + parameter.replace("_", "-")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' (1 <= K <= N) -> (K, N); None passes through."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"--shard must look like K/N (e.g. 1/4), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {text}: need 1 <= K <= N", hint="shards are numbered 1..N")
    return k, n


def parse_tau(text: str | None) -> TauSpec | None:
    """--tau: one number for every class, or per-class 'skin=0.7,eyes=0.8' over the pack's
    table ('default=0.6' sets the others). Class names are checked against the pack later
    (`TauSpec.table`)."""
    if text is None:
        return None
    text = text.strip()
    try:
        return TauSpec(value=float(text))
    except ValueError:
        pass
    per_class: dict[str, float] = {}
    default = None
    seen: set[str] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError(f"--tau: expected NAME=VALUE, got {part.strip()!r}")
        name, _, val = part.partition("=")
        name = name.strip()
        if name in seen:  # 'skin=0.7,skin=0.8' silently kept the last
            raise UsageError(f"--tau: {name!r} is given twice")
        seen.add(name)
        try:
            v = float(val)
        except ValueError:
            raise UsageError(f"--tau {name}: {val.strip()!r} is not a number") from None
        if name in ("default", "*", "others"):
            default = v
        else:
            per_class[name] = v
    return TauSpec(per_class=per_class, default=default)


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise UsageError(f"{what}: {text.strip()!r} is not a finite number")
    return v


def parse_named(text: str, option: str = "--edit") -> tuple[str, float]:
    """'NAME=STRENGTH' -> (name, strength); `option` names the flag in errors."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(
            f"{option} expects NAME=STRENGTH, got {text!r}", hint=f"e.g. {option} smile=1.5"
        )
    return name, _number(value, f"{option} {name}")


def parse_layers(text: str | None) -> tuple[int, int | None] | None:
    """--layers 'A:B' -> (A, B): W+ rows A..B-1, like a Python slice; 'A:' (B None, to the last
    row) and ':B' allowed. The range is checked against a pack's W+ by `rows_in`."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not m or not (m.group(1) or m.group(2)):
        raise UsageError(
            f"--layers expects A:B (W+ rows A to B-1), got {text!r}", hint="e.g. --layers 0:8"
        )
    a = int(m.group(1)) if m.group(1) else 0
    b = int(m.group(2)) if m.group(2) else None
    if b is not None and a >= b:
        raise UsageError(f"--layers {text}: empty row range (need A < B)")
    return a, b


def parse_ganspace(text: str) -> GanspaceSpec:
    """--ganspace 'IDX:START:END:STRENGTH' or a preset 'eyes[:STRENGTH]' (eyes, beard, lip)."""
    parts = [p.strip() for p in text.split(":")]
    name = parts[0].lower()
    if name in GANSPACE_PRESETS:
        if len(parts) > 2:
            raise UsageError(f"--ganspace {text!r}: a preset takes at most a strength (NAME[:S])")
        k, a, b, s = GANSPACE_PRESETS[name]
        if len(parts) == 2:
            s = _number(parts[1], f"--ganspace {name}")
        return GanspaceSpec(k, a, b, s, preset=name)
    if len(parts) != 4:
        raise UsageError(
            f"--ganspace expects IDX:START:END:STRENGTH or a preset, got {text!r}",
            hint="presets: "
            + ", ".join(
                f"{n} ({':'.join(f'{x:g}' for x in v)})" for n, v in GANSPACE_PRESETS.items()
            ),
        )
    try:
        k, a, b = (int(p) for p in parts[:3])
    except ValueError:
        raise UsageError(f"--ganspace {text!r}: IDX, START and END must be integers") from None
    if k < 0 or a < 0 or b <= a:
        raise UsageError(f"--ganspace {text!r}: need IDX >= 0 and 0 <= START < END")
    return GanspaceSpec(k, a, b, _number(parts[3], "--ganspace strength"))


def parse_direction_arg(text: str) -> tuple[Path, float]:
    """--direction 'FILE[:STRENGTH]' -> (path, strength); strength 1 by default."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not tail.startswith(("\\", "/")):
        try:
            return Path(head), _number(tail, f"--direction {head}")
        except UsageError:
            if Path(text).suffix.lower() in DIRECTION_SUFFIXES:
                return Path(text), 1.0
            raise
    return Path(text), 1.0


def parse_sweep(text: str | None) -> Sweep | None:
    if text is None:
        return None
    name, sep, rng = text.partition("=")
    parts = rng.split(":")
    if not sep or not name.strip() or len(parts) != 3:
        raise UsageError(
            f"--sweep expects NAME=START:STOP:N, got {text!r}", hint="e.g. --sweep smile=-3:3:7"
        )
    name = name.strip()
    start = _number(parts[0], f"--sweep {name} start")
    stop = _number(parts[1], f"--sweep {name} stop")
    try:
        count = int(parts[2])
    except ValueError:
        raise UsageError(f"--sweep {name}: N must be a whole number, got {parts[2]!r}") from None
    if not 1 <= count <= 100:
        raise UsageError(f"--sweep {name}: N must be between 1 and 100, got {count}")
    return Sweep(name, start, stop, count)

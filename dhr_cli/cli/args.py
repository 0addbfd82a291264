"""Every command-line string dhr parses, parsed once, here: shards, tau tables, W+ row ranges,
edits, GANSpace specs, direction files and sweeps. Each returns the typed value the library
takes, or raises `UsageError` naming the flag. `flag_for` names a library parameter as its flag.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
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
    "shard_from_scheduler",
]


def flag_for(parameter: str) -> str:
    """The command-line flag of a library parameter (work_res -> --work-res)."""
    return "--" + parameter.replace("_", "-")


def parse_shard(
    text: str | None, count: int | None = None, environ: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """--shard 'K/N' (1 <= K <= N) -> (K, N), or 'auto': the shard of this task of a Slurm job
    array or a Kubernetes Indexed Job (`shard_from_scheduler`); None passes through.
    `count` is --shard-count (N of an Indexed Job)."""
    if text is not None and text.strip().lower() == "auto":
        return shard_from_scheduler(os.environ if environ is None else environ, count)
    if count is not None:
        raise UsageError("--shard-count goes with --shard auto", hint="--shard K/N names N itself")
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise UsageError(f"--shard must look like K/N (e.g. 1/4) or auto, got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {text}: need 1 <= K <= N", hint="shards are numbered 1..N")
    return k, n


# the variables `--shard auto` reads (Slurm job arrays; Kubernetes Indexed Jobs)
SLURM_VARS = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_COUNT",
)
K8S_INDEX = "JOB_COMPLETION_INDEX"


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--shard auto: {name}={value!r} is not a whole number") from None


def shard_from_scheduler(environ: Mapping[str, str], count: int | None = None) -> tuple[int, int]:
    """(K, N) of this task from the scheduler's variables.

    Slurm job array (`sbatch --array=A-B[:S]`): the task IDs A, A+S, ..., B are shards 1..N in
    order, N = SLURM_ARRAY_TASK_COUNT (an array given as a list of IDs must be evenly spaced).
    Kubernetes Indexed Job: JOB_COMPLETION_INDEX 0..N-1 is shard index+1, N = `count` (the
    Job's completions). UsageError when neither is set."""
    task = _env_int(environ, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        low = _env_int(environ, "SLURM_ARRAY_TASK_MIN")
        high = _env_int(environ, "SLURM_ARRAY_TASK_MAX")
        n = _env_int(environ, "SLURM_ARRAY_TASK_COUNT")
        if low is None or high is None:
            raise UsageError(
                "--shard auto: SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_MIN/MAX",
                hint="run inside an array job (sbatch --array=...), or give --shard K/N",
            )
        if n is None:  # older Slurm: a plain range A-B
            n = high - low + 1
        if count is not None and count != n:
            raise UsageError(
                f"--shard-count {count} disagrees with the Slurm array's {n} tasks",
                hint="leave out --shard-count: the array says how many tasks there are",
            )
        step = (high - low) // (n - 1) if n > 1 else 1
        if n < 1 or not low <= task <= high or (task - low) % step or low + step * (n - 1) != high:
            raise UsageError(
                f"--shard auto: Slurm array task {task} of {low}-{high} ({n} tasks) is not on an "
                "evenly spaced range",
                hint="use --array=A-B or A-B:S, or give --shard K/N",
            )
        return (task - low) // step + 1, n
    index = _env_int(environ, K8S_INDEX)
    if index is not None:
        if count is None:
            raise UsageError(
                f"--shard auto: {K8S_INDEX}={index} (a Kubernetes Indexed Job) needs --shard-count "
                "N, the Job's completions",
                hint="e.g. completions: 8 in the Job, --shard auto --shard-count 8 in its command",
            )
        if not 0 <= index < count:
            raise UsageError(
                f"--shard auto: {K8S_INDEX}={index} is not below --shard-count {count}",
                hint="--shard-count is the Job's completions (indexes 0..N-1)",
            )
        return index + 1, count
    raise UsageError(
        "--shard auto: no scheduler variables are set (SLURM_ARRAY_TASK_ID of a Slurm job array, "
        f"{K8S_INDEX} of a Kubernetes Indexed Job)",
        hint="run it as an array task (sbatch --array=0-7 ...), or give --shard K/N",
    )


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

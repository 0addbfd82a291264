"""Run-time settings shared by every command: device choice, seeding, model folder; and how
dhr's processes meet signals (SIGTERM like Ctrl-C, signals held back around lock-taking calls,
helper processes that end with their parent).

Imports torch only inside functions so that `dhr --help` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NotAvailable, UsageError

if TYPE_CHECKING:
    import torch

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class Settings:
    """Global options of one `dhr` invocation."""

    device: str = "auto"
    quiet: bool = False
    verbose: bool = False
    json: bool = False
    seed: int = 0
    models_dir: Path | None = None
    offline: bool = False


def check_device_spec(spec: str) -> str:
    """Validate a --device value without importing torch; returns it normalised ("CPU" -> "cpu")."""
    normal = spec.strip().lower()
    if not _DEVICE_RE.match(normal):
        raise UsageError(f"invalid --device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps")
    return normal


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a --device value into a torch.device, failing clearly if it is absent."""
    import torch

    spec = check_device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NotAvailable(
                f"--device {spec}: CUDA is not available on this machine", hint="use --device cpu"
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise NotAvailable(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    if spec == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise NotAvailable(
            "--device mps: Apple MPS is not available on this machine", hint="use --device cpu"
        )
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is repeatable on the same machine."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def exit_with_parent(parent: int) -> None:
    """Initializer of a helper process (bench workers, training's renderers): exit once
    `parent` is gone. A parent killed outright (SIGKILL, the OOM killer) cannot stop its
    helpers, which would otherwise wait forever for work, models loaded."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """SIGTERM (`timeout`, `kill`, a batch scheduler's time limit) unwinds like Ctrl-C, so the
    batch says where it stopped and bench writes what it measured; a second one kills at once.
    Yields a list that holds the signal once it came."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got  # signal handlers can only be set from the main thread
        return

    def unwind(signum: int, frame: Any) -> None:
        if got:  # the second: die at once, as without this handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        got.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, then pass them to their usual
    handlers. Raised inside `concurrent.futures.wait()` or a queue proxy call, their
    KeyboardInterrupt can leave a future's lock taken, and the process pool's thread then hangs
    the exit (bench's parent waits on its workers inside this)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(got):
            if callable(previous[s]):
                previous[s](s, None)
            elif previous[s] == signal.SIG_DFL:  # restored above: the default action now
                os.kill(os.getpid(), s)

"""Running a benchmark: `run_bench` measures the items of a shard in this process or in worker
processes (spawned; a manager process carries their progress events), and Ctrl-C or a
scheduler's SIGTERM hands in what every worker has measured so far as `BenchInterrupted`."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import platform
import queue as queue_mod
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from multiprocessing.managers import SyncManager
from typing import TYPE_CHECKING, Any

from .. import console
from ..app.batch import shard_items
from ..errors import DhrError, UsageError
from ..packs import pack_settings
from ..runtime import exit_with_parent, signals_deferred
from .config import BenchConfig, bench_items
from .metrics import nanmean
from .progress import Progress
from .results import make_document, merge_results
from .run import Bench, ProgressFn

if TYPE_CHECKING:
    from ..packs import Pack

INTERRUPT_WAIT_S = 60  # how long Ctrl-C waits for workers to hand in what they measured


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a benchmark, with the results document of the images measured so far."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__(doc)
        self.doc = doc


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _run_positions(
    config: BenchConfig,
    positions: Sequence[int],
    *,
    pack: Pack | None = None,
    progress: ProgressFn | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Measure the items at `positions` in this process: a partial results document."""
    started = time.time()
    t0, c0 = time.perf_counter(), time.process_time()
    load_start = _load()
    items = bench_items(config)
    bench = Bench(config, pack=pack)
    bench.require()
    bench.setup()
    records: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    loads: list[list[float]] = []
    interrupted = False
    try:
        for pos in positions:
            item = items[pos]
            try:
                records.append(bench.run_item(item, progress))
            except DhrError as e:
                console.log.error(f"{item.id}: {e.message}")
                failed.append({"position": pos, "id": item.id, **e.record()})
            ld = _load()
            if ld:
                loads.append(ld)
            if progress is not None:
                progress({"event": "item", "position": pos, "id": item.id})
    except KeyboardInterrupt:
        interrupted = True  # the images finished so far are still worth reporting
    run = {
        "label": label,
        "positions": len(positions),
        "device": str(bench.pack.device),
        "torch_threads": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "setup_s": bench.setup_s,
        "load_start": load_start,
        "load_end": _load(),
        "load_mean_1min": nanmean(x[0] for x in loads) if loads else None,
        "peak_rss_scope": bench.rss_scope,
        **_machine(),
    }
    doc = make_document(config, items, records, failed, [run], bench.notices, bench.pack)
    if interrupted:
        doc["interrupted"] = True
        raise BenchInterrupted(doc)
    return doc


def _auto_jobs(config: BenchConfig, n: int) -> int:
    """Worker processes when --jobs is 0: as many as the pack's per-process threads leave
    cores for (the synthetic pack runs one intra-op thread per process), else 1."""
    if not config.device.startswith("cpu"):
        return 1
    threads = pack_settings(config.pack).cpu_threads
    if not threads:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n, (cores or 1) // threads))


def _progress_queue_init(parent: int) -> None:
    """Initializer of `run_bench`'s progress-queue process. It ignores Ctrl-C already (the
    manager does); a scheduler's SIGTERM to the whole job must not take the queue away either
    while the parent collects what its workers measured. It exits with its parent."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_parent(parent)


def _worker(config_json: dict[str, Any], positions: list[int], queue: Any, label: str) -> dict:
    """A worker process of `run_bench(jobs > 1)`."""
    console.configure(quiet=True)

    interrupted: list[int] = []

    def first_interrupt_only(signum: int, frame: Any) -> None:
        # Ctrl-C in a terminal (or a scheduler's SIGTERM) reaches every process, and the parent
        # passes it on too: the second one must not cut short the partial results this worker
        # is handing in. (Not SIG_IGN: a signal already pending would then raise OSError.)
        if not interrupted:
            interrupted.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first_interrupt_only)
    signal.signal(signal.SIGTERM, first_interrupt_only)
    queue.put({"event": "worker", "pid": os.getpid()})

    def progress(event: dict[str, Any]) -> None:
        queue.put(event)

    return _run_positions(
        BenchConfig.from_json(config_json), positions, progress=progress, label=label
    )


def run_bench(
    config: BenchConfig,
    *,
    shard: tuple[int, int] | None = None,
    jobs: int = 1,
    pack: Pack | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark (shard K of N of it when given) with `jobs` worker processes
    (0 = automatic) and return the results document."""
    items = bench_items(config)
    positions = shard_items([it.position for it in items], shard)
    if not positions:
        raise UsageError(f"shard {shard[0]}/{shard[1]} holds no item of {len(items)}")
    if jobs == 0:
        jobs = _auto_jobs(config, len(positions))
    jobs = max(1, min(jobs, len(positions)))
    label = f"shard {shard[0]}/{shard[1]}" if shard else None
    try:
        with Progress(items, positions, config.methods, show_progress) as prog:
            if jobs == 1 or pack is not None:
                doc = _run_positions(config, positions, pack=pack, progress=prog, label=label)
            else:
                doc = _run_parallel(config, positions, jobs, prog, label)
    except BenchInterrupted as e:
        e.doc["shard"] = list(shard) if shard else None
        raise
    doc["shard"] = list(shard) if shard else None
    return doc


def _run_parallel(
    config: BenchConfig, positions: list[int], jobs: int, prog: Progress, label: str | None
) -> dict[str, Any]:
    # fail fast in this process, before workers start
    Bench(config).require()
    ctx = mp.get_context("spawn")
    manager = SyncManager(ctx=ctx)  # the progress queue's process
    manager.start(_progress_queue_init, (os.getpid(),))
    with manager:
        q = manager.Queue()
        pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=ctx,
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )
        with pool:
            futures = [
                pool.submit(
                    _worker,
                    config.to_json(),
                    shard_items(positions, (j, jobs)),
                    q,
                    f"{label + ', ' if label else ''}worker {j}/{jobs}",
                )
                for j in range(1, jobs + 1)
            ]
            pending = set(futures)

            pids: list[int] = []

            def drain() -> None:
                while True:
                    try:
                        event = q.get_nowait()
                    except queue_mod.Empty:
                        return
                    if event["event"] == "worker":
                        pids.append(event["pid"])
                    else:
                        prog(event)

            try:
                while pending:
                    with signals_deferred():
                        _, pending = wait(pending, timeout=0.5)
                        drain()
            except KeyboardInterrupt:
                with signals_deferred():
                    drain()  # the workers' pids
                parts = _hand_in(futures, pids)
                pool.shutdown(wait=False, cancel_futures=True)
                if not parts:
                    raise
                raise _interrupted(parts) from None
            drain()
            if any(isinstance(f.exception(), BenchInterrupted) for f in futures):
                # the workers handed in their Ctrl-C parts before this process saw its own
                # Ctrl-C (or it came to them alone): merge every worker's part, not the first
                raise _interrupted(_parts(futures)) from None
            parts = [f.result() for f in futures]
    doc = merge_results(parts, require_complete=False)
    return doc


def _interrupted(parts: list[dict[str, Any]]) -> BenchInterrupted:
    """The interruption carrying the merged parts the workers handed in."""
    doc = merge_results(parts)
    doc["interrupted"] = True
    return BenchInterrupted(doc)


def _hand_in(futures: Sequence[Any], pids: Sequence[int]) -> list[dict[str, Any]]:
    """After Ctrl-C: interrupt every worker and collect what each has measured (a worker
    that finished has its whole part). A second Ctrl-C stops waiting."""
    console.log.warn("interrupted: collecting the images measured so far (Ctrl-C again to quit)")
    for pid in pids:
        with contextlib.suppress(OSError):  # a worker that has already exited
            os.kill(pid, signal.SIGINT)  # not every worker got the terminal's
    deadline = time.monotonic() + INTERRUPT_WAIT_S
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        with signals_deferred():
            wait(futures, timeout=0.5)
    return _parts(futures)


def _parts(futures: Sequence[Any]) -> list[dict[str, Any]]:
    """The results documents of the workers that are done: whole, or what an interrupted one
    measured."""
    parts = []
    for f in futures:
        if not f.done() or f.cancelled():
            continue
        e = f.exception()
        if e is None:
            parts.append(f.result())
        elif isinstance(e, BenchInterrupted):
            parts.append(e.doc)
    return parts

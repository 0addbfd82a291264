"""Terminal output: data to stdout, everything else (logs, progress, errors) to stderr.

One place decides verbosity and colour so library code can call `log.info(...)`
or `progress(...)` without knowing whether it runs in a terminal, a shell loop
or a test. rich honours NO_COLOR by itself; when stderr is not a TTY, progress
degrades to a few plain lines instead of redrawing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console


def _stderr_console() -> Console:
    """Messages on stderr, wrapped to the width of a terminal; into a log file or a pipe one
    line per message, since rich would cut them at 80 columns (a URL in two halves, an error
    that `grep` no longer finds)."""
    err = Console(stderr=True, highlight=False)
    err.soft_wrap = not err.is_terminal
    return err


@dataclass
class _State:
    quiet: bool = False
    verbose: bool = False
    json: bool = False
    err: Console = field(default_factory=_stderr_console)
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))


_state = _State()


def configure(*, quiet: bool = False, verbose: bool = False, json_mode: bool = False) -> None:
    """Set verbosity once per process (the CLI calls this from its global options)."""
    _state.quiet = quiet
    _state.verbose = verbose
    _state.json = json_mode
    _state.err = _stderr_console()
    _state.out = Console(highlight=False, soft_wrap=True)


def is_verbose() -> bool:
    return _state.verbose


def json_mode() -> bool:
    return _state.json


class log:  # noqa: N801 - used as a namespace: log.info(...)
    """Human-readable messages on stderr."""

    @staticmethod
    def info(msg: str) -> None:
        if not _state.quiet:
            _state.err.print(msg)

    @staticmethod
    def debug(msg: str) -> None:
        if _state.verbose:
            _state.err.print(f"[dim]{msg}[/dim]")

    @staticmethod
    def warn(msg: str) -> None:
        if not _state.quiet:
            _state.err.print(f"[yellow]warning:[/yellow] {msg}")

    @staticmethod
    def error(msg: str) -> None:
        # errors are shown even with --quiet: the exit code alone is not enough to act on
        _state.err.print(f"[bold red]error:[/bold red] {msg}", markup=True, highlight=False)


def print_data(text: str) -> None:
    """Plain data for stdout (a path, a table row): no markup interpretation."""
    _state.out.print(text, markup=False, highlight=False)


def print_renderable(obj: Any) -> None:
    """A rich renderable (table, panel) to stdout.

    Into a pipe or file it gets the width it needs: rich would otherwise assume 80 columns and
    cut names short ("stylegan2-ffhq-1…"), which scripts cannot use.
    """
    out = _state.out
    if out.is_terminal:
        out.print(obj)
        return
    natural = out.measure(obj, options=out.options.update_width(4096)).maximum
    wide = Console(highlight=False, soft_wrap=True, width=max(out.width, natural), file=out.file)
    wide.print(obj)


def print_json(data: Any) -> None:
    """Machine-readable result on stdout, one JSON document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


class Task:
    """Handle for one progress task; see `progress`."""

    def __init__(self, bar: Any, task_id: Any, description: str, total: float | None) -> None:
        self._bar = bar
        self._id = task_id
        self.description = description
        self.total = total
        self.completed = 0.0
        self._last_plain = 0.0
        self._t0 = time.monotonic()

    def advance(self, n: float = 1.0, **fields: Any) -> None:
        self.completed += n
        self._refresh(fields)

    def update(
        self, *, completed: float | None = None, total: float | None = None, **fields: Any
    ) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self._refresh(fields)

    def _refresh(self, fields: dict[str, Any]) -> None:
        status = "  ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()
        )
        if self._bar is not None:
            self._bar.update(self._id, completed=self.completed, total=self.total, status=status)
        elif not _state.quiet and _state.verbose:
            # not a TTY: a plain line at most every 5 s keeps logs readable in shell loops
            now = time.monotonic()
            if now - self._last_plain >= 5.0:
                self._last_plain = now
                frac = (
                    f"{self.completed:.0f}/{self.total:.0f}"
                    if self.total
                    else f"{self.completed:.0f}"
                )
                _state.err.print(f"{self.description}: {frac} {status}".rstrip(), markup=False)


@contextmanager
def progress(
    description: str,
    total: float | None = None,
    *,
    unit: str = "",
    early_stop: str = "its stopping rule was met",
) -> Iterator[Task]:
    """Progress for one slow step: a transient bar with elapsed time and ETA on a TTY, plain
    lines otherwise.

    A step that ends before its total without an error (PTI stops once its LPIPS is low enough,
    by design) is shown as finished, not as a bar stuck part-way, and a note says where it
    stopped and why (`early_stop`, e.g. "LPIPS below 0.06")."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    interactive = _state.err.is_terminal and not _state.quiet
    if not interactive:
        if not _state.quiet:
            _state.err.print(f"{description} ...", markup=False)
        task = Task(None, None, description, total)
        t0 = time.monotonic()
        yield task
        if not _state.quiet:
            _state.err.print(f"{description}: done in {time.monotonic() - t0:.1f} s", markup=False)
        _note_early_stop(task, unit, early_stop)
        return
    if unit == "bytes":
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
    else:
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        ]
    with Progress(*columns, console=_state.err, transient=True) as bar:
        task_id = bar.add_task(description, total=total, status="")
        task = Task(bar, task_id, description, total)
        yield task
        if stopped_early(task):  # finished by design: a full bar, not one stuck part-way
            bar.update(task_id, completed=task.total)
    _note_early_stop(task, unit, early_stop)


def stopped_early(task: Task) -> bool:
    """The step ended (without an error) before its total, after doing some of it."""
    return bool(task.total) and 0 < task.completed < (task.total or 0)


def _note_early_stop(task: Task, unit: str, why: str) -> None:
    if unit != "bytes" and stopped_early(task):
        log.info(
            f"{task.description}: stopped early at {task.completed:.0f}/{task.total:.0f} "
            f"({why}, by design)"
        )

"""The progress bar of `dhr bench` over (image, method) pairs, with an ETA and a log line per
finished image."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .. import console
from .config import BenchItem


class Progress:
    """Progress bar over (image, method) pairs with ETA; a log line per finished image."""

    def __init__(
        self,
        items: Sequence[BenchItem],
        positions: Sequence[int],
        methods: Sequence[str],
        enabled: bool,
    ) -> None:
        self.items = items
        self.n = len(positions)
        self.methods = methods
        self.enabled = enabled
        self.done_items = 0
        self.done_units = 0
        self.t0 = time.perf_counter()
        self._ctx: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._ctx = console.progress("bench", total=self.n * len(self.methods))
            self._task = self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)

    def eta(self) -> float | None:
        if self.done_items == 0:
            return None
        elapsed = time.perf_counter() - self.t0
        return elapsed / self.done_items * (self.n - self.done_items)

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event["event"] == "method":
            self.done_units += 1
            item = self.items[event["position"]]
            fields = {"image": item.id, "method": event["method"]}
            eta = self.eta()
            if eta is not None:
                fields["eta"] = duration(eta)
            self._task.update(completed=self.done_units, **fields)
        elif event["event"] == "item":
            self.done_items += 1
            eta = self.eta()
            elapsed = time.perf_counter() - self.t0
            console.log.info(
                f"[{self.done_items}/{self.n}] {event['id']} done; elapsed "
                f"{duration(elapsed)}, ETA {duration(eta or 0.0)}"
            )


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"

"""The chart of `dhr bench` (chart.png, drawn with matplotlib): reconstruction error against
edit error per method on log axes (filled: the occluded stratum, hollow: all images; without
true edits MSE against LPIPS@256), and wall time per image per method split by stage with the
CPU time marked. matplotlib is imported when a chart is drawn."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

SIZE = (14, 6)  # inches at DPI: a 1400 x 600 image
DPI = 100
METHOD_COLORS = {"encoder": "#7f7f7f", "pti": "#e67814", "feature": "#1f77b4", "dhr": "#d62728"}
STAGE_COLORS = {"encode": "#bebebe", "segment": "#8cb4dc", "refine": "#3c6eaa", "other": "#e1d7a0"}
INK = "#1e1e1e"
MUTED = "#555555"
STAGES = ("encode", "segment", "refine")  # timed stages; "other" is the rest of the total


def _point(group: dict[str, Any] | None, m: str, edit: bool) -> tuple[float, float] | None:
    """(reconstruction MSE, edit MSE or LPIPS@256) of method `m` in an aggregate group."""
    if group is None:
        return None
    s = group["methods"].get(m) or {}
    x = (s.get("metrics") or {}).get("mse")
    y = (s.get("edit") or {}).get("mse") if edit else (s.get("metrics") or {}).get("lpips_256")
    return (x, y) if x and y else None


def _titles(ax: Any, title: str, subtitle: str) -> None:
    ax.set_title(title, loc="left", fontsize=14, color=INK, pad=24)
    ax.annotate(
        subtitle,
        xy=(0, 1),
        xycoords="axes fraction",
        xytext=(0, 7),
        textcoords="offset points",
        fontsize=9.5,
        color=MUTED,
    )


def _fidelity_panel(ax: Any, doc: dict[str, Any]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    agg = doc["aggregates"]
    methods = list(doc["config"]["methods"])
    occ = agg["by_stratum"].get("occluded")
    has_edit = any((agg["all"]["methods"].get(m) or {}).get("edit") for m in methods)
    groups = [("all images", agg["all"], occ is None)]  # hollow beside the occluded stratum
    if occ is not None:
        groups.insert(0, ("occluded stratum", occ, True))
    _titles(
        ax,
        "Reconstruction vs edit error" if has_edit else "Reconstruction: MSE vs LPIPS@256",
        "lower-left is better"
        + ("; filled: occluded stratum, hollow: all images" if occ is not None else ""),
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    handles = []
    dot = {"ls": "", "marker": "o", "ms": 9}  # legend entries
    for m in methods:
        color = METHOD_COLORS.get(m, INK)
        chain = [p for _, g, _ in groups if (p := _point(g, m, has_edit))]
        if len(chain) == 2:
            ax.plot(*zip(*chain, strict=True), color=color, lw=1, alpha=0.7, zorder=2)
        for _, group, filled in groups:
            p = _point(group, m, has_edit)
            if p:
                ax.scatter(
                    *p,
                    s=90,
                    color=color if filled else "white",
                    edgecolors=INK if filled else color,
                    linewidths=0.8 if filled else 2.2,
                    zorder=3,
                )
        if chain:
            handles.append(Line2D([], [], **dot, color=color, label=m))
    if not handles:  # nothing measured: an empty decade-wide frame
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(1e-3, 1)
    ax.margins(0.12)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", color="#d7d7d7", lw=0.8)
    ax.set_axisbelow(True)
    ax.set_xlabel("reconstruction MSE (images in [-1, 1], log)")
    ax.set_ylabel("edit MSE vs true edit (log)" if has_edit else "LPIPS-Alex @256 (log)")
    if occ is not None and handles:
        handles += [
            Line2D([], [], **dot, color=MUTED, mec=INK, label="occluded stratum"),
            Line2D([], [], **dot, mfc="white", mec=MUTED, mew=2, label="all images"),
        ]
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=10, framealpha=0.9)


def _time_panel(ax: Any, doc: dict[str, Any]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    agg = doc["aggregates"]
    methods = list(doc["config"]["methods"])
    _titles(
        ax,
        "Wall time per image (all images)",
        "stacked by stage; | marks CPU time; shared machine: see the report for load",
    )
    rows = []
    for m in methods:
        rt = (agg["all"]["methods"].get(m) or {}).get("runtime") or {}
        wall = rt.get("wall_s") or {}
        total = wall.get("total") or 0.0
        stages = {k: wall.get(k) or 0.0 for k in STAGES}
        stages["other"] = max(0.0, total - sum(stages.values()))
        rows.append((m, total, stages, rt.get("cpu_s")))
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    shown = []
    for k, color in STAGE_COLORS.items():
        width = np.array([r[2][k] for r in rows])
        if width.any():
            ax.barh(y, width, left=left, height=0.6, color=color, zorder=2)
            shown.append(k)
        left += width
    for i, (_, total, _, cpu) in enumerate(rows):
        if cpu:
            ax.plot([cpu, cpu], [i - 0.38, i + 0.38], color=INK, lw=2.5, zorder=3)
        label = f"{total:.2f} s" + (f" (CPU {cpu:.2f} s)" if cpu else "")
        ax.annotate(
            label,
            xy=(max(total, cpu or 0.0), i),
            xytext=(7, 0),
            textcoords="offset points",
            va="center",
            fontsize=10,
            color=INK,
        )
    tmax = max([r[1] for r in rows] + [r[3] or 0.0 for r in rows] + [1e-3])
    ax.set_xlim(0, tmax / 0.68)  # the longest bar ends at about 2/3: room for its label
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first method on top
    ax.set_yticks(y)
    ax.set_yticklabels(methods, fontsize=12)
    for tick, m in zip(ax.get_yticklabels(), methods, strict=True):
        tick.set_color(METHOD_COLORS.get(m, INK))
    ax.tick_params(axis="y", length=0)
    ax.grid(True, axis="x", color="#d7d7d7", lw=0.8)
    ax.set_axisbelow(True)
    ax.set_xlabel("seconds per image")
    handles = [Patch(color=STAGE_COLORS[k], label=k) for k in shown]
    handles.append(Line2D([], [], color=INK, lw=2.5, label="CPU time"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=len(handles),
        frameon=False,
        fontsize=10,
    )


def draw_chart(doc: dict[str, Any]) -> Image.Image:
    """Fidelity vs edit error per method (left) and time per image per method (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": (1, 1.05)})
    fig.subplots_adjust(left=0.075, right=0.975, top=0.855, bottom=0.17, wspace=0.2)
    _fidelity_panel(left, doc)
    _time_panel(right, doc)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())

"""Readable outputs of `dhr bench` from a results document: `write_report(doc, folder)` writes
into `folder`:

  report.md     what was run, on what machine under what load, the paper-ordering verdict on
                the occluded stratum, fidelity / segmentation / editing / speed tables
  chart.png     left: reconstruction error vs edit error per method (log axes; filled = the
                occluded stratum, hollow = all images; without true edits: MSE vs LPIPS@256);
                right: wall time per image per method split by stage, CPU time marked
                (`chart.draw_chart`, matplotlib)
  grid.png      for the first K images: input | true mask | DHR mask | each method's
                reconstruction and edit | true edit (`grid.draw_grid`, Pillow)
  results.json  the results document (without the grid thumbnails)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..files import atomic_write, atomic_write_bytes, make_folder
from .chart import draw_chart
from .config import STEP_OPTIONS
from .grid import draw_grid
from .results import write_results
from .summary import FIDELITY_COLUMNS, fmt, paper_ordering, verdict_text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _get(node: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return node


def _fidelity_table(group: dict[str, Any], with_regions: bool) -> str:
    ms = group["methods"]
    has_id = any(_get(s, "metrics", "identity") is not None for s in ms.values())
    cols = [(k, lb) for k, lb in FIDELITY_COLUMNS if k != "identity" or has_id]
    header = ["method", "n"] + [lb for _, lb in cols]
    if with_regions:
        header += ["MSE in-domain", "MSE out-of-domain"]
    rows = []
    for m, s in ms.items():
        row = [f"`{m}`", str(s.get("n", 0))]
        row += [fmt(_get(s, "metrics", k), 2 if k == "psnr" else 4) for k, _ in cols]
        if with_regions:
            row += [fmt(_get(s, "metrics", "mse_in")), fmt(_get(s, "metrics", "mse_out"))]
        rows.append(row)
    return _table(header, rows)


def _edit_table(group: dict[str, Any]) -> str:
    header = ["method", "edit MSE", "in-domain", "out-of-domain", "occluder change (grey levels)"]
    attrs: list[str] = []
    for s in group["methods"].values():
        for a in _get(s, "edit", "by_attribute") or {}:
            if a not in attrs:
                attrs.append(a)
    header += [f"{a}: in / out" for a in attrs]
    rows = []

    def row(name: str, e: dict[str, Any] | None) -> list[str]:
        e = e or {}
        r = [
            name,
            fmt(e.get("mse")),
            fmt(e.get("mse_in")),
            fmt(e.get("mse_out")),
            fmt(e.get("ood_change"), 2),
        ]
        for a in attrs:
            b = _get(e, "by_attribute", a) or {}
            r.append(f"{fmt(b.get('mse_in'))} / {fmt(b.get('mse_out'))}")
        return r

    for m, s in group["methods"].items():
        rows.append(row(f"`{m}`", s.get("edit")))
    ref = _get(group, "reference", "edit")
    if ref:
        r = row("no edit (input image)", ref)
        r[4] = f"(true edit moves them {fmt(ref.get('ood_change'), 2)})"
        rows.append(r)
    return _table(header, rows)


def _speed_table(group: dict[str, Any]) -> str:
    header = [
        "method",
        "encode s",
        "segment s",
        "refine s",
        "total s",
        "CPU s",
        "edit+metrics s",
        "peak RSS MiB",
        "CUDA peak MiB",
        "reused",
    ]
    rows = []
    for m, s in group["methods"].items():
        rt = s.get("runtime") or {}
        w = rt.get("wall_s") or {}
        other = None
        if w.get("edit") is not None or w.get("metrics") is not None:
            other = (w.get("edit") or 0.0) + (w.get("metrics") or 0.0)
        rows.append(
            [
                f"`{m}`",
                fmt(w.get("encode"), 2),
                fmt(w.get("segment"), 2),
                fmt(w.get("refine"), 2),
                fmt(w.get("total"), 2),
                fmt(rt.get("cpu_s"), 2),
                fmt(other, 2),
                fmt(rt.get("peak_rss_mb"), 0),
                fmt(rt.get("cuda_peak_mb"), 0),
                str(rt.get("reused", 0)),
            ]
        )
    return _table(header, rows)


def _segmentation_table(doc: dict[str, Any]) -> str | None:
    agg = doc["aggregates"]
    rows = []
    for name, group in [("all", agg["all"]), *agg["by_stratum"].items()]:
        s = group["methods"].get("dhr") or {}
        seg = s.get("segmentation") or {}
        if seg.get("iou") is None:
            continue
        true = [
            r["true_ood_fraction"]
            for r in doc["records"]
            if r.get("true_ood_fraction") is not None and name in ("all", r.get("stratum"))
        ]
        rows.append(
            [
                name,
                str(s.get("n", 0)),
                fmt(seg.get("iou"), 3),
                fmt(seg.get("iou_superpixels"), 3),
                fmt(seg.get("iou_parsing"), 3),
                fmt(seg.get("pred_ood_fraction"), 3),
                fmt(sum(true) / len(true), 3) if true else "-",
            ]
        )
    if not rows:
        return None
    header = [
        "images",
        "n",
        "IoU",
        "IoU superpixels only (m_s)",
        "IoU parsing only (m_p)",
        "predicted out-of-domain fraction",
        "true fraction",
    ]
    return _table(header, rows)


def _machine_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for run in doc.get("runs", []):
        label = f" ({run['label']})" if run.get("label") else ""
        load = run.get("load_start")
        lines.append(
            f"- run{label}: {run.get('host', '?')}, {run.get('platform', '?')}, "
            f"{run.get('cpu_count', '?')} CPU cores, Python {run.get('python', '?')}, torch "
            f"{run.get('torch', '?')} with {run.get('torch_threads', '?')} intra-op thread(s) on "
            f"{run.get('device', '?')}; {run.get('positions', '?')} images in "
            f"{run.get('wall_s', 0):.0f} s wall / {run.get('cpu_s', 0):.0f} s CPU "
            f"(setup {run.get('setup_s', 0):.0f} s); load average (1/5/15 min) at start "
            f"{load}, at end {run.get('load_end')}, mean 1-min load while running "
            f"{fmt(run.get('load_mean_1min'), 2)}"
        )
    return lines


def markdown(doc: dict[str, Any], *, command: str | None = None, images: dict[str, str]) -> str:
    """The report text (images: name -> relative path of the chart and grid)."""
    c = doc["config"]
    agg = doc["aggregates"]
    out: list[str] = ["# dhr bench report", ""]
    when = (doc.get("runs") or [{}])[0].get("started", time.strftime("%Y-%m-%d"))
    what = (
        f"the synthetic benchmark set (`make_benchset({c['synthetic']}, seed={c['seed']})`: "
        + ", ".join(f"{n} {s}" for s, n in (doc.get("strata") or {}).items())
        + ")"
        if c.get("synthetic") is not None
        else f"{len(doc['items'])} photos"
    )
    out += [
        f"Methods `{'`, `'.join(c['methods'])}` on {what}, pack `{c['pack']}` "
        f"({_get(doc, 'pack', 'settings') or 'settings unknown'}); dhr {doc.get('dhr_version')}, "
        f"started {when}.",
        "",
    ]
    if command:
        out += ["```", command, "```", ""]
    ov = {k: c[k] for k in STEP_OPTIONS if c.get(k) is not None}
    if ov:
        out += [
            "**Not the published defaults:** "
            + ", ".join(f"`--{k.replace('_', '-')} {v}`" for k, v in ov.items())
            + ". The numbers below are not comparable with a default run.",
            "",
        ]
    else:
        out += [
            "Every method runs with its published defaults (DHR: 40-step coarse inversion, 100 "
            "refinement steps, weights in the first 50; PTI: 450-step W pivot, up to 350 tuning "
            "steps with early stop at LPIPS 0.06; feature modulation: 100 steps).",
            "",
        ]
    if not doc.get("complete", True):
        out += [
            f"**Incomplete:** {len(doc['positions'])} of {len(doc['items'])} images "
            + (
                "(the run was interrupted)."
                if doc.get("interrupted")
                else "(a shard, or a merge of some shards)."
            ),
            "",
        ]
    if doc.get("failed"):
        out += [
            f"**{len(doc['failed'])} image(s) failed:** "
            + "; ".join(f"{f['id']}: {f['error']}" for f in doc["failed"][:10]),
            "",
        ]

    verdict = paper_ordering(doc)
    out += ["## Does it reproduce the paper's ordering?", ""]
    if verdict is None:
        out += [
            "Not measured: needs the synthetic set's occluded stratum and the `dhr` method.",
            "",
        ]
    else:
        out += [verdict_text(verdict), ""]

    has_strata = bool(agg["by_stratum"])
    out += ["## Fidelity", "", "All images:", "", _fidelity_table(agg["all"], has_strata), ""]
    for s, group in agg["by_stratum"].items():
        out += [f"Stratum `{s}`:", "", _fidelity_table(group, True), ""]

    seg = _segmentation_table(doc)
    if seg:
        out += [
            "## Segmentation (DHR's out-of-domain region vs the true one)",
            "",
            seg,
            "",
            "IoU of the predicted out-of-domain pixels (mask < 0.5) with the true out-of-domain "
            "mask; m = m_p x m_s, and each factor on its own for reference. The clean stratum has no true out-of-domain pixels, so its IoU is 1 only "
            "when nothing is predicted out-of-domain (its predicted fraction is the false-alarm "
            "rate).",
            "",
        ]

    if any(g["methods"].get(m, {}).get("edit") for g in [agg["all"]] for m in c["methods"]):
        out += [
            "## Editing vs the true edited images",
            "",
            "Every true edit of the set (attribute x delta in std-units) is rendered as "
            "`dhr edit` renders it from each method's result and compared with the scene "
            "re-rendered with the attribute moved and the same occluders on top. MSE over the "
            "whole image, over the true in-domain and over the true out-of-domain pixels of the "
            "edited scene; occluder change = mean grey-level change of occluder pixels between "
            "reconstruction and edit (0 is ideal).",
            "",
        ]
        for name, group in [
            ("All images", agg["all"]),
            *[(f"Stratum `{s}`", g) for s, g in agg["by_stratum"].items()],
        ]:
            out += [f"{name}:", "", _edit_table(group), ""]

    out += [
        "## Speed and memory",
        "",
        "Means per image (all images). Wall time of `dhr invert`'s in-memory path (alignment "
        "excluded); CPU = process CPU time of the inversion (all threads); peak RSS = resident "
        "memory high-water mark during the method (models included); the maximum over images "
        "is shown.",
        "",
        _speed_table(agg["all"]),
        "",
        *_machine_lines(doc),
        "",
        "Wall times are inflated when other processes share the cores: compare CPU times, and "
        "the load averages above, before reading speed ratios.",
        "",
    ]
    if images:
        out += ["## Figures", ""]
        if "chart" in images:
            out += [f"![fidelity vs edit error, and time per method]({images['chart']})", ""]
        if "grid" in images:
            out += [
                f"![input, masks, each method's reconstruction and edit]({images['grid']})",
                "",
                "Grid: input | true out-of-domain mask (blue) | DHR's mask (red = out-of-domain) "
                "| each method's reconstruction and edit | the true edit.",
                "",
            ]
    notes = list(doc.get("notices") or [])
    out += [
        "## Definitions and notes",
        "",
        "- Images are compared as saved: 8-bit aligned crops. MSE on images scaled to [-1, 1] "
        "(x 4 the MSE of [0, 1] images); PSNR = 10 log10(4 / MSE), i.e. the usual PSNR of [0, 1] "
        "images. `@256`: both images resized to 256 px first (area when shrinking, bilinear "
        "when enlarging), as the released evaluation does; otherwise at the generator's "
        "resolution.",
        "- LPIPS: LPIPS-Alex (v0.1 linear heads). Identity: cosine similarity of ArcFace "
        "IR-SE50 embeddings (FFHQ crop convention).",
        "- Means over images; `-` = not applicable or not available.",
        *[f"- {n}" for n in notes],
        "",
    ]
    return "\n".join(out)


def write_report(
    doc: dict[str, Any],
    folder: Path,
    *,
    command: str | None = None,
    grid: int | None = None,
) -> dict[str, Path]:
    """Write report.md, chart.png, grid.png (when thumbnails exist) and results.json."""
    folder = Path(folder)
    make_folder(folder)
    written: dict[str, Path] = {}
    images: dict[str, str] = {}

    def save(im: Image.Image, name: str) -> None:
        path = folder / name
        with atomic_write(path) as f:
            im.save(f, format="PNG", optimize=True)
        written[name.split(".")[0]] = path
        images[name.split(".")[0]] = name

    save(draw_chart(doc), "chart.png")
    g = draw_grid(doc, grid)
    if g is not None:
        save(g, "grid.png")
    written["results"] = write_results(doc, folder / "results.json", grid=False)
    text = markdown(doc, command=command, images=images)
    path = folder / "report.md"
    atomic_write_bytes(path, text.encode())
    written["report"] = path
    return written

"""Readable outputs of `dhr bench`: a Markdown report, a chart and a comparison grid (PNG,
drawn with Pillow), from a results document of `dhr_cli.bench`.

`write_report(doc, folder)` writes into `folder`:
  report.md     what was run, on what machine under what load, the paper-ordering verdict on
                the occluded stratum, fidelity / segmentation / editing / speed tables
  chart.png     left: reconstruction error vs edit error per method (log axes; filled = the
                occluded stratum, hollow = all images; without true edits: MSE vs LPIPS@256);
                right: wall time per image per method split by stage, CPU time marked
  grid.png      for the first K images: input | true mask | DHR mask | each method's
                reconstruction and edit | true edit
  results.json  the results document (without the grid thumbnails)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .bench import (
    FIDELITY_COLUMNS,
    _fmt,
    decode_png,
    paper_ordering,
    verdict_text,
    write_results,
)
from .files import atomic_write, atomic_write_bytes, make_folder

METHOD_COLORS = {
    "encoder": (127, 127, 127),
    "pti": (230, 120, 20),
    "feature": (31, 119, 180),
    "dhr": (214, 39, 40),
}
STAGE_COLORS = {
    "encode": (190, 190, 190),
    "segment": (140, 180, 220),
    "refine": (60, 110, 170),
    "other": (225, 215, 160),
}
TRUE_TINT = (40, 120, 255)
PRED_TINT = (255, 40, 40)
BG = (255, 255, 255)
INK = (30, 30, 30)
FAINT = (215, 215, 215)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    box = draw.multiline_textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


# ============================================================================ chart


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade; every integer multiple when that gives fewer than 3."""
    for mantissas in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [
            m * 10.0**e
            for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            for m in mantissas
            if lo <= m * 10.0**e <= hi
        ]
        if len(ticks) >= 3:
            break
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1:
        return f"{v:g}"
    return f"{v:.{max(0, -math.floor(math.log10(abs(v))))}f}".rstrip("0").rstrip(".")


class _LogAxes:
    """A rectangle with log10 x and y axes."""

    def __init__(self, box: tuple[int, int, int, int], xs: list[float], ys: list[float]) -> None:
        self.box = box
        self.xr = self._range(xs)
        self.yr = self._range(ys)

    @staticmethod
    def _range(v: list[float]) -> tuple[float, float]:
        v = [x for x in v if x is not None and x > 0]
        if not v:
            return 1e-3, 1.0
        lo, hi = math.log10(min(v)), math.log10(max(v))
        pad = max(0.15, 0.12 * (hi - lo))
        return 10 ** (lo - pad), 10 ** (hi + pad)

    def x(self, v: float) -> float:
        x0, _, x1, _ = self.box
        a, b = (math.log10(t) for t in self.xr)
        return x0 + (math.log10(v) - a) / (b - a) * (x1 - x0)

    def y(self, v: float) -> float:
        _, y0, _, y1 = self.box
        a, b = (math.log10(t) for t in self.yr)
        return y1 - (math.log10(v) - a) / (b - a) * (y1 - y0)

    def draw(self, d: ImageDraw.ImageDraw, font: Any, xlabel: str, ylabel: str) -> None:
        x0, y0, x1, y1 = self.box
        for t in _log_ticks(*self.xr):
            px = self.x(t)
            d.line([(px, y0), (px, y1)], fill=FAINT)
            w, _ = _text_size(d, _tick_label(t), font)
            d.text((px - w / 2, y1 + 4), _tick_label(t), fill=INK, font=font)
        for t in _log_ticks(*self.yr):
            py = self.y(t)
            d.line([(x0, py), (x1, py)], fill=FAINT)
            w, h = _text_size(d, _tick_label(t), font)
            d.text((x0 - w - 6, py - h / 2 - 2), _tick_label(t), fill=INK, font=font)
        d.rectangle(self.box, outline=INK)
        w, _ = _text_size(d, xlabel, font)
        d.text(((x0 + x1) / 2 - w / 2, y1 + 24), xlabel, fill=INK, font=font)
        lw, lh = _text_size(d, ylabel, font)
        label = Image.new("RGBA", (lw + 4, lh + 6), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((2, 0), ylabel, fill=INK, font=font)
        label = label.rotate(90, expand=True)
        d._image.paste(label, (int(x0 - 64), int((y0 + y1) / 2 - label.size[1] / 2)), label)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _marker(d: ImageDraw.ImageDraw, x: float, y: float, color: tuple, filled: bool) -> None:
    r = 7
    if filled:
        d.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=INK)
    else:
        d.ellipse([x - r, y - r, x + r, y + r], outline=color, width=3)


def draw_chart(doc: dict[str, Any]) -> Image.Image:
    """Fidelity vs edit error per method (left) and time per image per method (right)."""
    agg = doc["aggregates"]
    methods = list(doc["config"]["methods"])
    occ = agg["by_stratum"].get("occluded")
    W, H = 1400, 600
    img = Image.new("RGB", (W, H), BG)
    d = ImageDraw.Draw(img)
    title_font, font, small = _font(20), _font(15), _font(13)

    # ---- left: fidelity vs edit error
    def point(group: dict[str, Any] | None, m: str, edit: bool) -> tuple[float, float] | None:
        if group is None:
            return None
        s = group["methods"].get(m) or {}
        x = (s.get("metrics") or {}).get("mse")
        y = (s.get("edit") or {}).get("mse") if edit else (s.get("metrics") or {}).get("lpips_256")
        return (x, y) if x and y else None

    has_edit = any((agg["all"]["methods"].get(m) or {}).get("edit") for m in methods)
    groups = [("all images", agg["all"], False)]
    if occ is not None:
        groups.insert(0, ("occluded stratum", occ, True))
    pts = {(label, m): point(g, m, has_edit) for label, g, _ in groups for m in methods}
    xs = [p[0] for p in pts.values() if p]
    ys = [p[1] for p in pts.values() if p]
    box = (110, 80, 640, 500)
    title = "Reconstruction vs edit error" if has_edit else "Reconstruction: MSE vs LPIPS@256"
    d.text((box[0], 20), title, fill=INK, font=title_font)
    sub = (
        "lower-left is better; filled: occluded stratum, hollow: all images"
        if occ is not None
        else "lower-left is better"
    )
    d.text((box[0], 48), sub, fill=INK, font=small)
    axes = _LogAxes(box, xs, ys)
    axes.draw(
        d,
        small,
        "reconstruction MSE (images in [-1, 1], log)",
        "edit MSE vs true edit (log)" if has_edit else "LPIPS-Alex @256 (log)",
    )
    placed: list[tuple[float, float, float, float]] = []
    for m in methods:
        color = METHOD_COLORS.get(m, INK)
        chain = [pts.get((label, m)) for label, _, _ in groups]
        chain = [p for p in chain if p]
        if len(chain) == 2:
            d.line([(axes.x(p[0]), axes.y(p[1])) for p in chain], fill=color, width=1)
        for _label, _group, filled in groups:
            p = pts.get((_label, m))
            if p:
                _marker(d, axes.x(p[0]), axes.y(p[1]), color, filled)
        if chain:
            px, py = axes.x(chain[0][0]), axes.y(chain[0][1])
            tw, th = _text_size(d, m, font)
            x, y = px + 10, py - 22
            while any(_overlap((x, y, x + tw, y + th + 4), b) for b in placed):
                y += th + 4  # labels of close points stack downwards
            placed.append((x, y, x + tw, y + th + 4))
            d.text((x, y), m, fill=color, font=font)

    # ---- right: time per image
    bx0, by0, bx1, by1 = 820, 80, 1330, 500
    d.text((bx0 - 80, 20), "Wall time per image (all images)", fill=INK, font=title_font)
    d.text(
        (bx0 - 80, 48),
        "stacked by stage; | marks CPU time; shared machine: see the report for load",
        fill=INK,
        font=small,
    )
    rows = []
    for m in methods:
        rt = (agg["all"]["methods"].get(m) or {}).get("runtime") or {}
        wall = rt.get("wall_s") or {}
        total = wall.get("total") or 0.0
        stages = {k: wall.get(k) or 0.0 for k in ("encode", "segment", "refine")}
        stages["other"] = max(0.0, total - sum(stages.values()))
        rows.append((m, total, stages, rt.get("cpu_s")))
    tmax = max([r[1] for r in rows] + [r[3] or 0 for r in rows] + [1e-3])
    step = _nice_step(tmax / 0.7)  # the longest bar ends at ~70%: room for its label
    top = math.ceil(tmax / 0.7 / step) * step
    span = bx1 - bx0

    def tx(v: float) -> float:
        return bx0 + v / top * span

    v = 0.0
    while v <= top + 1e-9:
        d.line([(tx(v), by0), (tx(v), by1)], fill=FAINT)
        w, _ = _text_size(d, _tick_label(v), small)
        d.text((tx(v) - w / 2, by1 + 4), _tick_label(v), fill=INK, font=small)
        v += step
    d.text(((bx0 + bx1) / 2 - 40, by1 + 24), "seconds per image", fill=INK, font=small)
    band = (by1 - by0) / max(1, len(rows))
    for i, (m, total, stages, cpu) in enumerate(rows):
        y0 = by0 + i * band + band * 0.2
        y1 = by0 + (i + 1) * band - band * 0.2
        w, h = _text_size(d, m, font)
        d.text(
            (bx0 - w - 10, (y0 + y1) / 2 - h / 2 - 3), m, fill=METHOD_COLORS.get(m, INK), font=font
        )
        x = 0.0
        for k, s in stages.items():
            if s > 0:
                d.rectangle([tx(x), y0, max(tx(x + s), tx(x) + 1), y1], fill=STAGE_COLORS[k])
            x += s
        if cpu:
            d.line([(tx(cpu), y0 - 4), (tx(cpu), y1 + 4)], fill=INK, width=3)
        label = f"{total:.2f} s" + (f" (CPU {cpu:.2f} s)" if cpu else "")
        lw, lh = _text_size(d, label, small)
        lx = max(tx(total), tx(cpu or 0)) + 6
        if lx + lw > W - 4:
            lx = tx(total) - lw - 6
        d.text((lx, (y0 + y1) / 2 - lh / 2 - 2), label, fill=INK, font=small)
    d.rectangle((bx0, by0, bx1, by1), outline=INK)
    lx = bx0
    for k, c in STAGE_COLORS.items():
        d.rectangle([lx, 548, lx + 14, 562], fill=c, outline=INK)
        d.text((lx + 20, 546), k, fill=INK, font=small)
        lx += 20 + _text_size(d, k, small)[0] + 18
    return img


# ============================================================================ grid


def _tint(rgb: np.ndarray, ood: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    out[ood] = out[ood] * 0.45 + np.array(color, np.float32) * 0.55
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_grid(doc: dict[str, Any], k: int | None = None, cell: int = 128) -> Image.Image | None:
    """Input | true mask | DHR mask | each method's reconstruction and edit | true edit, one
    row per image (the first `k` with thumbnails); None when there are none."""
    grid = doc.get("grid") or {}
    entries = [grid[p] for p in sorted(grid, key=int)][: k if k is not None else None]
    if not entries:
        return None
    methods = list(doc["config"]["methods"])
    name, strength = doc["config"]["grid_edit"]
    edit_label = f"{name} {strength:+g}"
    columns: list[tuple[str, Any]] = [("input", lambda e: decode_png(e["input"]))]

    def mask_col(key: str, color: tuple[int, int, int], inverted: bool) -> Any:
        def get(e: dict[str, Any]) -> np.ndarray | None:
            if key not in e:
                return None
            m = decode_png(e[key])
            ood = m < 128 if not inverted else m >= 128
            return _tint(decode_png(e["input"]), ood, color)

        return get

    if any("true_mask" in e for e in entries):
        columns.append(("true mask", mask_col("true_mask", TRUE_TINT, False)))
    if any("mask" in e for e in entries):
        columns.append(("DHR mask", mask_col("mask", PRED_TINT, False)))
    for m in methods:
        columns.append((f"{m}\nrecon", lambda e, m=m: _thumb(e, m, "recon")))
        if any("edit" in (e["methods"].get(m) or {}) for e in entries):
            columns.append((f"{m}\n{edit_label}", lambda e, m=m: _thumb(e, m, "edit")))
    if any("true_edit" in e for e in entries):
        columns.append((f"true\n{edit_label}", lambda e: _decode(e.get("true_edit"))))

    font, small = _font(14), _font(12)
    label_w, head_h, pad = 96, 44, 4
    W = label_w + len(columns) * (cell + pad) + pad
    H = head_h + len(entries) * (cell + pad) + pad
    img = Image.new("RGB", (W, H), BG)
    d = ImageDraw.Draw(img)
    for j, (title, _) in enumerate(columns):
        x = label_w + pad + j * (cell + pad)
        tw, th = _text_size(d, title, small)
        d.multiline_text(
            (x + (cell - tw) / 2, (head_h - th) / 2), title, fill=INK, font=small, align="center"
        )
    for i, e in enumerate(entries):
        y = head_h + i * (cell + pad)
        label = e["id"] + (f"\n{e['stratum']}" if e.get("stratum") else "")
        d.multiline_text((6, y + cell / 2 - 16), label, fill=INK, font=font)
        for j, (_, get) in enumerate(columns):
            x = label_w + pad + j * (cell + pad)
            arr = get(e)
            if arr is None:
                d.rectangle([x, y, x + cell - 1, y + cell - 1], outline=FAINT)
                continue
            tile = Image.fromarray(arr).convert("RGB")
            if tile.size != (cell, cell):
                resample = (
                    Image.Resampling.NEAREST
                    if tile.size[0] * 2 <= cell
                    else Image.Resampling.LANCZOS
                )
                tile = tile.resize((cell, cell), resample)
            img.paste(tile, (x, y))
    return img


def _decode(b64: str | None) -> np.ndarray | None:
    return None if b64 is None else decode_png(b64)


def _thumb(entry: dict[str, Any], method: str, key: str) -> np.ndarray | None:
    return _decode((entry["methods"].get(method) or {}).get(key))


# ============================================================================ markdown


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
        row += [_fmt(_get(s, "metrics", k), 2 if k == "psnr" else 4) for k, _ in cols]
        if with_regions:
            row += [_fmt(_get(s, "metrics", "mse_in")), _fmt(_get(s, "metrics", "mse_out"))]
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
            _fmt(e.get("mse")),
            _fmt(e.get("mse_in")),
            _fmt(e.get("mse_out")),
            _fmt(e.get("ood_change"), 2),
        ]
        for a in attrs:
            b = _get(e, "by_attribute", a) or {}
            r.append(f"{_fmt(b.get('mse_in'))} / {_fmt(b.get('mse_out'))}")
        return r

    for m, s in group["methods"].items():
        rows.append(row(f"`{m}`", s.get("edit")))
    ref = _get(group, "reference", "edit")
    if ref:
        r = row("no edit (input image)", ref)
        r[4] = f"(true edit moves them {_fmt(ref.get('ood_change'), 2)})"
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
                _fmt(w.get("encode"), 2),
                _fmt(w.get("segment"), 2),
                _fmt(w.get("refine"), 2),
                _fmt(w.get("total"), 2),
                _fmt(rt.get("cpu_s"), 2),
                _fmt(other, 2),
                _fmt(rt.get("peak_rss_mb"), 0),
                _fmt(rt.get("cuda_peak_mb"), 0),
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
                _fmt(seg.get("iou"), 3),
                _fmt(seg.get("iou_superpixels"), 3),
                _fmt(seg.get("iou_parsing"), 3),
                _fmt(seg.get("pred_ood_fraction"), 3),
                _fmt(sum(true) / len(true), 3) if true else "-",
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
            f"{_fmt(run.get('load_mean_1min'), 2)}"
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
    ov = {k: c.get(k) for k in ("steps", "coarse_steps", "pivot_steps", "weight_steps")}
    ov = {k: v for k, v in ov.items() if v is not None}
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

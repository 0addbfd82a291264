"""The headline of a results document: does the run reproduce the paper's ordering on the
occluded stratum (`paper_ordering`, `verdict_text`), and the summary tables printed after a run
(`summary_tables`, `print_summary`; the report's tables format numbers with `fmt` too)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .. import console

FIDELITY_COLUMNS = (
    ("mse", "MSE"),
    ("mse_256", "MSE@256"),
    ("lpips", "LPIPS"),
    ("lpips_256", "LPIPS@256"),
    ("psnr", "PSNR dB"),
    ("identity", "ID sim"),
)


def paper_ordering(doc: dict[str, Any], stratum: str = "occluded") -> dict[str, Any] | None:
    """Does the run reproduce the paper's ordering on `stratum`: DHR has the best fidelity
    (lowest MSE and lowest LPIPS@256 of the methods run) and a lower edit error than PTI
    (whole-image MSE vs the true edits; in- and out-of-domain reported too)? None when the
    stratum or DHR is missing."""
    group = doc["aggregates"]["by_stratum"].get(stratum)
    if group is None or "dhr" not in group["methods"]:
        return None
    ms = group["methods"]

    def val(m: str, *path: str) -> float | None:
        node: Any = ms.get(m, {})
        for p in path:
            node = (node or {}).get(p)
        return node

    out: dict[str, Any] = {"stratum": stratum, "n": ms["dhr"].get("n", 0)}
    fid = {}
    for key in ("mse", "lpips_256"):
        vals = {m: val(m, "metrics", key) for m in ms if val(m, "metrics", key) is not None}
        best = min(vals, key=vals.get) if vals else None
        fid[key] = {"values": vals, "best": best, "holds": best == "dhr"}
    out["fidelity"] = {"holds": all(f["holds"] for f in fid.values()), "by_metric": fid}
    if "pti" in ms and val("dhr", "edit", "mse") is not None:
        ed = {}
        for key in ("mse", "mse_in", "mse_out"):
            d, p = val("dhr", "edit", key), val("pti", "edit", key)
            ed[key] = {"dhr": d, "pti": p, "holds": d is not None and p is not None and d < p}
        out["edit"] = {"holds": ed["mse"]["holds"], "by_region": ed}
    else:
        out["edit"] = None
    out["holds"] = out["fidelity"]["holds"] and bool(out["edit"] and out["edit"]["holds"])
    return out


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: `digits` decimals below 10, fewer above; "-" for None."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def summary_tables(group: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    """Header and rows of the headline tables for one aggregate group: fidelity (and IoU),
    then editing, time and memory (each fits an 80-column terminal)."""
    ms = group["methods"]
    has_id = any((s.get("metrics") or {}).get("identity") is not None for s in ms.values())
    has_iou = any((s.get("segmentation") or {}).get("iou") is not None for s in ms.values())
    has_edit = any(s.get("edit") for s in ms.values())
    cols = [(k, label) for k, label in FIDELITY_COLUMNS if k != "identity" or has_id]
    fid_header = ["method", "n"] + [label.replace(" dB", "") for _, label in cols]
    if has_iou:
        fid_header.append("IoU")
    fid_rows = []
    for m, s in ms.items():
        met = s.get("metrics") or {}
        row = [m, str(s.get("n", 0))]
        row += [fmt(met.get(k), 2 if k == "psnr" else 4) for k, _ in cols]
        if has_iou:
            row.append(fmt((s.get("segmentation") or {}).get("iou"), 3))
        fid_rows.append(row)
    run_header = ["method"]
    if has_edit:
        run_header += ["edit MSE", "in", "out", "occl. change"]
    run_header += ["s/image", "CPU s", "RSS MiB"]
    run_rows = []
    for m, s in ms.items():
        row = [m]
        if has_edit:
            e = s.get("edit") or {}
            row += [
                fmt(e.get("mse")),
                fmt(e.get("mse_in")),
                fmt(e.get("mse_out")),
                fmt(e.get("ood_change"), 2),
            ]
        rt = s.get("runtime") or {}
        row += [
            fmt((rt.get("wall_s") or {}).get("total"), 2),
            fmt(rt.get("cpu_s"), 2),
            fmt(rt.get("peak_rss_mb"), 0),
        ]
        run_rows.append(row)
    return [(fid_header, fid_rows), (run_header, run_rows)]


def print_summary(doc: dict[str, Any]) -> None:
    """The headline tables on stdout (all images; the occluded stratum when present)."""
    groups = [("all images", doc["aggregates"]["all"])]
    if "occluded" in doc["aggregates"]["by_stratum"]:
        groups.append(("occluded stratum", doc["aggregates"]["by_stratum"]["occluded"]))
    for title, group in groups:
        for (header, rows), what in zip(
            summary_tables(group), ("fidelity", "editing, time, memory"), strict=True
        ):
            table = Table(title=f"{title}: {what}", header_style="bold", box=None, pad_edge=False)
            for i, h in enumerate(header):
                table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            console.print_renderable(table)
    verdict = paper_ordering(doc)
    if verdict is not None:
        console.print_data(verdict_text(verdict))


def verdict_text(v: dict[str, Any]) -> str:
    """One plain paragraph: does the run reproduce the paper's ordering?"""
    f = v["fidelity"]["by_metric"]
    parts = []
    for key, label in (("mse", "MSE"), ("lpips_256", "LPIPS@256")):
        vals = f[key]["values"]
        shown = ", ".join(f"{m} {fmt(x)}" for m, x in sorted(vals.items(), key=lambda kv: kv[1]))
        best = "DHR is best" if f[key]["holds"] else f"best is {f[key]['best']}, not DHR"
        parts.append(f"{label}: {best} ({shown})")
    fid = "; ".join(parts)
    text = (
        f"Paper ordering on the {v['stratum']} stratum ({v['n']} image{'' if v['n'] == 1 else 's'}): "
        f"best fidelity {'REPRODUCED' if v['fidelity']['holds'] else 'NOT reproduced'} - {fid}."
    )
    e = v.get("edit")
    if e is None:
        text += " Edit error vs PTI: not measured (needs dhr, pti and true edits)."
    else:
        r = e["by_region"]
        text += (
            f" DHR edit error below PTI's {'REPRODUCED' if e['holds'] else 'NOT reproduced'}: "
            f"whole image {fmt(r['mse']['dhr'])} vs {fmt(r['mse']['pti'])}, in-domain "
            f"{fmt(r['mse_in']['dhr'])} vs {fmt(r['mse_in']['pti'])}, out-of-domain "
            f"{fmt(r['mse_out']['dhr'])} vs {fmt(r['mse_out']['pti'])} (MSE, DHR vs PTI)."
        )
    return text

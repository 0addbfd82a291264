"""The results document of `dhr bench`: assembled from per-image records (aggregates over all
images and per stratum recomputed from them), checked when read, written atomically, merged
from shards, and reduced to its machine-independent part (`comparable`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import BadData, InputMissing, OutputError, UsageError, first_line
from ..files import atomic_write_json, ensure_folder
from ..synthetic.benchset import STRATA
from .config import FORMAT, MERGE_KEYS, VERSION, BenchConfig, BenchItem, bench_items

if TYPE_CHECKING:
    from ..packs import Pack

MAX_KEYS = ("peak_rss_mb", "cuda_peak_mb")  # aggregated as a maximum, not a mean


def finite(x: Any) -> Any:
    """JSON has no NaN/inf: None instead, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif v is None:
            out[key] = float("nan")  # not measured: kept as a key, aggregated to None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def _stats(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over images of every numeric field (maxima for peak memory), nested as the
    records are, plus "n" (images) and "runtime.reused" (how many came from project files)."""
    flats = [_flatten(e) for e in entries]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    agg: dict[str, Any] = {}
    for k in keys:
        vals = [f[k] for f in flats if k in f and not math.isnan(f[k])]
        if not vals:
            agg[k] = None
        elif k.rsplit(".", 1)[-1] in MAX_KEYS:
            agg[k] = max(vals)
        else:
            agg[k] = math.fsum(vals) / len(vals)
    out = _unflatten(agg)
    out["n"] = len(entries)
    if any("runtime" in e for e in entries):
        out.setdefault("runtime", {})["reused"] = sum(
            1 for e in entries if (e.get("runtime") or {}).get("reused")
        )
    return out


def aggregate(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Per-method means over all images and per stratum; the "no edit" reference likewise."""
    records = sorted(records, key=lambda r: r["position"])
    strata = []
    for r in records:
        if r.get("stratum") and r["stratum"] not in strata:
            strata.append(r["stratum"])
    strata.sort(key=lambda s: STRATA.index(s) if s in STRATA else len(STRATA))

    def group(rs: list[dict[str, Any]]) -> dict[str, Any]:
        out = {m: _stats([r["methods"][m] for r in rs if m in r["methods"]]) for m in methods}
        refs = [r["reference"] for r in rs if r.get("reference")]
        if refs:
            out_ref = _stats(refs)
            return {"methods": out, "reference": out_ref}
        return {"methods": out}

    result = {"all": group(list(records))}
    result["by_stratum"] = {s: group([r for r in records if r.get("stratum") == s]) for s in strata}
    return finite(result)


def make_document(
    config: BenchConfig,
    items: Sequence[BenchItem],
    records: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    notices: Sequence[str],
    pack: Pack | None = None,
    pack_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r["position"])
    failed = sorted(failed, key=lambda r: r["position"])
    grid = {str(r["position"]): r.pop("_grid") for r in records if "_grid" in r}
    covered = sorted([r["position"] for r in records] + [f["position"] for f in failed])
    counts: dict[str, int] = {}
    for it in items:
        if it.stratum:
            counts[it.stratum] = counts.get(it.stratum, 0) + 1
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "dhr_version": __version__,
        "config": config.to_json(),
        "pack": pack_info if pack_info is not None else (pack.describe() if pack else {}),
        "items": [it.id for it in items],
        "strata": counts,
        "positions": covered,
        "complete": len(covered) == len(items),
        "records": records,
        "failed": failed,
        "aggregates": aggregate(records, config.methods),
        "runs": runs,
        "notices": list(dict.fromkeys(notices)),
        "grid": grid,
    }
    return finite(doc)


def load_results(path: Path) -> dict[str, Any]:
    """A results document written by `dhr bench -o` (checked)."""
    path = Path(path)
    if not path.is_file():
        raise InputMissing(f"results file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadData(f"{path} is not a readable JSON file: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadData(f"{path} is not a dhr bench results file")
    if doc.get("version") != VERSION:
        raise BadData(f"{path} is dhr bench results version {doc.get('version')}, not {VERSION}")
    if problem := _structure_problem(doc):
        raise BadData(
            f"{path} is a damaged dhr bench results file ({problem})",
            hint="run the `dhr bench` command that wrote it again",
        )
    return doc


def _structure_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a results document that merging and reports read
    (None: fine). A hand-edited or cut file otherwise fails deep inside as an internal error."""
    kinds = {"config": dict, "items": list, "records": list, "positions": list}
    optional = {"failed": list, "runs": list, "notices": list, "grid": dict}
    for key, kind in (kinds | optional).items():
        if key not in doc and key in kinds:
            return f"no {key!r}"
        if key in doc and not isinstance(doc[key], kind):
            return f"{key!r} is not a JSON {'object' if kind is dict else 'list'}"
    try:
        BenchConfig.from_json(doc["config"])
    except (TypeError, ValueError, UsageError) as e:
        return f"bad 'config': {first_line(e)}"
    if not all(isinstance(x, str) for x in doc["items"]):
        return "'items' must be names"
    n = len(doc["items"])
    entries = [("records", r) for r in doc["records"]]
    entries += [("failed", f) for f in doc.get("failed", [])]
    for key, entry in entries:
        position = entry.get("position") if isinstance(entry, dict) else None
        if not isinstance(position, int) or not 0 <= position < n:
            return f"an entry of {key!r} has no valid 'position'"
        if key == "records" and not (
            isinstance(entry.get("methods"), dict)
            and all(isinstance(m, dict) for m in entry["methods"].values())
        ):
            return f"record {position} has no 'methods' object"
    return None


def check_results_path(path: Path) -> None:
    """Fail before a long run, not after it, when results cannot be written to `path`: its
    folder is created, and it must not be a folder itself."""
    if path.is_dir():
        raise OutputError(
            f"{path} is a folder; give the results file a name", hint=f"-o {path / 'results.json'}"
        )
    ensure_folder(path)


def write_results(doc: dict[str, Any], path: Path, *, grid: bool = True) -> Path:
    """Write a results document atomically (without grid thumbnails unless `grid`)."""
    path = Path(path)
    out = doc if grid else {k: v for k, v in doc.items() if k != "grid"}
    check_results_path(path)
    atomic_write_json(path, finite(out))
    return path


def merge_results(
    parts: Sequence[dict[str, Any]], *, require_complete: bool = False
) -> dict[str, Any]:
    """Combine shard results into one document (records ordered, aggregates recomputed).

    The parts must come from the same benchmark (same items, methods, pack, seed and step
    options); an image measured in two parts must have the same numbers in both (timings
    aside). Missing images make an incomplete document (an error with `require_complete`).
    """
    if not parts:
        raise UsageError("nothing to merge")
    first = parts[0]
    config = BenchConfig.from_json(first["config"])
    key = {k: first["config"].get(k) for k in MERGE_KEYS}
    records: dict[int, dict[str, Any]] = {}
    failed: dict[int, dict[str, Any]] = {}
    grid: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    notices: list[str] = []
    for i, part in enumerate(parts, start=1):
        other = {k: part["config"].get(k) for k in MERGE_KEYS}
        if other != key:
            diff = [k for k in MERGE_KEYS if other[k] != key[k]]
            raise BadData(
                f"part {i} measures another benchmark ({', '.join(diff)} differ)",
                hint="merge only shards of one `dhr bench` command",
            )
        if part["items"] != first["items"]:
            raise BadData(f"part {i} has other images than part 1")
        for r in part["records"]:
            pos = r["position"]
            if pos in records and comparable_record(records[pos]) != comparable_record(r):
                raise BadData(f"image {r['id']} was measured twice with different results")
            records[pos] = r
            failed.pop(pos, None)
        for f in part.get("failed", []):
            if f["position"] not in records:
                failed[f["position"]] = f
        grid.update(part.get("grid") or {})
        runs += part.get("runs", [])
        notices += part.get("notices", [])
    items = [BenchItem(i, sid) for i, sid in enumerate(first["items"])]
    if config.synthetic is not None:
        items = bench_items(config)
    recs = []
    for pos in sorted(records):
        r = dict(records[pos])
        if str(pos) in grid:
            r["_grid"] = grid[str(pos)]
        recs.append(r)
    doc = make_document(
        config,
        items,
        recs,
        list(failed.values()),
        runs,
        notices,
        pack_info=first.get("pack", {}),
    )
    doc["shard"] = None
    if require_complete and not doc["complete"]:
        missing = sorted(set(range(len(items))) - set(doc["positions"]))
        raise BadData(
            f"the parts cover {len(doc['positions'])} of {len(items)} images "
            f"(missing positions {missing[:10]}{' ...' if len(missing) > 10 else ''})",
            hint="run the missing shards, or merge with --partial",
        )
    return doc


def _without_runtime(group: dict[str, Any], *drop: str) -> dict[str, Any]:
    """A record or aggregate group without `drop` and without its methods' runtime fields."""
    out = {k: v for k, v in group.items() if k not in drop}
    out["methods"] = {
        m: {k: v for k, v in s.items() if k != "runtime"} for m, s in group["methods"].items()
    }
    return out


def comparable_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what depends on the machine (runtime, alignment time, thumbnails)."""
    return _without_runtime(record, "align_s", "_grid")


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The machine-independent part of a results document: records and aggregates without
    runtime fields (what a merge of shards must reproduce exactly)."""
    agg = doc["aggregates"]
    return {
        "items": doc["items"],
        "records": [comparable_record(r) for r in doc["records"]],
        "aggregates": {
            "all": _without_runtime(agg["all"]),
            "by_stratum": {s: _without_runtime(g) for s, g in agg["by_stratum"].items()},
        },
    }

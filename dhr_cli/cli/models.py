"""`dhr models list | download | verify | path | import`: the model hub from the command line
(torch-free)."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import console, hub
from ..app.batch import run_batch
from ..errors import ModelUnavailable, UsageError
from . import complete
from .options import DhrGroup, register, settings

_PACK_HELP = (
    "Pack: ffhq (default) or synthetic; shared files (LPIPS, parsing, detection) are included."
)

PackOpt = Annotated[
    str | None,
    typer.Option(
        "--pack",
        metavar="PACK",
        autocompletion=complete.pack_names,
        help=_PACK_HELP,
        show_default=False,
    ),
]


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def pack_download(pack: str, models_dir: Path | None) -> dict[str, Any]:
    """What `dhr models download PACK` fetches: its files, their total size where known (the
    registry's recorded sizes), the files of unknown size, and what is not here yet."""
    names = hub.download_targets([pack])
    known, _ = hub.pack_download_size(pack)
    absent = [n for n in names if hub.local_path(n, models_dir=models_dir) is None]
    return {
        "files": len(names),
        "bytes": known,
        "unknown_size": [n for n in names if hub.get(n).size is None],
        "missing": absent,
        "missing_bytes": sum(hub.get(n).size or 0 for n in absent),
        "missing_unknown_size": [n for n in absent if hub.get(n).size is None],
    }


def download_summary(pack: str, t: dict[str, Any]) -> str:
    """One line per pack: how much `dhr models download PACK` fetches, and what is missing."""

    def amount(size: int, unknown: list[str]) -> str:
        return human_size(size) + (f" + {len(unknown)} of unknown size" if unknown else "")

    line = f"{pack} pack: {t['files']} files, {amount(t['bytes'], t['unknown_size'])}"
    if t["unknown_size"]:
        line += f" ({', '.join(t['unknown_size'])})"
    if not t["missing"]:
        return line + "; all here"
    missing = amount(t["missing_bytes"], t["missing_unknown_size"])
    return line + f"; {len(t['missing'])} not here yet: {missing} to download"


def models_list_cmd(pack: PackOpt = None) -> None:
    """List every model file dhr uses, with URL, size, sha256, licence and cache state."""
    s = settings()
    rows = [hub.describe(e, models_dir=s.models_dir) for e in hub.entries(pack)]
    totals = {p: pack_download(p, s.models_dir) for p in ([pack] if pack else hub.PACKS)}
    if s.json:
        folder = str(hub.cache_dir(s.models_dir))
        console.print_json({"models_dir": folder, "models": rows, "packs": totals})
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("name", "pack", "role", "size", "cached"):
        table.add_column(col, no_wrap=True)
    table.add_column("licence", overflow="fold")
    for r in rows:
        table.add_row(
            r["name"],
            r["pack"],
            r["role"],
            human_size(r["size"]),
            r["cached"] or "no",
            r["licence"],
        )
    console.print_renderable(table)
    for name, t in totals.items():
        console.log.info(download_summary(name, t))
    folder = hub.cache_dir(s.models_dir)
    console.log.info(f"models folder: {folder}")
    if problem := hub.cache_dir_problem(folder):
        console.log.warn(f"{problem} (choose another with --models-dir or DHR_HOME)")


def models_download_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Model names, or a pack's name for all its files (default: every file of --pack).",
            autocompletion=complete.download_names,
            show_default=False,
        ),
    ] = None,
    pack: PackOpt = None,
) -> None:
    """Download (and verify) model files into the models folder."""
    s = settings()
    if names and pack:
        raise UsageError("give model names or --pack, not both")
    if names:
        targets = hub.download_targets(names)
    else:
        targets = [e.name for e in hub.entries(pack or hub.DEFAULT_PACK) if e.bundled is None]
    done: list[dict[str, Any]] = []
    failed: list[ModelUnavailable] = []
    for n in targets:
        try:
            p = hub.fetch(n, models_dir=s.models_dir, offline=s.offline or None)
            done.append({"name": n, "path": str(p), "ok": True})
            if not s.json:
                console.print_data(f"{n}  {p}")
        except ModelUnavailable as e:  # listed once, with the others, at the end
            failed.append(e)
            done.append({"name": n, "path": None, "ok": False, "error": e.message})
    if s.json:
        console.print_json({"ok": not failed, "models": done})
    if len(failed) == 1 and len(targets) == 1:
        raise failed[0]
    if failed:
        raise hub.unavailable_together(
            f"{len(failed)} of {len(targets)} model files could not be fetched",
            failed,
            models_dir=s.models_dir,
        )


def verify_summary(report: Any) -> dict[str, Any]:
    """Counts of a verify report: present (and of those verified, corrupt), missing, and the
    missing files per pack."""
    results = report.results
    missing: dict[str, int] = {}
    for r in results:
        if r.status == "missing":
            pack = hub.get(r.name).pack
            missing[pack] = missing.get(pack, 0) + 1
    return {
        "files": len(results),
        "present": sum(r.status != "missing" for r in results),
        "verified": sum(r.status == "ok" for r in results),
        "corrupt": sum(r.status == "corrupt" for r in results),
        "missing": sum(missing.values()),
        "missing_by_pack": missing,
    }


def verify_summary_line(summary: dict[str, Any]) -> str:
    line = (
        f"{summary['present']} of {summary['files']} files present, {summary['verified']} "
        f"verified, {summary['corrupt']} corrupt, {summary['missing']} missing"
    )
    if summary["missing_by_pack"]:
        packs = ", ".join(f"{p}: {n}" for p, n in summary["missing_by_pack"].items())
        line += f" ({packs}; `dhr models download PACK` fetches a pack's files)"
    return line


def models_verify_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Model names (default: every local file).",
            autocompletion=complete.model_names,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Re-hash local model files against pinned or first-use sha256; exit 5 if any fails."""
    s = settings()
    report = hub.verify(names or None, models_dir=s.models_dir)
    summary = verify_summary(report)
    if s.json:
        console.print_json({**report.to_json(), "summary": summary})
    else:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("name", "status", "source", "hash", "path / detail"):
            table.add_column(col, overflow="fold")
        for r in report.results:
            table.add_row(
                r.name, r.status, r.source or "", r.hash_origin, r.detail or (r.path or "")
            )
        console.print_renderable(table)
        console.log.info(verify_summary_line(summary))
    if not report.ok:
        bad = ", ".join(r.name for r in report.failures)
        raise ModelUnavailable(
            f"verification failed for: {bad}",
            hint="`dhr models download NAME` fetches a missing or corrupt file again",
        )


def models_path_cmd(
    name: Annotated[
        str,
        typer.Argument(help="Model name.", autocompletion=complete.model_names, show_default=False),
    ],
) -> None:
    """Print where a model file is (or where to put it if it is not there yet)."""
    s = settings()
    p = hub.path(name, models_dir=s.models_dir)
    present = hub.local_path(name, models_dir=s.models_dir) is not None
    if s.json:
        console.print_json({"name": name, "path": str(p), "present": present})
    else:
        console.print_data(str(p))
    if not present:
        console.log.warn(
            f"{name} is not there yet: `dhr models download {name}` or `dhr models import FILE`"
        )


def models_import_cmd(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Model files (or pinned archives) obtained elsewhere.", show_default=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            autocompletion=complete.model_names,
            help="Registry name (default: identify by sha256/file name).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace a first-use hash recorded earlier (never a pinned one)."
        ),
    ] = False,
) -> None:
    """Copy model files obtained elsewhere into the models folder, after verifying each."""
    s = settings()
    if name is not None and len(files) > 1:
        raise UsageError("--name names one file: import the others without it")

    def work(file: Path) -> dict[str, Any]:
        paths = [str(p) for p in hub.import_file(file, name, models_dir=s.models_dir, force=force)]
        if not s.json:
            for p in paths:
                console.print_data(p)
        return {"input": str(file), "imported": paths}

    result = run_batch(files, work, label="import", resume=None)
    if s.json:
        imported = [p for rec in result.done for p in rec["imported"]]
        console.print_json({"imported": imported, "failed": result.to_json()["failed"]})
    result.raise_for_failures()


models_app = typer.Typer(
    cls=DhrGroup, help="List, download, verify and import model files.", no_args_is_help=True
)
register(models_app, "list", models_list_cmd)
register(models_app, "download", models_download_cmd)
register(models_app, "verify", models_verify_cmd)
register(models_app, "path", models_path_cmd)
register(models_app, "import", models_import_cmd)

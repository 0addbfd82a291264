"""`dhr bench` (= `dhr bench run`) and `dhr bench merge`: the command-line side of
`dhr_cli.bench` (which loads torch, so it is imported inside the commands)."""

import contextlib
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import console, packs
from ..errors import PartialFailure, UsageError, not_found
from ..faces.image_io import check_image
from ..files import make_folder
from ..runtime import seed_everything
from .args import parse_named
from .checks import listed, pack_for, shard_of, without_own_outputs
from .options import (
    BATCH,
    BENCH,
    ENGINE,
    REPORT,
    AlignedOpt,
    DhrGroup,
    PackOpt,
    ShardCountOpt,
    ShardOpt,
    device_str,
    not_stdout,
    register,
    settings,
)


class BenchGroup(DhrGroup):
    """`dhr bench ...` without a subcommand name means `dhr bench run ...` (so
    `dhr bench --synthetic 24` and `dhr bench photos/*.jpg` work as written)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing and (not args or args[0] not in self.commands):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def bench_outputs(
    doc: dict[str, Any],
    output: Path | None,
    report: Path | None,
    grid: int,
    command_line: str | None,
) -> None:
    """Write the results and the report, print the summary, end with the images that failed."""
    from ..bench import print_summary, write_results

    s = settings()
    if output is not None:
        console.log.info(f"results: {write_results(doc, output)}")
    if report is not None:
        from ..bench import write_report

        written = write_report(doc, report, command=command_line, grid=grid)
        console.log.info("report: " + ", ".join(str(p) for p in written.values()))
    if s.json:
        console.print_json({k: v for k, v in doc.items() if k != "grid"})
    else:
        print_summary(doc)
    for note in doc.get("notices", []):
        console.log.warn(note)
    if doc.get("failed"):
        lines = "; ".join(f"{f['id']}: {f['error']}" for f in doc["failed"][:5])
        raise PartialFailure(
            f"{len(doc['failed'])} of {len(doc['positions'])} images failed "
            f"(the others are measured and reported): {lines}"
        )


def bench_command_line(
    config: Any, shard: str | None, jobs: int, report: Path | None = None
) -> str:
    """The canonical command that reproduces a run (for the report): every choice spelled out,
    the pack and the report folder included."""
    parts = ["dhr", "bench"]
    if config.synthetic is not None:
        parts += ["--synthetic", str(config.synthetic)]
    else:
        parts += [shlex.quote(p) for p in config.images]
    parts += ["--methods", ",".join(config.methods), "--pack", shlex.quote(config.pack)]
    if config.aligned:
        parts.append("--aligned")
    if config.seed:
        parts += ["--seed", str(config.seed)]
    for k, v in config.overrides().items():
        parts += [f"--{k.replace('_', '-')}", str(v)]
    if config.reuse:
        parts.append("--reuse")
    if shard:
        parts += ["--shard", shard]
    if jobs != 0:
        parts += ["--jobs", str(jobs)]
    if report is not None:
        parts += ["--report", shlex.quote(str(report))]
    return " ".join(parts)


def path_opt(*flags: str, help: str) -> Any:  # noqa: A002 - typer's own word
    """An optional file or folder of the report panel (never `-`: dhr writes files)."""
    return Annotated[
        Path | None,
        typer.Option(
            *flags, callback=not_stdout, help=help, rich_help_panel=REPORT, show_default=False
        ),
    ]


def step_opt(name: str, what: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            f"--{name}",
            min=1,
            help=f"{what} (default: the published value; the report flags any change).",
            rich_help_panel=ENGINE,
            show_default=False,
        ),
    ]


GridOpt = Annotated[
    int,
    typer.Option(
        "--grid",
        min=0,
        help="Images in the comparison grid (the first K).",
        rich_help_panel=REPORT,
    ),
]


def bench_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos to benchmark on (or --synthetic N).", show_default=False),
    ] = None,
    synthetic: Annotated[
        int | None,
        typer.Option(
            "--synthetic",
            min=1,
            help="Benchmark on the first N scenes of the synthetic benchmark set (true masks "
            "and true edits; --seed picks the set).",
            rich_help_panel=BENCH,
            show_default=False,
        ),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated methods: encoder, pti, feature, dhr.",
            rich_help_panel=BENCH,
        ),
    ] = "encoder,pti,feature,dhr",
    pack: PackOpt = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="Keep each method's project file in --projects and reuse it on the next run "
            "(same photo, method and settings).",
            rich_help_panel=BENCH,
        ),
    ] = False,
    projects: Annotated[
        Path | None,
        typer.Option(
            "--projects",
            help="Folder of the project files of --reuse (default dhr-bench/projects).",
            rich_help_panel=BENCH,
            show_default=False,
        ),
    ] = None,
    shard: ShardOpt = None,
    shard_count: ShardCountOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            help="Worker processes (0 = automatic: one per core for single-threaded packs).",
            rich_help_panel=BATCH,
        ),
    ] = 0,
    identity: Annotated[
        bool,
        typer.Option(
            "--identity/--no-identity",
            help="Identity similarity (ArcFace IR-SE50; skipped with a notice when its weights "
            "are not available).",
            rich_help_panel=BENCH,
        ),
    ] = True,
    output: path_opt(
        "--output",
        "-o",
        help="Write the results JSON here (with grid thumbnails: what `dhr bench merge` reads).",
    ) = None,
    report: path_opt(
        "--report",
        help="Folder for report.md, chart.png, grid.png and results.json (default "
        "dhr-bench; shards write none unless given).",
    ) = None,
    no_report: Annotated[
        bool,
        typer.Option("--no-report", help="Write no report folder.", rich_help_panel=REPORT),
    ] = False,
    grid: GridOpt = 6,
    grid_edit: Annotated[
        str,
        typer.Option(
            "--grid-edit",
            help="The edit shown in the grid: NAME=STRENGTH.",
            rich_help_panel=REPORT,
        ),
    ] = "smile=2",
    steps: step_opt("steps", "Refinement steps (PTI: tuning steps)") = None,
    coarse_steps: step_opt("coarse-steps", "Coarse-inversion steps of the segmentation") = None,
    pivot_steps: step_opt("pivot-steps", "PTI pivot projection steps") = None,
    weight_steps: step_opt("weight-steps", "DHR steps that update the generator weights") = None,
    aligned: AlignedOpt = False,
) -> None:
    """Invert every image with every method and report fidelity, speed, memory and editing.

    Fidelity is MSE, LPIPS-Alex at 256 px and at full size, PSNR and identity; then time per
    stage, peak memory and, on the synthetic set, segmentation IoU and edit error against the
    true edited images, per stratum.

    Outputs: a table (or --json); report.md, chart.png, grid.png, results.json in --report.
    Large sets: --shard K/N -o part-K.json on each machine, then `dhr bench merge part-*.json`.
    """
    from ..bench import BenchConfig, BenchInterrupted, check_results_path, run_bench

    s = settings()
    shard_kn = shard_of(shard, shard_count)
    inputs = list(inputs or [])
    if synthetic is not None and inputs:
        raise UsageError("give photos or --synthetic N, not both")
    if synthetic is None and not inputs:
        raise UsageError(
            "give photos to benchmark on, or --synthetic N",
            hint="dhr bench --synthetic 24  (or: dhr bench photos/*.jpg)",
        )
    inputs = without_own_outputs(inputs)
    for p in inputs:
        if p.is_dir():
            check_image(p)  # says what to give instead of a folder
    missing = [p for p in inputs if not p.is_file()]
    if missing:
        raise not_found(listed(missing, limit=5))
    if report is not None and no_report:
        raise UsageError("--report and --no-report contradict each other")
    name, strength = parse_named(grid_edit, "--grid-edit")
    config = BenchConfig(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        pack=packs.check_pack_name(
            pack or ("synthetic" if synthetic is not None else pack_for(None, inputs))
        ),
        synthetic=synthetic,
        images=tuple(str(p) for p in inputs),
        seed=s.seed,
        grid=grid,
        grid_edit=(name, strength),
        reuse=reuse,
        projects=str(projects) if projects is not None else None,
        identity=identity,
        aligned=aligned,
        steps=steps,
        coarse_steps=coarse_steps,
        pivot_steps=pivot_steps,
        weight_steps=weight_steps,
        device=device_str(),
        models_dir=str(s.models_dir) if s.models_dir else None,
        offline=s.offline or None,
    )
    if report is None and not no_report and shard_kn is None:
        from ..bench import DEFAULT_DIR

        report = DEFAULT_DIR
    # a blocked output path is found now, not after hours of measuring
    if output is not None:
        check_results_path(output)
    if report is not None:
        make_folder(report)
    seed_everything(s.seed)
    resolved = None if shard_kn is None else f"{shard_kn[0]}/{shard_kn[1]}"
    command_line = bench_command_line(config, resolved, jobs, report)
    try:
        doc = run_bench(config, shard=shard_kn, jobs=jobs, show_progress=not s.quiet)
    except BenchInterrupted as e:
        interrupted_bench_outputs(e.doc, output, report, grid, command_line)
        raise
    bench_outputs(doc, output, report, grid, command_line)


def interrupted_bench_outputs(
    doc: dict[str, Any], output: Path | None, report: Path | None, grid: int, command_line: str
) -> None:
    """Ctrl-C: write what was measured (results, report), marked incomplete; exit 130 after."""
    if not doc["records"]:
        return
    console.log.warn(
        f"interrupted after {len(doc['positions'])} of {len(doc['items'])} images: writing "
        "the results of those (`--reuse` keeps the inversions for the next run)"
    )
    with contextlib.suppress(PartialFailure):  # the exit code is the interruption's
        bench_outputs(doc, output, report, grid, command_line)


def bench_merge_cmd(
    parts: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Results files of the shards (`dhr bench --shard K/N -o FILE`).",
            show_default=False,
        ),
    ] = None,
    output: path_opt("--output", "-o", help="Write the merged results JSON here.") = None,
    report: path_opt(
        "--report", help="Folder for report.md, chart.png, grid.png and results.json."
    ) = None,
    grid: GridOpt = 6,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="Merge even when some images are in no part (the report says so).",
            rich_help_panel=BATCH,
        ),
    ] = False,
) -> None:
    """Combine the results of `dhr bench --shard K/N -o FILE` runs into one whole run.

    The per-image records are kept as they are; the aggregates are recomputed from them.
    """
    from ..bench import load_results, merge_results

    if not parts:
        raise UsageError(
            "give the results files to merge", hint="dhr bench merge part-*.json -o all.json"
        )
    if output is None and report is None and not settings().json:
        raise UsageError(
            "say where the merged results go: -o FILE, --report DIR or --json",
            hint="dhr bench merge part-*.json -o all.json --report dhr-bench",
        )
    docs = [load_results(p) for p in parts]
    doc = merge_results(docs, require_complete=not partial)
    if not doc["complete"]:
        console.log.warn(
            f"incomplete: {len(doc['positions'])} of {len(doc['items'])} images are measured"
        )
    bench_outputs(doc, output, report, grid, None)


bench_app = typer.Typer(
    cls=BenchGroup,
    help="Measure fidelity, editability, speed and memory of each method.\n\n"
    "`dhr bench [IMAGES|--synthetic N]` means `dhr bench run`; `dhr bench merge` combines shards.",
)
register(bench_app, "run", bench_cmd)
register(bench_app, "merge", bench_merge_cmd)

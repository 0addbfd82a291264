"""The `dhr` command line: typer commands only (parse, call the library, print).

Heavy modules (torch, the networks) are imported inside command bodies so that
`dhr --help`, `dhr --version` and shell completion start instantly.

Global options (--device, --quiet, --verbose, --json, --seed, --models-dir,
--offline) are accepted both before the subcommand and after it
(`dhr --json models list` and `dhr models list --json` mean the same).
"""

import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from .. import __version__
from ..errors import EXIT_CODE_HELP, DhrError, ExitCode, ParameterError, UsageError
from ..runtime import Settings, check_device_spec
from .args import parse_layers, parse_tau

_EXIT_CODES_EPILOG = "Exit codes: " + "; ".join(f"{int(c)} {h}" for c, h in EXIT_CODE_HELP.items())
_GLOBAL = "Global options"

app = typer.Typer(
    name="dhr",
    help=(
        "Edit faces in photos with StyleGAN2 inversion and Domain-Specific Hybrid Refinement (DHR).\n\n"
        "Typical chain: dhr invert photo.jpg  ->  dhr edit photo.jpg --smile 1.5"
    ),
    epilog=_EXIT_CODES_EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(
    help="List, download, verify and import model files.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


# --- global options -------------------------------------------------------------------------

_GLOBAL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (
        Annotated[
            str | None,
            typer.Option(
                "--device",
                help="auto, cpu, cuda, cuda:N or mps.",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        None,
    ),
    "quiet": (
        Annotated[
            bool,
            typer.Option(
                "--quiet",
                "-q",
                help="Only errors on stderr.",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        False,
    ),
    "verbose": (
        Annotated[
            bool,
            typer.Option(
                "--verbose",
                "-v",
                help="More detail on stderr; tracebacks for errors.",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        False,
    ),
    "json_out": (
        Annotated[
            bool,
            typer.Option(
                "--json",
                help="Print the result as JSON on stdout.",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        False,
    ),
    "seed": (
        Annotated[
            int | None,
            typer.Option(
                "--seed",
                help="Random seed (default 0).",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        None,
    ),
    "models_dir": (
        Annotated[
            Path | None,
            typer.Option(
                "--models-dir",
                help="Model cache folder (default: $DHR_HOME or the user cache dir).",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        None,
    ),
    "offline": (
        Annotated[
            bool,
            typer.Option(
                "--offline",
                help="Never use the network (also DHR_OFFLINE=1).",
                rich_help_panel=_GLOBAL,
                show_default=False,
            ),
        ],
        False,
    ),
}


def _settings() -> Settings:
    ctx = get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


def _apply_globals(values: dict[str, Any]) -> Settings:
    """Merge global options given at this level into the invocation's Settings."""
    from .. import console

    s = _settings()
    if values.get("device") is not None:
        s.device = check_device_spec(values["device"])
    for name, attr in (
        ("quiet", "quiet"),
        ("verbose", "verbose"),
        ("json_out", "json"),
        ("offline", "offline"),
    ):
        if values.get(name):
            setattr(s, attr, True)
    if values.get("seed") is not None:
        s.seed = values["seed"]
    if values.get("models_dir") is not None:
        s.models_dir = values["models_dir"]
    console.configure(quiet=s.quiet, verbose=s.verbose, json_mode=s.json)
    return s


def _with_global_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the global options too, so they work after the subcommand name."""
    sig = inspect.signature(fn)
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
        for name, (annotation, default) in _GLOBAL_OPTIONS.items()
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _apply_globals({name: kwargs.pop(name, None) for name in _GLOBAL_OPTIONS})
        return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **fn.__annotations__,
        **{n: a for n, (a, _) in _GLOBAL_OPTIONS.items()},
    }
    return wrapper


def _reflowed(doc: str | None) -> str | None:
    """A docstring as help text: each paragraph on one line, for the terminal to wrap (typer keeps
    the line breaks of every paragraph but the first, which broke lines mid-sentence)."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def command(
    typer_app: typer.Typer, *args: Any, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        kwargs.setdefault("help", _reflowed(fn.__doc__))
        typer_app.command(*args, **kwargs)(_with_global_options(fn))
        return fn

    return decorator


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dhr {__version__}")
        raise typer.Exit()


@app.callback()
@_with_global_options
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Edit faces in photos with StyleGAN2 inversion and DHR."""


# --- commands ---------------------------------------------------------------------------------


_ENGINE = "Engine"
_FACES = "Faces and output"
_BATCH = "Batch"

MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        "-m",
        help="dhr (default), pti, feature or encoder.",
        rich_help_panel=_ENGINE,
    ),
]
PackOpt = Annotated[
    str | None,
    typer.Option(
        "--pack",
        help="Model pack: ffhq (real photos) or synthetic (bundled, offline). Default: the pack "
        "of the input's project file, else ffhq.",
        rich_help_panel=_ENGINE,
        show_default=False,
    ),
]
TauOpt = Annotated[
    str | None,
    typer.Option(
        "--tau",
        help=(
            "Superpixel threshold: one value, or per class (skin=0.7,eyes=0.8,default=0.6). "
            "Default: the pack's per-class values (ffhq: the DHR release's; synthetic: "
            "calibrated on held-out scenes)."
        ),
        rich_help_panel=_ENGINE,
        show_default=False,
    ),
]
TauQuantileOpt = Annotated[
    float | None,
    typer.Option(
        "--tau-quantile",
        min=0.0,
        max=1.0,
        help="Instead of --tau: threshold every superpixel at this quantile of the image's scores.",
        rich_help_panel=_ENGINE,
        show_default=False,
    ),
]
CoarseStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--coarse-steps",
        min=1,
        help="Coarse-inversion steps of the segmentation (default 40).",
        rich_help_panel=_ENGINE,
        show_default=False,
    ),
]


def _not_stdout(value: Any) -> Any:
    # `-o -` is the Unix habit for stdout; dhr writes several files, so it would make a file
    # named '-'
    if value is not None and str(value) == "-":
        raise typer.BadParameter("dhr writes files, not stdout: give a file or folder name")
    return value


OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        callback=_not_stdout,
        help="Project file (FILE.dhr, one input) or folder for all outputs (default: beside each photo).",
        rich_help_panel=_FACES,
        show_default=False,
    ),
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-existing", help="Skip inputs whose outputs already exist.", rich_help_panel=_BATCH
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Process only shard K of N (K/N, 1-based: every N-th input from the K-th).",
        rich_help_panel=_BATCH,
        show_default=False,
    ),
]
FaceOpt = Annotated[
    int | None,
    typer.Option(
        "--face",
        min=1,
        help="Which face (1 = largest).",
        rich_help_panel=_FACES,
        show_default=False,
    ),
]
AllFacesOpt = Annotated[
    bool, typer.Option("--all-faces", help="Every face in the photo.", rich_help_panel=_FACES)
]
MinFaceOpt = Annotated[
    float,
    typer.Option(
        "--min-face", min=1.0, help="Smallest face size in pixels.", rich_help_panel=_FACES
    ),
]
DetectorOpt = Annotated[
    str, typer.Option("--detector", help="retinaface or mtcnn.", rich_help_panel=_FACES)
]
FastOpt = Annotated[
    bool,
    typer.Option(
        "--fast", help="Faster face detector (RetinaFace MobileNet).", rich_help_panel=_FACES
    ),
]
BlendRadiusOpt = Annotated[
    float,
    typer.Option(
        "--blend-radius",
        min=0.0,
        help="Feather width of the paste-back (px of a 1024 crop).",
        rich_help_panel=_FACES,
    ),
]
QualityOpt = Annotated[
    int | None,
    typer.Option(
        "--quality",
        min=1,
        max=100,
        help="JPEG/WebP quality (default: the photo's).",
        rich_help_panel=_FACES,
        show_default=False,
    ),
]


def _device_str() -> str:
    from ..runtime import resolve_device

    return str(resolve_device(_settings().device))


def _without_own_outputs(inputs: list[Path]) -> list[Path]:
    """A batch leaves out repeats of one file, and the files dhr wrote beside inverted photos
    (photo.recon.jpg, photo.mask.png, photo.smile+1.5.jpg, and photo.jpg.dhr when photo.jpg is
    in the batch too) that a glob over the photos' folder picks up."""
    if len(inputs) < 2:
        return inputs
    from .. import console
    from ..app.naming import drop_own_outputs, drop_repeats

    inputs, repeats = drop_repeats(inputs)
    if repeats:
        console.log.info(f"leaving out {len(repeats)} repeated input(s): {_listed(repeats)}")
    kept, dropped = drop_own_outputs(inputs)
    if not kept:  # only dhr's images, named on purpose
        return inputs
    if dropped:
        console.log.info(f"leaving out {len(dropped)} file(s) that dhr wrote: {_listed(dropped)}")
    return kept


def _listed(paths: list[Path], limit: int = 3) -> str:
    """The first `limit` paths, comma-separated, and how many more there are."""
    more = len(paths) - limit
    return ", ".join(map(str, paths[:limit])) + (f" (+{more} more)" if more > 0 else "")


def _pack_for(pack: str | None, inputs: list[Path]) -> str:
    """--pack, else the pack of an input's project file (given, or beside the photo), else ffhq.

    Following the project keeps `dhr invert x.jpg --pack synthetic; dhr mask x.jpg` on one pack
    instead of starting the project afresh with another.
    """
    from ..packs import check_pack_name
    from ..project import project_path_for, read_metadata

    if pack is not None:
        return check_pack_name(pack)
    for p in map(project_path_for, inputs):
        if p.is_file():
            try:
                found = read_metadata(p).get("pack")  # the header only: no tensors, no torch
            except DhrError:
                continue
            if found:
                return found
    return "ffhq"


def _report_batch(result: Any, label: str) -> None:
    from .. import console

    s = _settings()
    if s.json:
        console.print_json(result.to_json())
    else:
        for rec in result.done:
            line = [rec.get("project", "")]
            for key in ("recon", "mask_overlay"):
                if rec.get(key):
                    line.append(rec[key])
            faces = rec.get("faces") or []
            if faces and faces[0].get("metrics"):
                m = faces[0]["metrics"]
                t = faces[0]["times"].get("total")
                console.log.info(
                    f"{rec['input']}: {label} mse {m['mse']:.4f}  lpips {m['lpips']:.4f}  {t:.1f} s"
                )
            elif rec.get("in_domain_fraction") is not None:
                console.log.info(
                    f"{rec['input']}: in-domain {100 * rec['in_domain_fraction']:.1f}% "
                    f"({rec.get('mask_source')})"
                )
            console.print_data("  ".join(line))
        for rec in result.skipped:
            console.log.info(f"{rec['input']}: skipped (outputs exist)")
    result.raise_for_failures()


@command(app, "invert")
def invert_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos (or their project files) to invert.", show_default=False),
    ] = None,
    method: MethodOpt = "dhr",
    pack: PackOpt = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            min=0,
            help="Refinement steps (dhr/feature 100, pti 350).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    weight_steps: Annotated[
        int | None,
        typer.Option(
            "--weight-steps",
            min=0,
            help="DHR: steps that update the generator weights (default 50, or half of --steps).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            min=0,
            help="Feature layer (ffhq 11 = the 128x128 block output).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    lr_weight: Annotated[
        float | None,
        typer.Option(
            "--lr-weight",
            min=0.0,
            help="Learning rate of the generator weights (dhr 1.5e-3, pti 3e-4).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    lr_feature: Annotated[
        float | None,
        typer.Option(
            "--lr-feature",
            min=0.0,
            help="Learning rate of the feature (9e-2).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    work_res: Annotated[
        int | None,
        typer.Option(
            "--work-res",
            help="Refine at this resolution through the generator's early exit (fast CPU mode, e.g. 256).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    tau: TauOpt = None,
    tau_quantile: TauQuantileOpt = None,
    coarse_steps: CoarseStepsOpt = None,
    pivot: Annotated[
        str,
        typer.Option(
            "--pivot",
            help="PTI pivot: w (450-step projection) or e4e (the encoder's W+).",
            rich_help_panel=_ENGINE,
        ),
    ] = "w",
    pivot_steps: Annotated[
        int | None,
        typer.Option(
            "--pivot-steps",
            min=1,
            help="PTI: W-projection steps of the pivot (450).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    output: OutputOpt = None,
    skip_existing: SkipOpt = False,
    shard: ShardOpt = None,
    face: FaceOpt = None,
    all_faces: AllFacesOpt = False,
    min_face: MinFaceOpt = 48.0,
    detector: DetectorOpt = "retinaface",
    fast: FastOpt = False,
    blend_radius: BlendRadiusOpt = 32.0,
    no_paste: Annotated[
        bool,
        typer.Option(
            "--no-paste",
            help="Write the aligned reconstruction instead of pasting it back.",
            rich_help_panel=_FACES,
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Image format of the reconstruction (jpg, png, webp, tif, bmp).",
            rich_help_panel=_FACES,
            show_default=False,
        ),
    ] = None,
    quality: QualityOpt = None,
) -> None:
    """Align, embed, segment and refine: write a project file (<photo>.dhr) and the reconstruction.

    The project also records the in-domain mask (stored by `dhr mask`, reused if present),
    the refined feature and generator weight delta; `dhr edit` reads it.
    """
    from ..app.options import FaceOptions
    from .args import parse_shard

    if not inputs:
        raise UsageError("give at least one photo", hint="dhr invert photo.jpg")
    _check_choice("--method", method, ("dhr", "pti", "feature", "encoder"))
    _check_choice("--pivot", pivot, ("w", "e4e"))
    _check_choice("--detector", detector, ("retinaface", "mtcnn"))
    if all_faces and face is not None:
        raise UsageError("give --face N or --all-faces, not both")
    shard_kn = parse_shard(shard)
    faces = FaceOptions(
        face=face,
        all_faces=all_faces,
        min_face=min_face,
        detector=detector,
        fast=fast,
        blend_radius=blend_radius,
        paste=not no_paste,
        format=fmt,
        quality=quality,
    )
    if fmt is not None:
        from ..faces import output_format

        output_format("x", fmt)  # unknown formats fail before any work
    engine_options = dict(
        method=method,
        steps=steps,
        weight_steps=weight_steps,
        layer=layer,
        lr_weight=lr_weight,
        lr_feature=lr_feature,
        work_res=work_res,
        coarse_steps=coarse_steps,
        tau=parse_tau(tau),
        tau_quantile=tau_quantile,
        pivot=pivot,
        pivot_steps=pivot_steps,
        faces=faces,
    )
    _run_engine("invert", inputs, pack, engine_options, output, skip_existing, shard_kn)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{name} {value!r} is not one of: {', '.join(choices)}")


def _run_engine(
    which: str,
    inputs: list[Path],
    pack: str | None,
    engine_options: dict[str, Any],
    output: Path | None,
    skip_existing: bool,
    shard: tuple[int, int] | None,
    from_mask: Path | None = None,
) -> None:
    from .. import console
    from ..app.batch import run_batch
    from ..app.engine import Engine, console_progress
    from ..app.invert import invert_photo, mask_photo
    from ..app.naming import output_collisions, output_paths
    from ..app.options import EngineOptions
    from ..faces.image_io import IMAGE_SUFFIXES, check_image, unused_quality
    from ..files import ensure_folder
    from ..packs import apply_cpu_threads, load_pack
    from ..project import SUFFIX
    from ..runtime import seed_everything

    s = _settings()
    inputs = _without_own_outputs(inputs)
    many = len(inputs) > 1
    if len(inputs) == 1 and not inputs[0].exists():
        from ..errors import not_found

        raise not_found(inputs[0])
    if output is not None and len(inputs) > 1 and output.suffix == SUFFIX:
        raise UsageError("-o FILE.dhr works with one input; give a folder for several")
    if output is not None and not output.is_dir() and output.suffix.lower() in IMAGE_SUFFIXES:
        # -o is a project file or a folder here; a folder named x.png is never what was meant
        raise UsageError(
            f"-o {output}: {which} writes a project file (FILE.dhr) or into a folder",
            hint=f"{which} names its images after the photo; `dhr edit -o FILE` takes an image",
        )
    if len(inputs) == 1 and inputs[0].suffix != SUFFIX:
        check_image(inputs[0])  # before any model loads or downloads
    if output is not None:  # an unwritable -o fails now, not after the first photo's work
        ensure_folder(output_paths(inputs[0], output, many=many, fmt_ext=".png").project)
    pack_name = _pack_for(pack, inputs)
    seed_everything(s.seed)
    the_pack = load_pack(
        pack_name, device=_device_str(), models_dir=s.models_dir, offline=s.offline or None
    )
    apply_cpu_threads(the_pack)
    show = not s.quiet and not s.json
    engine = Engine(
        the_pack,
        EngineOptions(seed=s.seed, **engine_options),
        progress=console_progress if show else None,
    )
    segment = (
        which == "mask"
        and from_mask is None
        or (which == "invert" and engine.options.method == "dhr")
    )
    need = engine.needs(segment=segment)
    unused = [flag_for(name) for name in engine.options.unused_options()]
    if unused:  # e.g. a loop over methods with one set of options: say so, but go on
        console.log.warn(f"{', '.join(unused)}: not used by --method {engine.options.method}")
    f = engine.options.faces
    ignored = [flag_for(n) for n in f.detection_options()] if the_pack.settings.aligned_input else []
    if ignored:  # `--face 2` that silently edits the only face would be a surprise
        console.log.warn(
            f"{', '.join(ignored)}: not used with the {pack_name} pack "
            "(its images are aligned crops of one face; none is detected)"
        )
    if which == "invert" and (warning := unused_quality(f.quality, inputs, f.format)):
        console.log.warn(warning)
    the_pack.require(need["roles"], lpips=need["lpips"], detector=f.detector, fast=f.fast)
    if which == "invert":

        def work(path: Path) -> dict[str, Any]:
            return invert_photo(
                engine, path, output=output, many=many, skip_existing=skip_existing
            )
    else:

        def work(path: Path) -> dict[str, Any]:
            return mask_photo(
                engine,
                path,
                output=output,
                many=many,
                from_mask=from_mask,
                skip_existing=skip_existing,
            )

    console.log.debug(f"pack {pack_name} on {the_pack.device}: {the_pack.describe()}")
    clashes = output_collisions(inputs, output) if many else {}
    result = run_batch(inputs, work, shard=shard, label=which, clashes=clashes)
    _report_batch(result, which)


@command(app, "mask")
def mask_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Photos or project files.", show_default=False)
    ] = None,
    from_mask: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Import a hand-painted mask instead (white = in-domain/editable, black = kept); "
            "square = aligned crop, or the photo's size.",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    pack: PackOpt = None,
    tau: TauOpt = None,
    tau_quantile: TauQuantileOpt = None,
    coarse_steps: CoarseStepsOpt = None,
    output: OutputOpt = None,
    skip_existing: SkipOpt = False,
    shard: ShardOpt = None,
    face: FaceOpt = None,
    min_face: MinFaceOpt = 48.0,
    detector: DetectorOpt = "retinaface",
    fast: FastOpt = False,
) -> None:
    """Domain-Specific Segmentation: store the in-domain mask in the project, write an overlay.

    The overlay is <stem>.mask.png: red = out-of-domain, kept as in the photo.
    """
    from ..app.options import FaceOptions
    from .args import parse_shard

    if not inputs:
        raise UsageError("give at least one photo or project file", hint="dhr mask photo.jpg")
    _check_choice("--detector", detector, ("retinaface", "mtcnn"))
    if from_mask is not None:
        if len(inputs) > 1:
            raise UsageError("--from imports one mask for one photo")
        if not from_mask.is_file():
            from ..errors import not_found

            raise not_found(from_mask, "mask file")
    shard_kn = parse_shard(shard)
    faces = FaceOptions(face=face, min_face=min_face, detector=detector, fast=fast)
    engine_options = dict(
        method="dhr",
        tau=parse_tau(tau),
        tau_quantile=tau_quantile,
        coarse_steps=coarse_steps,
        faces=faces,
    )
    _run_engine("mask", inputs, pack, engine_options, output, skip_existing, shard_kn, from_mask)


_EDITS = "Edits"


def _finite(value: float | None) -> float | None:
    # float options take 'nan' and 'inf'; an edit by either is a black or broken image
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _strength_opt(name: str, what: str) -> Any:
    return Annotated[
        float | None,
        typer.Option(
            f"--{name}",
            callback=_finite,
            help=f"{what} (strength; ffhq: distance in W along the unit InterFaceGAN direction, "
            "synthetic: std-units of the attribute).",
            rich_help_panel=_EDITS,
            show_default=False,
        ),
    ]


@command(app, "edit")
def edit_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Photos or project files (default: the project most recently written by "
            "`dhr invert` in this folder).",
            show_default=False,
        ),
    ] = None,
    smile: _strength_opt("smile", "Smile") = None,
    age: _strength_opt("age", "Age") = None,
    pose: _strength_opt("pose", "Head pose (yaw)") = None,
    edit: Annotated[
        list[str] | None,
        typer.Option(
            "--edit",
            "-e",
            help="Any direction of the project's pack: NAME=STRENGTH (repeatable; see --list).",
            rich_help_panel=_EDITS,
            show_default=False,
        ),
    ] = None,
    ganspace: Annotated[
        list[str] | None,
        typer.Option(
            "--ganspace",
            help="GANSpace edit (ffhq): IDX:START:END:STRENGTH, or a preset eyes, beard, lip "
            "[:STRENGTH] (repeatable).",
            rich_help_panel=_EDITS,
            show_default=False,
        ),
    ] = None,
    direction: Annotated[
        list[str] | None,
        typer.Option(
            "--direction",
            help="Your own direction FILE[:STRENGTH] (.pt, .npy or .safetensors holding D, 1 x D "
            "or n_latent x D values; strength 1 by default; repeatable).",
            rich_help_panel=_EDITS,
            show_default=False,
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            help="Apply the direction edits to W+ rows A..B-1 only (A:B).",
            rich_help_panel=_EDITS,
            show_default=False,
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            "--sweep",
            help="Write a strip of N images: NAME=START:STOP:N (e.g. smile=-3:3:7).",
            rich_help_panel=_EDITS,
            show_default=False,
        ),
    ] = None,
    frames: Annotated[
        bool,
        typer.Option(
            "--frames", help="With --sweep: also write each frame.", rich_help_panel=_EDITS
        ),
    ] = False,
    list_directions: Annotated[
        bool,
        typer.Option(
            "--list",
            help="List the directions the project's pack offers (names, shapes, units, source).",
            rich_help_panel=_EDITS,
        ),
    ] = False,
    pack: Annotated[
        str | None,
        typer.Option(
            "--pack",
            help="Expect projects of this pack (ffhq or synthetic); with --list: list its directions.",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save",
            help="Record the edit in the project's history (the project is otherwise never changed).",
            rich_help_panel=_FACES,
        ),
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            callback=_not_stdout,
            help="Output FILE (one input) or folder DIR/ (default: <stem>.<edit>.<ext> beside the project file).",
            rich_help_panel=_FACES,
            show_default=False,
        ),
    ] = None,
    skip_existing: SkipOpt = False,
    shard: ShardOpt = None,
    blend_radius: BlendRadiusOpt = 32.0,
    no_paste: Annotated[
        bool,
        typer.Option(
            "--no-paste",
            help="Write the aligned edited face instead of pasting it back.",
            rich_help_panel=_FACES,
        ),
    ] = False,
    keep_ood: Annotated[
        bool,
        typer.Option(
            "--keep-ood/--no-keep-ood",
            help="DHR projects: keep the out-of-domain pixels exactly as reconstructed "
            "(--no-keep-ood: hold only the out-of-domain feature, the paper's Eq. 4).",
            rich_help_panel=_FACES,
        ),
    ] = True,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Image format of the output (jpg, png, webp, tif, bmp; default: the photo's).",
            rich_help_panel=_FACES,
            show_default=False,
        ),
    ] = None,
    quality: QualityOpt = None,
) -> None:
    """Apply semantic edits (smile, age, pose, ...) to an inverted photo and paste the face back.

    The face is rendered through the refined generator with the stored out-of-domain feature,
    so hats, hands, earrings and backgrounds stay as they were.

    Examples: `dhr edit --smile 1.5` (the newest project here), `dhr edit photo.jpg --age -1`,
    `dhr edit photo.jpg --sweep smile=-3:3:7 --frames`, `dhr edit --list`.
    """
    from .. import console
    from ..app.batch import run_batch, shard_items
    from ..app.edit import EditSession, latest_project
    from ..app.request import EditRequest
    from .args import parse_direction_arg, parse_ganspace, parse_named, parse_shard, parse_sweep

    s = _settings()
    if pack is not None:
        from ..packs import check_pack_name

        check_pack_name(pack)
    named = [(n, v) for n, v in (("smile", smile), ("age", age), ("pose", pose)) if v is not None]
    named += [parse_named(e) for e in edit or []]
    request = EditRequest(
        named=named,
        ganspace=[parse_ganspace(g) for g in ganspace or []],
        directions=[parse_direction_arg(d) for d in direction or []],
        layers=parse_layers(layers),
        sweep=parse_sweep(sweep),
    )
    if frames and request.sweep is None:
        raise UsageError("--frames goes with --sweep")
    inputs = _without_own_outputs(list(inputs or []))
    session = EditSession(
        request,
        output=output,
        many=len(inputs) > 1,
        pack_name=pack,
        device=_device_str(),
        models_dir=s.models_dir,
        offline=s.offline or None,
        frames=frames,
        save=save,
        skip_existing=skip_existing,
        paste=not no_paste,
        keep_out_of_domain=keep_ood,
        blend_radius=blend_radius,
        format=fmt,
        quality=quality,
    )
    if list_directions:
        _edit_list(session, inputs, pack)
        return
    if request.empty:
        raise UsageError(
            "nothing to edit",
            hint="give an edit, e.g. --smile 1.5, --edit NAME=S or --ganspace eyes (see --list)",
        )
    shard_kn = parse_shard(shard)
    if fmt is not None:
        from ..faces import output_format

        output_format("x", fmt)  # unknown formats fail before any work
    session.check_output()
    if not inputs:
        found = latest_project()
        console.log.info(f"editing {found} (the newest `dhr invert` project in this folder)")
        inputs = [found]
    for warning in session.output_warnings(inputs):
        console.log.warn(warning)
    session.prepare(shard_items(inputs, shard_kn))
    clashes = session.clashes(inputs)
    result = run_batch(inputs, session.edit_input, shard=shard_kn, label="edit", clashes=clashes)
    if s.json:
        console.print_json(result.to_json())
    else:
        for rec in result.done:
            what = ", ".join(f"{e['name']} {e['strength']:+g}" for e in rec.get("edits", []))
            if rec.get("sweep"):
                sw = rec["sweep"]
                what = f"{sw['name']} sweep {sw['values'][0]:+g}..{sw['values'][-1]:+g}" + (
                    f" with {what}" if what else ""
                )
            console.log.info(f"{rec['input']}: {what or 'no change'} ({rec['method']} project)")
            for path in rec["outputs"]:
                console.print_data(path)
        for rec in result.skipped:
            console.log.info(f"{rec['input']}: skipped (outputs exist)")
    result.raise_for_failures()


def _edit_list(session: Any, inputs: list[Path], pack: str | None) -> None:
    """`dhr edit --list`: the directions of the pack of the given (or newest) project."""
    from rich.table import Table

    from .. import console
    from ..errors import InputMissing
    from ..project import project_path_for, read_metadata

    names: list[str] = []
    if inputs:
        meta = read_metadata(project_path_for(inputs[0]))
        names = [meta.get("pack") or pack or "ffhq"]
    elif pack is not None:
        names = [pack]
    else:
        from ..app.edit import latest_project

        try:
            names = [read_metadata(latest_project()).get("pack") or "ffhq"]
        except InputMissing:
            names = ["ffhq", "synthetic"]
    listings = [session.listing(n) for n in names]
    if _settings().json:
        console.print_json({"packs": listings})
        return
    for lst in listings:
        table = Table(
            title=f"{lst['pack']} pack ({lst['n_latent']} W+ rows)",
            box=None,
            pad_edge=False,
            header_style="bold",
            title_justify="left",
        )
        for col in ("name", "option", "shape"):
            table.add_column(col, no_wrap=True)
        for col in ("strength unit", "source"):
            table.add_column(col, overflow="fold")
        for d in lst["directions"]:
            table.add_row(
                d["name"],
                d["option"],
                "x".join(map(str, d["shape"])),
                d["unit"],
                d["source"] + ("" if d.get("cached", True) else " (not downloaded yet)"),
            )
        console.print_renderable(table)
        for key in ("ganspace", "user_directions"):
            if lst.get(key):
                console.print_data(f"  {lst[key]}")


class _BenchGroup(TyperGroup):
    """`dhr bench ...` without a subcommand name means `dhr bench run ...` (so
    `dhr bench --synthetic 24` and `dhr bench photos/*.jpg` work as written)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing and (not args or args[0] not in self.commands):
            args = ["run", *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_BenchGroup,
    help="Measure fidelity, editability, speed and memory of each method.\n\n"
    "`dhr bench [IMAGES|--synthetic N]` means `dhr bench run`; `dhr bench merge` combines shards.",
)
app.add_typer(bench_app, name="bench")

_BENCH = "Benchmark"
_REPORT = "Outputs"


def _bench_outputs(
    doc: dict[str, Any],
    output: Path | None,
    report: Path | None,
    grid: int,
    command_line: str | None,
) -> None:
    from .. import console
    from ..bench import print_summary, write_results

    s = _settings()
    if output is not None:
        console.log.info(f"results: {write_results(doc, output)}")
    if report is not None:
        from ..report import write_report

        written = write_report(doc, report, command=command_line, grid=grid)
        console.log.info("report: " + ", ".join(str(p) for p in written.values()))
    if s.json:
        console.print_json({k: v for k, v in doc.items() if k != "grid"})
    else:
        print_summary(doc)
    for note in doc.get("notices", []):
        console.log.warn(note)
    if doc.get("failed"):
        from ..errors import PartialFailure

        lines = "; ".join(f"{f['id']}: {f['error']}" for f in doc["failed"][:5])
        raise PartialFailure(
            f"{len(doc['failed'])} of {len(doc['positions'])} images failed "
            f"(the others are measured and reported): {lines}"
        )


def _bench_command_line(config: Any, shard: str | None, jobs: int) -> str:
    """The canonical command that reproduces a run (for the report)."""
    import shlex

    parts = ["dhr", "bench"]
    if config.synthetic is not None:
        parts += ["--synthetic", str(config.synthetic)]
    else:
        parts += [shlex.quote(p) for p in config.images]
    parts += ["--methods", ",".join(config.methods)]
    if config.pack != ("synthetic" if config.synthetic is not None else "ffhq"):
        parts += ["--pack", config.pack]
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
    return " ".join(parts)


def _step_opt(name: str, what: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            f"--{name}",
            min=1,
            help=f"{what} (default: the published value; the report flags any change).",
            rich_help_panel=_ENGINE,
            show_default=False,
        ),
    ]


@command(bench_app, "run")
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
            rich_help_panel=_BENCH,
            show_default=False,
        ),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated methods: encoder, pti, feature, dhr.",
            rich_help_panel=_BENCH,
        ),
    ] = "encoder,pti,feature,dhr",
    pack: PackOpt = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="Keep each method's project file in --projects and reuse it on the next run "
            "(same photo, method and settings).",
            rich_help_panel=_BENCH,
        ),
    ] = False,
    projects: Annotated[
        Path | None,
        typer.Option(
            "--projects",
            help="Folder of the project files of --reuse (default dhr-bench/projects).",
            rich_help_panel=_BENCH,
            show_default=False,
        ),
    ] = None,
    shard: ShardOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            help="Worker processes (0 = automatic: one per core for single-threaded packs).",
            rich_help_panel=_BATCH,
        ),
    ] = 0,
    identity: Annotated[
        bool,
        typer.Option(
            "--identity/--no-identity",
            help="Identity similarity (ArcFace IR-SE50; skipped with a notice when its weights "
            "are not available).",
            rich_help_panel=_BENCH,
        ),
    ] = True,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            callback=_not_stdout,
            help="Write the results JSON here (with grid thumbnails: what `dhr bench merge` "
            "reads).",
            rich_help_panel=_REPORT,
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            callback=_not_stdout,
            help="Folder for report.md, chart.png, grid.png and results.json (default "
            "dhr-bench; shards write none unless given).",
            rich_help_panel=_REPORT,
            show_default=False,
        ),
    ] = None,
    no_report: Annotated[
        bool,
        typer.Option("--no-report", help="Write no report folder.", rich_help_panel=_REPORT),
    ] = False,
    grid: Annotated[
        int,
        typer.Option(
            "--grid",
            min=0,
            help="Images in the comparison grid (the first K).",
            rich_help_panel=_REPORT,
        ),
    ] = 6,
    grid_edit: Annotated[
        str,
        typer.Option(
            "--grid-edit",
            help="The edit shown in the grid: NAME=STRENGTH.",
            rich_help_panel=_REPORT,
        ),
    ] = "smile=2",
    steps: _step_opt("steps", "Refinement steps (PTI: tuning steps)") = None,
    coarse_steps: _step_opt("coarse-steps", "Coarse-inversion steps of the segmentation") = None,
    pivot_steps: _step_opt("pivot-steps", "PTI pivot projection steps") = None,
    weight_steps: _step_opt("weight-steps", "DHR steps that update the generator weights") = None,
) -> None:
    """Invert every image with every method and report fidelity, speed, memory and editing.

    Fidelity is MSE, LPIPS-Alex at 256 px and at full size, PSNR and identity; then time per
    stage, peak memory and, on the synthetic set, segmentation IoU and edit error against the
    true edited images, per stratum.

    Outputs: a table (or --json); report.md, chart.png, grid.png, results.json in --report.
    Large sets: --shard K/N -o part-K.json on each machine, then `dhr bench merge part-*.json`.
    """
    from ..bench import BenchConfig, BenchInterrupted, check_results_path, run_bench
    from ..errors import not_found
    from ..faces.image_io import check_image
    from ..files import make_folder
    from ..packs import check_pack_name
    from ..runtime import seed_everything
    from .args import parse_named, parse_shard

    s = _settings()
    shard_kn = parse_shard(shard)
    inputs = list(inputs or [])
    if synthetic is not None and inputs:
        raise UsageError("give photos or --synthetic N, not both")
    if synthetic is None and not inputs:
        raise UsageError(
            "give photos to benchmark on, or --synthetic N",
            hint="dhr bench --synthetic 24  (or: dhr bench photos/*.jpg)",
        )
    inputs = _without_own_outputs(inputs)
    for p in inputs:
        if p.is_dir():
            check_image(p)  # says what to give instead of a folder
    missing = [p for p in inputs if not p.is_file()]
    if missing:
        raise not_found(_listed(missing, limit=5))
    if report is not None and no_report:
        raise UsageError("--report and --no-report contradict each other")
    name, strength = parse_named(grid_edit, "--grid-edit")
    config = BenchConfig(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        pack=check_pack_name(
            pack or ("synthetic" if synthetic is not None else _pack_for(None, inputs))
        ),
        synthetic=synthetic,
        images=tuple(str(p) for p in inputs),
        seed=s.seed,
        grid=grid,
        grid_edit=(name, strength),
        reuse=reuse,
        projects=str(projects) if projects is not None else None,
        identity=identity,
        steps=steps,
        coarse_steps=coarse_steps,
        pivot_steps=pivot_steps,
        weight_steps=weight_steps,
        device=_device_str(),
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
    command_line = _bench_command_line(config, shard, jobs)
    try:
        doc = run_bench(config, shard=shard_kn, jobs=jobs, show_progress=not s.quiet)
    except BenchInterrupted as e:
        _interrupted_bench_outputs(e.doc, output, report, grid, command_line)
        raise
    _bench_outputs(doc, output, report, grid, command_line)


def _interrupted_bench_outputs(
    doc: dict[str, Any], output: Path | None, report: Path | None, grid: int, command_line: str
) -> None:
    """Ctrl-C: write what was measured (results, report), marked incomplete; exit 130 after."""
    from .. import console
    from ..errors import PartialFailure

    if not doc["records"]:
        return
    console.log.warn(
        f"interrupted after {len(doc['positions'])} of {len(doc['items'])} images: writing "
        "the results of those (`--reuse` keeps the inversions for the next run)"
    )
    with contextlib.suppress(PartialFailure):  # the exit code is the interruption's
        _bench_outputs(doc, output, report, grid, command_line)


@command(bench_app, "merge")
def bench_merge_cmd(
    parts: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Results files of the shards (`dhr bench --shard K/N -o FILE`).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            callback=_not_stdout,
            help="Write the merged results JSON here.",
            rich_help_panel=_REPORT,
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            callback=_not_stdout,
            help="Folder for report.md, chart.png, grid.png and results.json.",
            rich_help_panel=_REPORT,
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        int,
        typer.Option(
            "--grid",
            min=0,
            help="Images in the comparison grid (the first K).",
            rich_help_panel=_REPORT,
        ),
    ] = 6,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="Merge even when some images are in no part (the report says so).",
            rich_help_panel=_BATCH,
        ),
    ] = False,
) -> None:
    """Combine the results of `dhr bench --shard K/N -o FILE` runs into one whole run.

    The per-image records are kept as they are; the aggregates are recomputed from them.
    """
    from .. import console
    from ..bench import load_results, merge_results

    if not parts:
        raise UsageError(
            "give the results files to merge", hint="dhr bench merge part-*.json -o all.json"
        )
    if output is None and report is None and not _settings().json:
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
    _bench_outputs(doc, output, report, grid, None)


@command(app, "demo")
def demo_cmd(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            callback=_not_stdout,
            help="Folder for the demo's files (new, or an earlier demo's: its files are replaced).",
        ),
    ] = Path("dhr-demo"),
    smile: Annotated[
        float,
        typer.Option(
            "--smile",
            help="Strength of the smile edit (std-units of the renderer).",
            callback=_finite,
        ),
    ] = 2.0,
) -> None:
    """Offline demo on the bundled synthetic faces: invert, edit the smile, compare with the truth.

    An occluded synthetic photo is inverted with DHR, its smile edited, and the edit compared with
    the true edit; demo.png shows all of it.
    """
    from .. import console
    from ..demo import run_demo
    from ..runtime import seed_everything

    s = _settings()
    seed_everything(s.seed)
    result = run_demo(
        output,
        smile=smile,
        device=_device_str(),
        models_dir=s.models_dir,
        offline=s.offline or None,
        progress=not s.quiet and not s.json,
    )
    if s.json:
        console.print_json(result)
        return

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    console.log.info(
        f"reconstruction MSE {fmt(result['recon_mse'])}; smile edit vs the true edit: "
        f"MSE in-domain {fmt(result['edit_mse_in_domain'])}, out-of-domain "
        f"{fmt(result['edit_mse_out_of_domain'])}; mask IoU {fmt(result['mask_iou'])}"
    )
    for key in ("sheet", "photo", "project", "mask_overlay", "recon", "edit", "true_edit"):
        console.print_data(str(result[key]))


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


_PACK_HELP = (
    "Pack: ffhq (default) or synthetic; shared files (LPIPS, parsing, detection) are included."
)


@command(models_app, "list")
def models_list_cmd(
    pack: Annotated[str | None, typer.Option("--pack", help=_PACK_HELP, show_default=False)] = None,
) -> None:
    """List every model file dhr uses, with URL, size, sha256, licence and cache state."""
    from rich.table import Table

    from .. import console, hub

    s = _settings()
    rows = [hub.describe(e, models_dir=s.models_dir) for e in hub.entries(pack)]
    if s.json:
        console.print_json({"models_dir": str(hub.cache_dir(s.models_dir)), "models": rows})
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
            _human_size(r["size"]),
            r["cached"] or "no",
            r["licence"],
        )
    console.print_renderable(table)
    folder = hub.cache_dir(s.models_dir)
    console.log.info(f"models folder: {folder}")
    if problem := hub.cache_dir_problem(folder):
        console.log.warn(f"{problem} (choose another with --models-dir or DHR_HOME)")


@command(models_app, "download")
def models_download_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Model names, or a pack's name for all its files (default: every file of --pack).",
            show_default=False,
        ),
    ] = None,
    pack: Annotated[str | None, typer.Option("--pack", help=_PACK_HELP, show_default=False)] = None,
) -> None:
    """Download (and verify) model files into the models folder."""
    from .. import console, hub
    from ..errors import ModelUnavailable

    s = _settings()
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
        except ModelUnavailable as e:
            failed.append(e)
            done.append({"name": n, "path": None, "ok": False, "error": e.message})
            if len(targets) > 1:
                console.log.error(e.message)
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


@command(models_app, "verify")
def models_verify_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Model names (default: every local file).", show_default=False),
    ] = None,
) -> None:
    """Re-hash local model files against pinned or first-use sha256; exit 5 if any fails."""
    from rich.table import Table

    from .. import console, hub
    from ..errors import ModelUnavailable

    s = _settings()
    report = hub.verify(names or None, models_dir=s.models_dir)
    if s.json:
        console.print_json(report.to_json())
    else:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("name", "status", "source", "hash", "path / detail"):
            table.add_column(col, overflow="fold")
        for r in report.results:
            table.add_row(
                r.name, r.status, r.source or "", r.hash_origin, r.detail or (r.path or "")
            )
        console.print_renderable(table)
    if not report.ok:
        bad = ", ".join(r.name for r in report.failures)
        raise ModelUnavailable(
            f"verification failed for: {bad}",
            hint="`dhr models download NAME` fetches a missing or corrupt file again",
        )


@command(models_app, "path")
def models_path_cmd(
    name: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
) -> None:
    """Print where a model file is (or where to put it if it is not there yet)."""
    from .. import console, hub

    s = _settings()
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


@command(models_app, "import")
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
    from .. import console, hub
    from ..app.batch import run_batch

    s = _settings()
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


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and map every outcome to an exit code."""
    from .. import console
    from ..runtime import sigterm_as_ctrl_c

    command_obj = typer.main.get_command(app)
    with sigterm_as_ctrl_c() as sigterm:
        code = _run_app(command_obj, argv)
    if code == ExitCode.INTERRUPTED and sigterm:
        code = int(ExitCode.TERMINATED)
        console.log.error("terminated (SIGTERM)")
    elif code == ExitCode.INTERRUPTED:
        # also for the silent Exit(130) that typer makes of a Ctrl-C inside a command
        console.log.error("interrupted")
    return code


def flag_for(parameter: str) -> str:
    """The command-line flag of a library parameter (work_res -> --work-res)."""
    return "--" + parameter.replace("_", "-")


def _run_app(command_obj: Any, argv: list[str] | None) -> int:
    """Run the command line; every outcome becomes an exit code (INTERRUPTED unannounced)."""
    from typer._click import exceptions as click_exc

    from .. import console

    try:
        rv = command_obj.main(args=argv, prog_name="dhr", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except DhrError as e:
        if isinstance(e, ParameterError):  # the library names parameters, the user typed flags
            e = e.for_names(flag_for)
        console.log.error(str(e))
        if console.is_verbose():
            console._state.err.print_exception()
        code = int(e.exit_code)
    except typer.Exit as e:
        code = int(e.exit_code or 0)
    except click_exc.ClickException as e:
        e.show()
        code = int(ExitCode.USAGE) if isinstance(e, click_exc.UsageError) else int(e.exit_code or 1)
    except (KeyboardInterrupt, typer.Abort) as e:
        if isinstance(e.__cause__, EOFError):
            # typer makes an Abort of any EOFError ("stdin closed at a prompt"); dhr never
            # prompts, so this one came from a file cut short that nothing caught: a bug
            _internal_error(e.__cause__)
            code = int(ExitCode.INTERNAL)
        else:
            code = int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `dhr models list | head`: the reader went away; not an error worth a message
        code = 0
    except Exception as e:  # noqa: BLE001 - last-resort guard: a bug must still exit cleanly
        _internal_error(e)
        code = int(ExitCode.INTERNAL)
    return code


def _internal_error(e: BaseException) -> None:
    from .. import console

    console.log.error(f"internal error: {type(e).__name__}: {e}")
    if console.is_verbose():
        console._state.err.print_exception()
    else:
        console.log.info("rerun with --verbose for a traceback, and please report it")


def run() -> None:
    sys.exit(main())


__all__ = ["app", "main", "run", "UsageError"]

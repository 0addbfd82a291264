"""The options the commands share, declared once: the global options (accepted before and after
the subcommand name), the engine, face, output and batch options, and how a command gets them
(`register`). Torch-free: `dhr --help` and shell completion import this.
"""

import functools
import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.globals import get_current_context
from typer.core import TyperCommand, TyperGroup

from .. import console
from ..runtime import Settings, check_device_spec, resolve_device
from . import complete

GLOBAL = "Global options"
ENGINE = "Engine"
FACES = "Faces and output"
BATCH = "Batch"
EDITS = "Edits"
BENCH = "Benchmark"
REPORT = "Outputs"
ADVANCED = "Advanced"


# --- global options ---------------------------------------------------------------------------

GLOBAL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (
        Annotated[
            str | None,
            typer.Option(
                "--device",
                metavar="DEVICE",
                autocompletion=complete.devices,
                help="auto, cpu, cuda, cuda:N or mps.",
                rich_help_panel=GLOBAL,
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
                rich_help_panel=GLOBAL,
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
                rich_help_panel=GLOBAL,
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
                rich_help_panel=GLOBAL,
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
                metavar="N",
                help="Random seed (default 0).",
                rich_help_panel=GLOBAL,
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
                metavar="DIR",
                help="Model cache folder (default: $DHR_HOME or the user cache dir).",
                rich_help_panel=GLOBAL,
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
                rich_help_panel=GLOBAL,
                show_default=False,
            ),
        ],
        False,
    ),
}


def settings() -> Settings:
    """The invocation's settings (global options merged from every level)."""
    ctx = get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


def apply_globals(values: dict[str, Any]) -> Settings:
    """Merge global options given at this level into the invocation's Settings."""
    s = settings()
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


def with_global_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the global options too, so they work after the subcommand name."""
    sig = inspect.signature(fn)
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
        for name, (annotation, default) in GLOBAL_OPTIONS.items()
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        apply_globals({name: kwargs.pop(name, None) for name in GLOBAL_OPTIONS})
        return fn(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **fn.__annotations__,
        **{n: a for n, (a, _) in GLOBAL_OPTIONS.items()},
    }
    return wrapper


class _FlagsTakeNoValue:
    """Help that shows no type for a flag: `--quiet -q`, not `--quiet -q <bool>`, which reads
    as if it took a value."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if (getattr(p, "is_flag", False) or getattr(p, "count", False)) and p.metavar is None:
                p.metavar = ""
        return params


class DhrCommand(_FlagsTakeNoValue, TyperCommand):
    """A dhr command (see `_FlagsTakeNoValue`)."""


class DhrGroup(_FlagsTakeNoValue, TyperGroup):
    """A dhr command group (see `_FlagsTakeNoValue`)."""


def reflowed(doc: str | None) -> str | None:
    """A docstring as help text: each paragraph on one line, for the terminal to wrap (typer keeps
    the line breaks of every paragraph but the first, which broke lines mid-sentence)."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def register(typer_app: typer.Typer, name: str, fn: Callable[..., Any], **kwargs: Any) -> None:
    """Add `fn` to `typer_app` as the command `name`, with the global options and its docstring
    as help."""
    kwargs.setdefault("help", reflowed(fn.__doc__))
    kwargs.setdefault("cls", DhrCommand)
    typer_app.command(name, **kwargs)(with_global_options(fn))


def device_str() -> str:
    """The device the global --device names, resolved (auto -> cuda or cpu)."""
    return str(resolve_device(settings().device))


# --- callbacks --------------------------------------------------------------------------------


def not_stdout(value: Any) -> Any:
    # `-o -` is the Unix habit for stdout; dhr writes several files, so it would make a file
    # named '-'
    if value is not None and str(value) == "-":
        raise typer.BadParameter("dhr writes files, not stdout: give a file or folder name")
    return value


def finite(value: float | None) -> float | None:
    # float options take 'nan' and 'inf'; an edit by either is a black or broken image
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


# --- options shared by several commands -------------------------------------------------------

MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        "-m",
        metavar="NAME",
        autocompletion=complete.methods,
        help="dhr (default), pti, feature or encoder.",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
PackOpt = Annotated[
    str | None,
    typer.Option(
        "--pack",
        metavar="PACK",
        autocompletion=complete.pack_names,
        help="ffhq (real photos), synthetic (bundled, offline) or a pack folder. Default: the "
        "pack of the input's project, else ffhq.",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
TauOpt = Annotated[
    str | None,
    typer.Option(
        "--tau",
        metavar="TAU",
        help=(
            "Superpixel threshold: one value, or per class, e.g. skin=0.7,eyes=0.8 (default=0.6 "
            "sets the classes not named). Default: the pack's (ffhq: the DHR release's; "
            "synthetic: calibrated)."
        ),
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
TauQuantileOpt = Annotated[
    float | None,
    typer.Option(
        "--tau-quantile",
        min=0.0,
        max=1.0,
        metavar="Q",
        help="Instead of --tau: threshold every superpixel at this quantile of the image's scores.",
        rich_help_panel=ADVANCED,
        show_default=False,
    ),
]
CoarseStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--coarse-steps",
        min=1,
        metavar="N",
        help="Coarse-inversion steps of the segmentation (default 40).",
        rich_help_panel=ADVANCED,
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="PATH",
        callback=not_stdout,
        help="Project file (FILE.dhr, one input) or folder for all outputs (default: beside each photo).",
        rich_help_panel=FACES,
        show_default=False,
    ),
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-existing", help="Skip inputs whose outputs already exist.", rich_help_panel=BATCH
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N|auto",
        help="Only shard K of N (every N-th input from the K-th, 1-based), or auto: this "
        "task's shard of a Slurm job array or a Kubernetes Indexed Job.",
        rich_help_panel=BATCH,
        show_default=False,
    ),
]
ShardCountOpt = Annotated[
    int | None,
    typer.Option(
        "--shard-count",
        min=1,
        metavar="N",
        help="With --shard auto in a Kubernetes Indexed Job: N, the Job's completions.",
        rich_help_panel=BATCH,
        show_default=False,
    ),
]
FaceOpt = Annotated[
    int | None,
    typer.Option(
        "--face",
        min=1,
        metavar="N",
        help="Which face (1 = largest).",
        rich_help_panel=FACES,
        show_default=False,
    ),
]
AlignedOpt = Annotated[
    bool,
    typer.Option(
        "--aligned",
        help="The photos are aligned square face crops (FFHQ / CelebA-HQ test images): taken as "
        "they are, resized to the generator's size, no detection.",
        rich_help_panel=FACES,
    ),
]
AllFacesOpt = Annotated[
    bool, typer.Option("--all-faces", help="Every face in the photo.", rich_help_panel=FACES)
]
MinFaceOpt = Annotated[
    float,
    typer.Option(
        "--min-face",
        min=1.0,
        metavar="PX",
        help="Smallest face size in pixels.",
        rich_help_panel=ADVANCED,
    ),
]
DetectorOpt = Annotated[
    str,
    typer.Option(
        "--detector",
        metavar="NAME",
        autocompletion=complete.detectors,
        help="retinaface or mtcnn.",
        rich_help_panel=ADVANCED,
    ),
]
FastOpt = Annotated[
    bool,
    typer.Option(
        "--fast", help="Faster face detector (RetinaFace MobileNet).", rich_help_panel=ADVANCED
    ),
]
BlendRadiusOpt = Annotated[
    float,
    typer.Option(
        "--blend-radius",
        min=0.0,
        metavar="PX",
        help="Feather width of the paste-back (px of a 1024 crop).",
        rich_help_panel=ADVANCED,
    ),
]
QualityOpt = Annotated[
    int | None,
    typer.Option(
        "--quality",
        min=1,
        max=100,
        metavar="Q",
        help="JPEG/WebP quality (default: the photo's).",
        rich_help_panel=FACES,
        show_default=False,
    ),
]


def format_opt(what: str) -> Any:
    return Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="EXT",
            autocompletion=complete.formats,
            help=f"Image format of {what}: jpg, png, webp, tif or bmp (default: the photo's).",
            rich_help_panel=FACES,
            show_default=False,
        ),
    ]

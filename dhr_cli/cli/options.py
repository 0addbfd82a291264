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

from .. import console
from ..runtime import Settings, check_device_spec, resolve_device

GLOBAL = "Global options"
ENGINE = "Engine"
FACES = "Faces and output"
BATCH = "Batch"
EDITS = "Edits"
BENCH = "Benchmark"
REPORT = "Outputs"


# --- global options ---------------------------------------------------------------------------

GLOBAL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "device": (
        Annotated[
            str | None,
            typer.Option(
                "--device",
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
        help="dhr (default), pti, feature or encoder.",
        rich_help_panel=ENGINE,
    ),
]
PackOpt = Annotated[
    str | None,
    typer.Option(
        "--pack",
        help="Model pack: ffhq (real photos) or synthetic (bundled, offline). Default: the pack "
        "of the input's project file, else ffhq.",
        rich_help_panel=ENGINE,
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
        help="Instead of --tau: threshold every superpixel at this quantile of the image's scores.",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
CoarseStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--coarse-steps",
        min=1,
        help="Coarse-inversion steps of the segmentation (default 40).",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
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
        help="Process only shard K of N (K/N, 1-based: every N-th input from the K-th).",
        rich_help_panel=BATCH,
        show_default=False,
    ),
]
FaceOpt = Annotated[
    int | None,
    typer.Option(
        "--face",
        min=1,
        help="Which face (1 = largest).",
        rich_help_panel=FACES,
        show_default=False,
    ),
]
AllFacesOpt = Annotated[
    bool, typer.Option("--all-faces", help="Every face in the photo.", rich_help_panel=FACES)
]
MinFaceOpt = Annotated[
    float,
    typer.Option(
        "--min-face", min=1.0, help="Smallest face size in pixels.", rich_help_panel=FACES
    ),
]
DetectorOpt = Annotated[
    str, typer.Option("--detector", help="retinaface or mtcnn.", rich_help_panel=FACES)
]
FastOpt = Annotated[
    bool,
    typer.Option(
        "--fast", help="Faster face detector (RetinaFace MobileNet).", rich_help_panel=FACES
    ),
]
BlendRadiusOpt = Annotated[
    float,
    typer.Option(
        "--blend-radius",
        min=0.0,
        help="Feather width of the paste-back (px of a 1024 crop).",
        rich_help_panel=FACES,
    ),
]
QualityOpt = Annotated[
    int | None,
    typer.Option(
        "--quality",
        min=1,
        max=100,
        help="JPEG/WebP quality (default: the photo's).",
        rich_help_panel=FACES,
        show_default=False,
    ),
]

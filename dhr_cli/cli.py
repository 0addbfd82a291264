"""The `dhr` command line: typer commands only (parse, call the library, print).

Heavy modules (torch, the networks) are imported inside command bodies so that
`dhr --help`, `dhr --version` and shell completion start instantly.

Global options (--device, --quiet, --verbose, --json, --seed, --models-dir,
--offline) are accepted both before the subcommand and after it
(`dhr --json models list` and `dhr models list --json` mean the same).
"""

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.globals import get_current_context

from . import __version__
from .errors import EXIT_CODE_HELP, DhrError, ExitCode, NotAvailable, UsageError
from .runtime import Settings, check_device_spec

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
    from . import console

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


def command(
    typer_app: typer.Typer, *args: Any, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
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


def _not_available(what: str, issue: str) -> None:
    raise NotAvailable(
        f"`dhr {what}` is not available yet in dhr {__version__}", hint=f"it lands with {issue}"
    )


# --- commands ---------------------------------------------------------------------------------


@command(app, "invert")
def invert_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Photos to invert.", show_default=False)
    ] = None,
) -> None:
    """Align, embed, segment and refine: write a project file (<photo>.dhr) and the reconstruction."""
    _not_available("invert", "the DHR engine")


@command(app, "mask")
def mask_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Photos or project files.", show_default=False)
    ] = None,
) -> None:
    """Domain-Specific Segmentation: compute the in-domain mask and write an overlay PNG."""
    _not_available("mask", "the DHR engine")


@command(app, "edit")
def edit_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Photos or project files.", show_default=False)
    ] = None,
) -> None:
    """Apply semantic edits (smile, age, pose, ...) to an inverted photo and paste the face back."""
    _not_available("edit", "the edit command")


@command(app, "bench")
def bench_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Photos to benchmark on.", show_default=False)
    ] = None,
) -> None:
    """Measure fidelity, editability, speed and memory of each method."""
    _not_available("bench", "the benchmark")


@command(app, "demo")
def demo_cmd() -> None:
    """Offline demo on the bundled synthetic face domain."""
    _not_available("demo", "the synthetic pack")


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

    from . import console, hub

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
    console.log.info(f"models folder: {hub.cache_dir(s.models_dir)}")


@command(models_app, "download")
def models_download_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Model names (default: every file of the pack).", show_default=False),
    ] = None,
    pack: Annotated[str | None, typer.Option("--pack", help=_PACK_HELP, show_default=False)] = None,
) -> None:
    """Download (and verify) model files into the models folder."""
    from . import console, hub
    from .errors import ModelUnavailable

    s = _settings()
    if names and pack:
        raise UsageError("give model names or --pack, not both")
    if names:
        targets = [hub.get(n).name for n in names]  # unknown names fail before any download
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
        raise ModelUnavailable(
            f"{len(failed)} of {len(targets)} model files could not be fetched",
            hint=failed[0].hint,
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

    from . import console, hub
    from .errors import ModelUnavailable

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
    from . import console, hub

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
    file: Annotated[
        Path, typer.Argument(help="A model file obtained elsewhere.", show_default=False)
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
    """Copy a model file obtained elsewhere into the models folder, after verifying it."""
    from . import console, hub

    s = _settings()
    paths = hub.import_file(file, name, models_dir=s.models_dir, force=force)
    if s.json:
        console.print_json({"imported": [str(p) for p in paths]})
    else:
        for p in paths:
            console.print_data(str(p))


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and map every outcome to an exit code."""
    from typer._click import exceptions as click_exc

    from . import console

    command_obj = typer.main.get_command(app)
    try:
        rv = command_obj.main(args=argv, prog_name="dhr", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except DhrError as e:
        console.log.error(str(e))
        if console.is_verbose():
            console._state.err.print_exception()
        code = int(e.exit_code)
    except typer.Exit as e:
        code = int(e.exit_code or 0)
    except click_exc.ClickException as e:
        e.show()
        code = int(ExitCode.USAGE) if isinstance(e, click_exc.UsageError) else int(e.exit_code or 1)
    except (KeyboardInterrupt, typer.Abort):
        console.log.error("interrupted")
        code = int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `dhr models list | head`: the reader went away; not an error worth a message
        code = 0
    except Exception as e:  # noqa: BLE001 - last-resort guard: a bug must still exit cleanly
        console.log.error(f"internal error: {type(e).__name__}: {e}")
        if console.is_verbose():
            console._state.err.print_exception()
        else:
            console.log.info("rerun with --verbose for a traceback, and please report it")
        code = int(ExitCode.INTERNAL)
    return code


def run() -> None:
    sys.exit(main())


__all__ = ["app", "main", "run", "UsageError"]

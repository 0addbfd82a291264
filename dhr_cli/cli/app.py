"""The root of the `dhr` command line: the Typer app, its commands (each in a module of its own,
registered here) and `main`, which maps every outcome to an exit code.

Heavy modules (torch, the networks) are imported inside command bodies so that
`dhr --help`, `dhr --version` and shell completion start instantly.

Global options (--device, --quiet, --verbose, --json, --seed, --models-dir,
--offline) are accepted both before the subcommand and after it
(`dhr --json models list` and `dhr models list --json` mean the same).
"""

import sys
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exc
from typer._completion_classes import completion_init

from .. import __version__, console
from ..errors import EXIT_CODE_HELP, DhrError, ExitCode, ParameterError, UsageError
from ..runtime import sigterm_as_ctrl_c
from . import bench, demo, edit, invert, models
from .args import flag_for
from .options import DhrGroup, register, with_global_options

_EXIT_CODES_EPILOG = "Exit codes: " + "; ".join(f"{int(c)} {h}" for c, h in EXIT_CODE_HELP.items())

app = typer.Typer(
    name="dhr",
    cls=DhrGroup,
    help=(
        "Edit faces in photos with StyleGAN2 inversion and Domain-Specific Hybrid Refinement (DHR).\n\n"
        "Typical chain: dhr invert photo.jpg  ->  dhr edit photo.jpg --smile 1.5"
    ),
    epilog=_EXIT_CODES_EPILOG,
    no_args_is_help=True,
    # the shell completions ship with dhr (completions/, installed into share/ by pip):
    # typer's --install-completion / --show-completion would write a second, different copy
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


completion_init()  # typer's answers to the shipped scripts' requests (bash, zsh, fish)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dhr {__version__}")
        raise typer.Exit()


@app.callback()
@with_global_options
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


app.add_typer(models.models_app, name="models")
register(app, "invert", invert.invert_cmd)
register(app, "mask", invert.mask_cmd)
register(app, "edit", edit.edit_cmd)
app.add_typer(bench.bench_app, name="bench")
register(app, "demo", demo.demo_cmd)


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and map every outcome to an exit code."""
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


def _run_app(command_obj: Any, argv: list[str] | None) -> int:
    """Run the command line; every outcome becomes an exit code (INTERRUPTED unannounced)."""
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
    console.log.error(f"internal error: {type(e).__name__}: {e}")
    if console.is_verbose():
        console._state.err.print_exception()
    else:
        console.log.info("rerun with --verbose for a traceback, and please report it")


def run() -> None:
    sys.exit(main())


__all__ = ["app", "flag_for", "main", "run", "UsageError"]

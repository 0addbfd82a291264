"""The `dhr` command line: typer commands that parse, call the library (`dhr_cli.app`) and
print. `main` is the console script."""

from .app import app, main, run

__all__ = ["app", "main", "run"]

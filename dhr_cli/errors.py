"""Exit codes and the expected-error hierarchy.

Every failure a user can cause or meet (bad file, no network, full disk, ...) is
raised as a `DhrError` subclass; the CLI turns it into one line on stderr and
the exit code below, never a traceback. Anything else is a bug (exit 1).
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of `dhr` (documented in README and `dhr --help`)."""

    OK = 0
    INTERNAL = 1  # a bug: please report it
    USAGE = 2  # bad command line (unknown option, value out of range, ...)
    INPUT_MISSING = 3  # input file or folder missing or unreadable
    BAD_DATA = 4  # not an image, corrupt/foreign project file, no face, wrong pack, ...
    MODEL_UNAVAILABLE = 5  # model file missing offline, download or verification failed
    OUTPUT_ERROR = 6  # cannot write an output file
    PARTIAL_FAILURE = 7  # a batch finished but some inputs failed
    NOT_AVAILABLE = 8  # feature or device not available in this build / on this machine
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    TERMINATED = 143  # SIGTERM (128 + 15), e.g. `timeout` or a scheduler: handled like Ctrl-C


EXIT_CODE_HELP = {
    ExitCode.OK: "success",
    ExitCode.INTERNAL: "internal error (a bug; rerun with --verbose and report it)",
    ExitCode.USAGE: "usage error (bad option or argument)",
    ExitCode.INPUT_MISSING: "input missing or unreadable",
    ExitCode.BAD_DATA: "bad data: not an image, corrupt project file, no usable face, wrong pack",
    ExitCode.MODEL_UNAVAILABLE: "model unavailable (offline and not cached, download or verification failed)",
    ExitCode.OUTPUT_ERROR: "cannot write output",
    ExitCode.PARTIAL_FAILURE: "batch finished with some inputs failed",
    ExitCode.NOT_AVAILABLE: "feature or device not available",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.TERMINATED: "terminated (SIGTERM, e.g. `timeout` or a scheduler's time limit); handled like Ctrl-C",
}


class DhrError(Exception):
    """An expected failure, reported as one clear message and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def record(self) -> dict[str, object]:
        """The error as `--json` reports it: what stderr says, and the exit code."""
        out: dict[str, object] = {"error": self.message, "exit_code": int(self.exit_code)}
        return out | ({"hint": self.hint} if self.hint else {})


class UsageError(DhrError):
    exit_code = ExitCode.USAGE


class ParameterError(UsageError):
    """A bad value of a library parameter. Its message names parameters as `{name}` fields:
    the library reads them as the parameter names, the CLI as its flags (`for_names`)."""

    def __init__(self, template: str, *, hint: str | None = None) -> None:
        self.template, self.hint_template = template, hint
        message, hint = self._filled(lambda name: name)
        super().__init__(message, hint=hint)

    def _filled(self, name_of: object) -> tuple[str, str | None]:
        names = _FieldNames(name_of)

        def fill(text: str) -> str:
            try:
                return text.format_map(names)
            except (ValueError, IndexError, AttributeError):  # braces typed by the user
                return text

        return fill(self.template), None if self.hint_template is None else fill(self.hint_template)

    def for_names(self, name_of: object) -> UsageError:
        """The same error with each parameter named by `name_of(parameter)`."""
        message, hint = self._filled(name_of)
        return UsageError(message, hint=hint)


class _FieldNames(dict):
    def __init__(self, name_of: object) -> None:
        super().__init__()
        self.name_of = name_of

    def __missing__(self, key: str) -> str:
        return self.name_of(key)  # type: ignore[operator]


class InputMissing(DhrError):
    exit_code = ExitCode.INPUT_MISSING


class BadData(DhrError):
    exit_code = ExitCode.BAD_DATA


class ModelUnavailable(DhrError):
    """A model file that cannot be had. `missing` lists (file name, download URL or None, why)
    of each file concerned, so that several failures can be told as one list."""

    exit_code = ExitCode.MODEL_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        missing: tuple[tuple[str, str | None, str], ...] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.missing = missing


class OutputError(DhrError):
    exit_code = ExitCode.OUTPUT_ERROR


class PartialFailure(DhrError):
    exit_code = ExitCode.PARTIAL_FAILURE


class NotAvailable(DhrError):
    exit_code = ExitCode.NOT_AVAILABLE


def first_line(e: BaseException) -> str:
    """An exception's message for a one-line error (library messages can run to many lines)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def not_found(path: object, what: str = "") -> InputMissing:
    """The error for a missing input, `what` naming its kind ("photo", "project file", ...).

    A shell passes a pattern that matches nothing on unchanged (`dhr invert *.JPG` in a folder
    of .jpg files), so a missing name with pattern characters is told as an empty match.
    """
    name = str(path)
    message = f"{what} not found: {name}" if what else f"not found: {name}"
    if _is_symlink_loop(name):  # it exists, as links that point at each other: say so
        message = f"{what} is a symlink loop: {name}" if what else f"symlink loop: {name}"
        return InputMissing(message)
    if any(c in name for c in "*?["):
        return InputMissing(
            message, hint="no file matches this pattern (the shell passes it on unexpanded)"
        )
    if name == "-":  # `cat photo.jpg | dhr invert -`: the Unix habit for stdin
        return InputMissing(message, hint="dhr reads files only, not stdin: give the file's name")
    return InputMissing(message)


def _is_symlink_loop(name: str) -> bool:
    try:
        os.stat(name)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False

"""Writing files safely: folders created with errors that say what is in the way, and files
replaced in one step, so that a reader, a full disk or a Ctrl-C never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import OutputError, first_line


def make_folder(folder: Path) -> None:
    """Create `folder` and its parents (OutputError that says what is in the way)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        # "File exists" / "Not a directory" do not say which part of the path is in the way
        blocker = next(
            (p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None
        )
        why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or str(e))
        raise OutputError(f"cannot create folder {folder}: {why}") from e


def ensure_folder(path: Path) -> None:
    """Create the folder a file will be written into (OutputError when impossible)."""
    make_folder(path.parent)


@contextlib.contextmanager
def atomic_write(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; it replaces `path` in one step when
    the block ends, and is removed (leaving `path` as it was) when the block raises.

    The folder must exist (see `ensure_folder`). OSErrors become OutputError naming `path`.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    # a fresh random name beside the target: concurrent writers never share a temporary file
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours umask
    except FileNotFoundError:
        raise OutputError(f"cannot write {path}: folder {folder} does not exist") from None
    except OSError as e:
        raise OutputError(
            f"cannot write {path}: {_why(e)}",
            hint="choose a folder you can write to" if isinstance(e, PermissionError) else None,
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {_why(e)}") from e
        raise
    fsync_folder(folder)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path`'s content with `data` in one step (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_json(path: Path | str, obj: Any, **dumps: Any) -> None:
    """Replace `path` with `obj` as indented JSON and a final newline (see `atomic_write`);
    `dumps` goes to json.dumps (sort_keys, default, ...)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, **dumps) + "\n").encode())


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every system can open a folder)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _why(e: OSError) -> str:
    return e.strerror or first_line(e)

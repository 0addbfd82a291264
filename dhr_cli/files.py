"""Reading and writing files safely: folders created with errors that say what is in the way,
files replaced in one step (a reader, a full disk or a Ctrl-C never leaves half a file), inputs
read only when they are regular files (a FIFO or /dev/zero never hangs or floods a command), new
files created without following a name planted in the way, and the one sha256 of a file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from . import console
from .errors import InputMissing, OutputError, first_line

try:
    import fcntl
except ImportError:  # Windows: exclusive_lock falls back to filelock
    fcntl = None

CHUNK = 1 << 20  # bytes per read when hashing or copying
_PROGRESS_FROM = 64 * CHUNK  # files this big get a progress bar while hashed


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


# --- reading inputs ---------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _require_regular(st: os.stat_result, path: Path, what: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        # callers already tell "is a folder" in their own words
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(st.st_mode):
        via = " (through a symlink)" if path.is_symlink() else ""
        raise InputMissing(f"cannot read {what} {path}: it is {_kind(st.st_mode)}{via}, not a file")


def open_regular(path: Path | str, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading, provided it is a regular file.

    A named pipe, a device (``/dev/zero``), a socket is refused with InputMissing (exit 3) before
    it is opened for reading: reading one could block forever or never end. The check is made on
    the name (so a device is never opened) and again on the opened descriptor (so a name swapped
    in between is caught); the open never waits for a FIFO's writer (O_NONBLOCK). A folder raises
    IsADirectoryError, a missing name FileNotFoundError: callers word those themselves.
    """
    path = Path(path)
    _require_regular(os.stat(path), path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        _require_regular(os.fstat(fd), path, what)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path: Path | str, *, label: str | None = None) -> str:
    """sha256 of a regular file (see `open_regular`), with a progress bar labelled `label` for
    big files. OSErrors propagate for the caller to word."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if label is None or size < _PROGRESS_FROM:
            while chunk := f.read(CHUNK):
                h.update(chunk)
            return h.hexdigest()
        with console.progress(label, total=size, unit="bytes") as task:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                task.advance(len(chunk))
    return h.hexdigest()


# --- creating files without following what is in the way -------------------------------------


def create_new(path: Path | str) -> BinaryIO:
    """A new, empty file at `path` opened for binary writing; FileExistsError when the name is
    taken, by anything: a symlink planted there is never followed (O_EXCL | O_NOFOLLOW)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)  # mode honours umask
    return os.fdopen(fd, "wb")


def create_temp(folder: Path, stem: str) -> tuple[Path, BinaryIO]:
    """(path, file) of a fresh temporary file in `folder` with a random name that starts with
    `.{stem}.`, created as `create_new` does (concurrent writers never share one)."""
    while True:
        tmp = folder / f".{stem}.{secrets.token_hex(4)}.tmp"
        try:
            return tmp, create_new(tmp)
        except FileExistsError:
            continue  # 1 in 4 billion, or someone planted that very name: pick another


@contextmanager
def exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive lock held through the file `path` (created if needed, never through a
    symlink) for the duration of the block; TimeoutError after `timeout` s of waiting; OSError
    when it cannot be taken. The last holder removes the file, so none is left behind (on
    Windows, filelock's lock, whose file stays)."""
    handle = _acquire(path, timeout)
    try:
        yield
    finally:
        _release(handle, path)


def _acquire(path: Path, timeout: float) -> Any:
    if fcntl is None:
        lock = FileLock(str(path), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise TimeoutError(str(path)) from None
        return lock
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(str(path)) from None
                    time.sleep(0.1)
            held = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            # a file its last holder removed meanwhile is no longer the lock: take the new one
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release(handle: Any, path: Path) -> None:
    if isinstance(handle, FileLock):
        handle.release()
        return
    # removed while still held: a waiter then finds its file replaced and locks the new one
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)

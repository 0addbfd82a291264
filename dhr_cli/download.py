"""Download mechanics of the model hub: HTTP with resume and retries, archive members, locks.

Downloads follow huggingface_hub's recipe: a ``<file>.partial`` in the target folder, resumed
with an HTTP Range request when the server allows (206) and restarted cleanly when it answers
200; retries with exponential back-off; size and sha256 checks, an HTML page (login, quota or
error page) is rejected; fsync, then an atomic `os.replace`. A per-file lock (filelock) lets
several processes of a shell loop share one cache safely.

Models folders are shared, so nothing here writes through a name it did not create: a
``.partial`` is resumed only when it is a regular file with a single link, and anything else
under that name (a symlink, a hard link, a FIFO) is removed, never followed; archive members
and imports are written to fresh temporary names (O_CREAT | O_EXCL | O_NOFOLLOW); symlinks
planted as lock files or as the ``.archives`` / ``.locks`` folders are removed, not followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from . import __version__, console
from .errors import OutputError
from .files import CHUNK, create_new, create_temp, fsync_folder, sha256_file
from .registry import COMMON, ArchiveMember, ModelFile, registry
from .trust import Hashes, mismatch, remember

# knobs (module attributes so tests can shorten them)
RETRIES = 4
RETRY_BASE_DELAY = 1.0  # seconds; doubled after each failed attempt
TIMEOUT = 30.0  # seconds without data before a connection counts as failed


class Retryable(Exception):
    """A transient failure: try the same URL again after a pause (partial file kept)."""


class SourceFailed(Exception):
    """This source cannot deliver the file; try the next one."""


def mirror() -> str | None:
    """`$DHR_MIRROR` without its trailing slash, or None."""
    url = os.environ.get("DHR_MIRROR", "").strip()
    return url.rstrip("/") if url else None


def sources(entry: ModelFile) -> list[tuple[str, str]]:
    """(kind, url) download sources in the order they are tried."""
    out: list[tuple[str, str]] = []
    if (base := mirror()) is not None:
        out.append(("url", f"{base}/{entry.filename}"))
    if entry.archive is not None:
        out.append(("archive", entry.archive.url))
    out.extend(("url", u) for u in entry.urls)
    return out


# --- files in the models folder ---------------------------------------------------------------


def _own_folder(folder: Path) -> None:
    """Create `folder`; a symlink in its place is removed first (it would send dhr's files to
    wherever it points)."""
    if folder.is_symlink():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def _resumable(partial: Path, expected_size: int | None) -> int:
    """Bytes an earlier attempt left in `partial`, when that is a regular file with a single
    link (else 0, and whatever has the name is removed: it is never followed or appended to)."""
    try:
        st = os.lstat(partial)
    except FileNotFoundError:
        return 0
    ok = stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    if ok and (expected_size is None or st.st_size <= expected_size):
        return st.st_size
    partial.unlink()  # a symlink or hard link goes, what it points to stays untouched
    return 0


def _open_partial(partial: Path, start: int) -> BinaryIO:
    """`partial` opened to append at `start` (a resumed download), or as a new file."""
    if not start:
        partial.unlink(missing_ok=True)
        return create_new(partial)
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    f = os.fdopen(os.open(partial, flags), "ab")
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != start:
        f.close()
        partial.unlink(missing_ok=True)
        raise Retryable(f"{partial.name} changed during the download; starting over")
    return f


def finish(tmp: Path, dest: Path) -> None:
    """Move a verified file into place in one step (a symlink at `dest` is replaced, not
    followed) and make the rename durable."""
    os.replace(tmp, dest)
    fsync_folder(dest.parent)


def lock(folder: Path, filename: str) -> Any:
    """The per-file lock (filelock) of `filename` in the models folder."""
    locks = folder / ".locks"
    try:
        _own_folder(locks)
        path = locks / f"{filename}.lock"
        if path.is_symlink():  # filelock opens with O_TRUNC: it would empty the link's target
            path.unlink()
    except OSError as e:
        raise OutputError(
            f"cannot write to the models folder {folder}: {e}",
            hint="choose a writable folder with --models-dir or DHR_HOME",
        ) from e
    return FileLock(str(path))


@contextlib.contextmanager
def locked(folder: Path, filename: str) -> Iterator[None]:
    """Hold `filename`'s lock, saying so when another process has it."""
    file_lock = lock(folder, filename)
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        console.log.info(f"waiting for another dhr process to finish {filename} ...")
        file_lock.acquire()
    try:
        yield
    finally:
        file_lock.release()


# --- HTTP ---------------------------------------------------------------------------------------


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener()


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _http_get_once(url: str, partial: Path, expected_size: int | None, label: str) -> bool:
    """One HTTP attempt into `partial`, resuming from its current size when possible.

    Returns True when the result kept bytes from an earlier attempt (a 206 resume).
    """
    start = _resumable(partial, expected_size)
    req = urllib.request.Request(
        url, headers={"User-Agent": f"dhr/{__version__}", "Accept-Encoding": "identity"}
    )
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = _opener().open(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            # our partial is at least as long as the file: start over
            partial.unlink(missing_ok=True)
            raise Retryable(f"HTTP 416 for a resumed download of {url}") from e
        if e.code in (408, 425, 429) or e.code >= 500:
            raise Retryable(f"HTTP {e.code} {e.reason} from {url}") from e
        raise SourceFailed(f"HTTP {e.code} {e.reason} from {url}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
            # the name does not resolve (no network, or no DNS): waiting will not change that,
            # unlike EAI_AGAIN ("temporary failure"), which is retried
            host = urllib.parse.urlsplit(url).hostname or url
            why = reason.strerror or str(reason)
            raise SourceFailed(f"cannot reach {host} ({why}; no network?)") from e
        raise Retryable(f"cannot reach {url}: {reason}") from e

    with resp:
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "text/html" in ctype:
            partial.unlink(missing_ok=True)
            raise SourceFailed(
                f"{url} returned an HTML page instead of the model file "
                "(a login, quota or error page?)"
            )
        total: int | None = None
        if resp.status == 206 and start:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range") or "")
            if not m or int(m.group(1)) != start:
                partial.unlink(missing_ok=True)
                raise Retryable(f"{url}: unexpected Content-Range; restarting the download")
            total = int(m.group(2)) if m.group(2) != "*" else None
        elif resp.status == 200:
            if start:
                console.log.debug(f"{url}: server ignored the Range request; restarting")
            start = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise SourceFailed(f"unexpected HTTP status {resp.status} from {url}")
        if expected_size is not None and total is not None and total != expected_size:
            partial.unlink(missing_ok=True)
            raise SourceFailed(
                f"{url} is {total} bytes but {expected_size} were expected (wrong file?)"
            )
        total = total if total is not None else expected_size

        got = start
        with (
            _open_partial(partial, start) as f,
            console.progress(label, total=total, unit="bytes") as task,
        ):
            task.update(completed=start)
            first = not start
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    # connection cut mid-body: keep what we have and resume next attempt
                    f.flush()
                    raise Retryable(f"connection to {url} broke after {got} bytes: {e}") from e
                if not chunk:
                    break
                if first:
                    first = False
                    if _looks_like_html(chunk[:512]):
                        f.close()
                        partial.unlink(missing_ok=True)
                        raise SourceFailed(f"{url} returned an HTML page instead of the model file")
                f.write(chunk)
                got += len(chunk)
                task.advance(len(chunk))
                if total is not None and got > total:
                    f.close()
                    partial.unlink(missing_ok=True)
                    raise SourceFailed(f"{url} sent more than the expected {total} bytes")
            f.flush()
            os.fsync(f.fileno())
        if total is not None and got < total:
            raise Retryable(f"connection to {url} closed after {got} of {total} bytes")
        return bool(start)


def _http_get(url: str, partial: Path, expected_size: int | None, label: str) -> bool:
    """Download with retries and exponential back-off; the partial survives for a later resume.

    Returns True when the file was assembled from more than one response (resumed).
    """
    delay = RETRY_BASE_DELAY
    for attempt in range(1, RETRIES + 1):
        try:
            return _http_get_once(url, partial, expected_size, label)
        except Retryable as e:
            if attempt == RETRIES:
                raise SourceFailed(f"{e} (gave up after {RETRIES} attempts)") from e
            console.log.warn(f"{e}; retrying in {delay:g} s ({attempt}/{RETRIES - 1})")
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def download_direct(entry: ModelFile, url: str, folder: Path, hashes: Hashes) -> Path:
    """Fetch `url` as the entry's file into `folder`, verify it and move it into place."""
    dest = folder / entry.filename
    partial = folder / (entry.filename + ".partial")
    for fresh_retry in (False, True):
        resumed = _http_get(url, partial, entry.size, f"downloading {entry.filename}")
        digest = sha256_file(partial)
        problem = mismatch(entry, partial, digest, hashes)
        if problem is None:
            break
        partial.unlink(missing_ok=True)
        if not resumed or fresh_retry:
            raise SourceFailed(f"{url}: downloaded file rejected: {problem}")
        console.log.warn(f"resumed download of {entry.filename} is bad ({problem}); starting over")
    finish(partial, dest)
    remember(entry, dest, digest, url, hashes)
    return dest


# --- archives -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_member(archive_path: Path, member: str) -> Iterator[Any]:
    """A readable file object for one member; nothing else is extracted (no path traversal)."""
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf, zf.open(member) as fobj:
            yield fobj
        return
    with tarfile.open(archive_path, "r:*") as tf:
        info = tf.getmember(member)
        fobj = tf.extractfile(info) if info.isfile() else None
        if fobj is None:
            raise KeyError(member)
        with fobj:
            yield fobj


def extract_member(entry: ModelFile, archive_path: Path, folder: Path, hashes: Hashes) -> Path:
    """Extract the entry's member of `archive_path` into `folder`, verified; SourceFailed when
    the archive lacks it or it is not the entry's file."""
    assert entry.archive is not None
    dest = folder / entry.filename
    tmp, out = create_temp(folder, entry.filename)
    h = hashlib.sha256()
    try:
        try:
            with out, _open_member(archive_path, entry.archive.member) as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except KeyError as e:
            raise SourceFailed(f"{archive_path.name} has no member {entry.archive.member}") from e
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise SourceFailed(f"cannot read {archive_path.name}: {e}") from e
        digest = h.hexdigest()
        problem = mismatch(entry, tmp, digest, hashes)
        if problem is not None:
            raise SourceFailed(f"{entry.archive.member} in {archive_path.name}: {problem}")
        finish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when it was moved into place
    remember(entry, dest, digest, f"{entry.archive.url}#{entry.archive.member}", hashes)
    return dest


def _archive_entry(archive: ArchiveMember) -> ModelFile:
    return ModelFile(
        name=f"archive:{archive.archive_name}",
        role="archive",
        filename=archive.archive_name,
        pack=COMMON,
        licence="",
        urls=(archive.url,),
        size=archive.size,
        sha256=archive.sha256,
    )


def download_from_archive(entry: ModelFile, folder: Path, hashes: Hashes) -> Path:
    """Download the pinned archive, extract this entry (and its siblings), drop the archive."""
    assert entry.archive is not None
    arch = _archive_entry(entry.archive)
    arch_dir = folder / ".archives"
    _own_folder(arch_dir)
    with locked(folder, arch.filename):
        arch_path = arch_dir / arch.filename
        if not (
            arch_path.is_file()
            and not arch_path.is_symlink()
            and mismatch(arch, arch_path, sha256_file(arch_path), hashes) is None
        ):
            download_direct(arch, entry.archive.url, arch_dir, hashes)
        result = extract_member(entry, arch_path, folder, hashes)
        # the same archive often holds other registry files: extract them now, not 64 MB later
        for other in registry().values():
            if (
                other.name != entry.name
                and other.archive is not None
                and other.archive.url == entry.archive.url
                and not (folder / other.filename).exists()
            ):
                _extract_sibling(other, arch_path, folder, hashes)
        arch_path.unlink(missing_ok=True)
        hashes.update(forget=arch_path)
    return result


def _extract_sibling(entry: ModelFile, archive_path: Path, folder: Path, hashes: Hashes) -> None:
    """Extract another member if nobody is working on it (never wait: that could deadlock)."""
    file_lock = lock(folder, entry.filename)
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        return
    try:
        if not (folder / entry.filename).exists():
            extract_member(entry, archive_path, folder, hashes)
    except SourceFailed as e:
        console.log.debug(str(e))
    finally:
        file_lock.release()

"""What a model file must be to be trusted: the record of hashes in the models folder, and the
checks of a file against its registry entry.

A file with a published (pinned) sha256 is trusted when it has exactly that hash. A file
without one is trusted on first use: its first copy must look like its kind (first bytes), be
at least as big as its weights can be (`ModelFile.min_size`) and load, with the restricted
loader, as the architecture its entry names (`ModelFile.arch`, see `model_check`); only then
is its hash recorded in ``dhr-hashes.json``, and later copies are held to it.
The same record remembers (size, mtime) of fully verified files, so that `fetch` does not
re-hash hundreds of megabytes on every run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import console
from .errors import OutputError
from .files import atomic_write_json, open_regular, sha256_file
from .model_check import load_problem
from .registry import ModelFile

HASHES_FILE = "dhr-hashes.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_warned_unreadable: set[Path] = set()


class Hashes:
    """`dhr-hashes.json`: first-use hashes (per entry) and stat of verified files (per path)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / HASHES_FILE
        self.lock_path = folder / ".locks" / (HASHES_FILE + ".lock")

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            data.setdefault("first_use", {})
            data.setdefault("verified", {})
            # both tables are looked up by name: a record edited into another shape is
            # treated as unreadable, not met as a TypeError later
            if not all(isinstance(data[k], dict) for k in ("first_use", "verified")):
                raise ValueError("not a record of hashes")
            return data
        except (FileNotFoundError, NotADirectoryError):
            pass  # nothing recorded yet (a models folder that is a file is reported by its users)
        except (OSError, ValueError):
            # one warning per run: the record is read at every lookup
            if self.path not in _warned_unreadable:
                _warned_unreadable.add(self.path)
                console.log.warn(f"{self.path} is unreadable; starting a new record of hashes")
        return {"first_use": {}, "verified": {}}

    def first_use(self, name: str) -> dict[str, Any] | None:
        return self.load()["first_use"].get(name)

    def is_verified(self, path: Path, sha256: str) -> bool:
        rec = self.load()["verified"].get(str(path.resolve()))
        try:
            st = path.stat()
        except OSError:
            return False
        return bool(
            rec
            and rec.get("sha256") == sha256
            and rec.get("size") == st.st_size
            and rec.get("mtime_ns") == st.st_mtime_ns
        )

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path)):
            data = self.load()
            yield data
            atomic_write_json(self.path, data, sort_keys=True)

    def update(
        self,
        *,
        first_use: tuple[str, dict[str, Any]] | None = None,
        verified: tuple[Path, str] | None = None,
        forget: Path | None = None,
    ) -> None:
        """Record facts; failures to write (read-only cache) only cost a re-hash later."""
        try:
            with self._edit() as data:
                if first_use is not None:
                    data["first_use"][first_use[0]] = first_use[1]
                if verified is not None:
                    path, digest = verified
                    st = path.stat()
                    data["verified"][str(path.resolve())] = {
                        "sha256": digest,
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    }
                if forget is not None:
                    data["verified"].pop(str(forget.resolve()), None)
        except (OSError, OutputError) as e:
            console.log.debug(f"could not update {self.path}: {e}")


# --- checking a file against its entry --------------------------------------------------------


def expected_sha(entry: ModelFile, hashes: Hashes) -> tuple[str | None, str]:
    """The sha256 a file must have and where that fact comes from ("pinned"/"first use"/"")."""
    if entry.sha256:
        return entry.sha256, "pinned"
    rec = hashes.first_use(entry.name)
    if rec and rec.get("sha256"):
        return rec["sha256"], "first use"
    return None, ""


def mismatch(entry: ModelFile, path: Path, digest: str, hashes: Hashes) -> str | None:
    """Why `path` (with sha256 `digest`) is not a valid copy of `entry`, or None."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest[:16]}... does not start with {entry.sha256_prefix} (from the file name)"
    expected, origin = expected_sha(entry, hashes)
    if expected:
        return None if digest == expected else f"sha256 {digest}, expected {expected} ({origin})"
    return first_use_problem(entry, path)  # about to be trusted on first use


def first_use_problem(entry: ModelFile, path: Path) -> str | None:
    """Why `path` cannot be trusted on first use as `entry`, or None. For a file without a
    published hash this is all that stands between a wrong file (an error page, some other
    download, a pickle with a payload) and a recorded hash: its first bytes must fit its kind,
    its size the weights it holds, and it must load as its architecture (`model_check`)."""
    problem = format_problem(entry, path)
    if problem is None and entry.min_size is not None:
        size = path.stat().st_size
        if size < entry.min_size:
            problem = (
                f"only {size} bytes; its weights need at least {entry.min_size} "
                "(a truncated download, or not this model)"
            )
    if problem is None and entry.arch is not None:
        problem = load_problem(entry.arch, path)
    return problem


def format_problem(entry: ModelFile, path: Path) -> str | None:
    """Why `path` cannot be the kind of file its registry name says, from its first bytes."""
    suffix = Path(entry.filename).suffix.lower()
    with open_regular(path, "model file") as f:
        head = f.read(9)
    if not head:
        return "an empty file"
    if suffix in (".pt", ".pth", ".ckpt"):
        # torch.save writes a zip archive (torch >= 1.6) or a pickle (protocol 2+ starts 0x80)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            return None
        return "not a PyTorch checkpoint (neither a zip archive nor a pickle)"
    if suffix == ".safetensors" and head[8:9] != b"{":  # 8-byte length, then the JSON header
        return "not a safetensors file"
    return None


def check(entry: ModelFile, path: Path, hashes: Hashes, *, full: bool = False) -> str | None:
    """Verify a local file; None when good. Uses the (size, mtime) record unless `full`."""
    expected, _ = expected_sha(entry, hashes)
    if not full and expected and hashes.is_verified(path, expected):
        return None
    if entry.size is not None and path.stat().st_size != entry.size:
        return f"size {path.stat().st_size} bytes, expected {entry.size}"
    digest = sha256_file(path, label=f"verifying {entry.filename}")
    problem = mismatch(entry, path, digest, hashes)
    if problem is None:
        remember(entry, path, digest, str(path), hashes)
    else:
        hashes.update(forget=path)
    return problem


def remember(entry: ModelFile, path: Path, digest: str, source: str, hashes: Hashes) -> None:
    """Record a good file: its (size, mtime), and its hash as first-use if none is known."""
    if expected_sha(entry, hashes)[0] is None:
        # trust on first use: remember this hash and hold later copies to it
        console.log.info(
            f"{entry.name}: no published sha256; recording {digest[:16]}... (first use)"
        )
        rec = {"sha256": digest, "size": path.stat().st_size, "source": source, "time": now()}
        hashes.update(first_use=(entry.name, rec))
    hashes.update(verified=(path, digest))

"""Creating the folders outputs go into, with errors that say what is in the way."""

from __future__ import annotations

from pathlib import Path

from .errors import OutputError


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

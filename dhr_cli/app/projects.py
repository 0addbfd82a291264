"""Finding projects on disk (torch-free, so the command line answers at once): the project
`dhr invert` wrote last in a folder, every face project of a photo, a project's photo."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadData, InputMissing
from ..project import SUFFIX, Project, default_path, read_metadata

__all__ = ["face_projects", "find_photo", "latest_project"]


def _invert_time(path: Path) -> str | None:
    """The time of the last `invert` step in a project's history (None if never inverted)."""
    try:
        history = json.loads(read_metadata(path).get("history") or "[]")
    except (BadData, InputMissing, ValueError):
        return None
    times = [
        str(h.get("time")) for h in history if isinstance(h, dict) and h.get("step") == "invert"
    ]
    return max(times) if times else None


def latest_project(folder: Path | None = None) -> Path:
    """The project in `folder` (default: the current one) most recently written by `dhr invert`:
    newest invert time in its history, ties and never-inverted projects by file mtime."""
    folder = Path(".") if folder is None else Path(folder)  # relative names in messages
    candidates = [p for p in folder.glob("*" + SUFFIX) if p.is_file()]
    if not candidates:
        raise InputMissing(
            f"no project file (*{SUFFIX}) in {folder.resolve()}",
            hint="run `dhr invert PHOTO` first, or name the photo: dhr edit PHOTO --smile 1.5",
        )

    def key(p: Path) -> tuple[int, str, float]:
        t = _invert_time(p)
        return (t is not None, t or "", p.stat().st_mtime)

    return max(candidates, key=key)


def face_projects(photo: Path) -> list[Path]:
    """Every face project of a photo in invert's naming (face 1, then face2, face3, ...)."""
    first = default_path(photo)
    out = [first]
    k = 2
    while True:
        p = first.with_name(f"{photo.name}.face{k}.dhr")
        if not p.is_file():
            return out
        out.append(p)
        k += 1


def find_photo(project: Project, project_path: Path) -> Path | None:
    """The project's source photo: beside the project (a moved folder), else where it was
    recorded; the first candidate with the recorded sha256 (BadData if only other versions
    of the photo are found)."""
    if project.source_path is None:
        return None
    src = Path(project.source_path)
    candidates = [project_path.parent / src.name, src]
    found = [c for c in dict.fromkeys(candidates) if c.is_file()]
    for c in found:
        try:
            project.check_source(c)
        except BadData:
            continue
        return c
    if found:
        project.check_source(found[0])  # raises: the photo was changed since `dhr invert`
    return None

"""Where dhr writes, and how it recognises its own files.

Outputs of `dhr invert photo.jpg` (beside the photo, or in `-o DIR`; given a project file, beside
that project, wherever an earlier `-o DIR` put it, as `dhr mask` and `dhr edit` do):
  ``photo.jpg.dhr``        the project (W+, mask, feature, weight delta, alignment, parameters)
  ``photo.recon.jpg``      the reconstruction pasted back into the photo (format of the photo
                           unless `--format`)
  ``photo.mask.png``       the aligned crop with the out-of-domain region tinted (when a mask
                           exists)
With `--all-faces` face k >= 2 gets ``photo.jpg.face<k>.dhr``. `dhr edit` writes
``<stem>.<tag><ext>`` with a tag such as ``smile+1.5_age-1`` (`edit_tag`).

A batch leaves out repeats of one file and dhr's own outputs (`drop_repeats`,
`drop_own_outputs`) and refuses to write two photos' outputs onto the same files
(`output_collisions`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..faces.image_io import SAVE_FORMATS, output_format, suffix_format
from ..project import SUFFIX, default_path, photo_name_of

if TYPE_CHECKING:
    from ..faces.image_io import Photo
    from ..method.edits import Edit


@dataclass
class Outputs:
    project: Path
    recon: Path
    overlay: Path


def output_paths(
    photo: Path, output: Path | None, *, many: bool, fmt_ext: str, face_index: int = 1
) -> Outputs:
    """Where invert/mask write for `photo` (see the module docstring)."""
    suffix = f".face{face_index}" if face_index > 1 else ""
    stem = photo.stem
    if output is None:
        folder = photo.parent
        project = default_path(photo)
    elif output.suffix == SUFFIX and not output.is_dir():
        if many:
            raise UsageError("-o FILE.dhr works with one input; give a folder for several")
        folder = output.parent
        project = output
    else:
        folder = output
        project = output / (photo.name + SUFFIX)
    if suffix:
        project = project.with_name(project.name[: -len(SUFFIX)] + suffix + SUFFIX)
    return Outputs(
        project=project,
        recon=folder / f"{stem}{suffix}.recon{fmt_ext}",
        overlay=folder / f"{stem}{suffix}.mask.png",
    )


_OWN_IMAGE = re.compile(r"(?:face\d+\.)?(?:recon|mask)")


def drop_repeats(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split a batch into (first mentions, repeats) of one file (`dhr invert *.jpg best.jpg`,
    `face.jpg ./face.jpg`): a repeat would only do the same slow work again."""
    seen: set[Path] = set()
    kept: list[Path] = []
    repeats: list[Path] = []
    for p in map(Path, paths):
        key = p.resolve()
        (repeats if key in seen else kept).append(p)
        seen.add(key)
    return kept, repeats


def drop_own_outputs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Split a batch into (inputs, dhr's own outputs) so that `dhr edit photos/*.jpg` after
    `dhr invert photos/*.jpg` does not take photo.recon.jpg for a photo.

    An own output is <stem>.recon.<ext>, <stem>.mask.png (with .face<k> for further faces) or
    <stem>.<edit tag>.<ext>, where a photo <stem>.<ext> has its project in the same folder and
    the file has none of its own; and a project file whose photo is in the batch too (`photos/*`
    would otherwise do each photo twice). Each folder is listed once.
    """
    inverted: dict[Path, set[str]] = {}  # folder -> stems of its photos that have a project

    def stems(folder: Path) -> set[str]:
        if folder not in inverted:
            projects = folder.glob("*" + SUFFIX)
            inverted[folder] = {Path(photo_name_of(p)).stem for p in projects}
        return inverted[folder]

    batch = {Path(p).absolute() for p in paths}

    def own(path: Path) -> bool:
        if path.suffix == SUFFIX:
            return path.with_name(photo_name_of(path)).absolute() in batch
        base, dot, _ = path.name.rpartition(".")
        if not dot or path.with_name(path.name + SUFFIX).exists():
            return False
        parts = base.split(".")
        for i in range(1, len(parts)):
            stem, middle = ".".join(parts[:i]), ".".join(parts[i:])
            if (_OWN_IMAGE.fullmatch(middle) or is_edit_tag(middle)) and stem in stems(path.parent):
                return True
        return False

    kept: list[Path] = []
    dropped: list[Path] = []
    for p in paths:
        (dropped if own(Path(p)) else kept).append(Path(p))
    return kept, dropped


def recon_extension(photo: Photo, fmt: str | None) -> str:
    """File extension of the reconstruction: the photo's own when dhr writes its format (photo.JPG
    stays .JPG), else the written format's (a GIF's reconstruction is a .png)."""
    chosen = output_format("x", fmt, like=photo)
    if photo.path is not None and fmt is None and suffix_format(photo.path) == chosen:
        return photo.path.suffix
    return SAVE_FORMATS[chosen]


def output_collisions(
    inputs: Sequence[Path],
    output: str | Path | None,
    *,
    per_suffix: bool = False,
    forced_suffix: str | None = None,
) -> dict[Path, Path]:
    """Inputs whose outputs would replace those of an earlier input of the batch, each mapped to
    that input. Every file dhr writes for a photo is named after its stem, in -o DIR or beside
    the photo: x/a.jpg and y/a.jpg with -o out/ collide, and so do a.jpg and a.png in one folder
    (a.mask.png). `dhr edit` writes only images with the photo's suffix (`per_suffix`), unless
    --format makes it one for all (`forced_suffix`). Computed over the whole batch, so shards
    agree."""
    first: dict[tuple[Path, str, str], Path] = {}
    clashes: dict[Path, Path] = {}
    for p in map(Path, inputs):
        name = photo_name_of(p) if p.suffix == SUFFIX else p.name
        folder = Path(output) if output is not None else p.parent
        suffix = ""
        if per_suffix:  # as recon_extension names them (it knows the photo's true format)
            suffix = forced_suffix or (Path(name).suffix if suffix_format(name) else ".png")
        earlier = first.setdefault((folder.absolute(), Path(name).stem, suffix), p)
        if earlier.absolute() != p.absolute():
            clashes[p] = earlier
    return clashes


MAX_TAG = 120


def fmt_strength(x: float) -> str:
    """A strength as file names show it: signed, at most 6 significant digits."""
    return format(float(f"{x:.6g}"), "+g")


def safe_name(name: str) -> str:
    """A direction name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "direction"


def _is_ganspace(e: Edit) -> bool:
    # by shape, not isinstance: this module stays free of torch (the CLI names files early)
    return hasattr(e, "component")


def one_tag(e: Edit) -> str:
    """One edit's part of a tag: 'smile+1.5', 'eyes+20', 'ganspace54r7-8+20'."""
    if _is_ganspace(e) and not e.preset:
        return f"ganspace{e.component}r{e.start}-{e.end}{fmt_strength(e.strength)}"
    return f"{safe_name(e.name)}{fmt_strength(e.strength)}"


def edit_tag(edits: Sequence[Edit], rows: tuple[int, int] | None = None) -> str:
    """File-name tag of a set of edits, e.g. 'smile+1.5_age-1' (rows: '_rows0-8')."""
    tag = "_".join(map(one_tag, edits)) or "edit"
    if rows is not None and not all(map(_is_ganspace, edits)):
        tag += f"_rows{rows[0]}-{rows[1]}"
    if len(tag) > MAX_TAG:
        tag = tag[: MAX_TAG - 9] + "~" + hashlib.sha256(tag.encode()).hexdigest()[:8]
    return tag


# A signed strength as fmt_strength writes it, one edit's tag, and whole tags as edit_tag and Sweep.tag
# build them (names start with a letter so that dates such as 2024-05-01 are not taken for tags).
_NUM = r"[+-](?:\d+(?:\.\d+)?(?:e[+-]\d+)?|inf)"


_ONE_EDIT = rf"[A-Za-z][\w.-]*?{_NUM}"


_TAG = re.compile(
    rf"(?:sweep-[A-Za-z][\w.-]*?{_NUM}to{_NUM}x\d+|{_ONE_EDIT})(?:_{_ONE_EDIT})*(?:_rows\d+-\d+)?"
    r"(?:\.sheet)?"  # a sweep's labelled sheet (faces/sheet.py)
    r"|.+~[0-9a-f]{8}"
)


def is_edit_tag(text: str) -> bool:
    """Whether `text` is a tag `dhr edit` puts in its file names ('smile+1.5_age-1', ...)."""
    return _TAG.fullmatch(text) is not None


def refuse_overwriting(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """UsageError when an output would replace the photo or a project being edited (-o photo.jpg
    would otherwise lose the original for good)."""
    for out in outputs:
        for src in inputs:
            if out.exists() and src.exists() and os.path.samefile(out, src):
                raise UsageError(
                    f"the output {out} is an input of this edit ({src}); it would be overwritten",
                    hint="give another file or a folder with -o",
                )

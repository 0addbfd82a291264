"""`dhr edit` on files: render edits of inverted photos and paste them back (DHR, Sec. 3.4).

An `EditRequest` (what the command line asked for) is resolved against each project's pack by
its `DirectionLibrary`, applied in W+ (`method/edits.py`) and rendered through the project's
own recipe (`method/render.py`: theta + the stored weight delta, the stored out-of-domain
feature, and for DHR the out-of-domain pixels held), then pasted back exactly as `dhr invert`
pasted its reconstruction (an edit whose strengths are all 0 writes the same bytes).

Files (`EditSession.edit_input`): a photo argument edits every face project of that photo
(``photo.jpg.dhr``, ``photo.jpg.face2.dhr``, ...) into one image; a project argument edits that
face. Without an argument `latest_project` picks the project most recently written by `dhr
invert` in the current folder. Outputs: ``<stem>.<tag><ext>`` beside the project file, or
``-o FILE`` / ``-o DIR/``; a sweep writes a strip ``<stem>.sweep-<name><start>to<stop>x<n><ext>``
(and with frames each frame under its own tag). The project file is never modified unless
`save` records the edit in its history.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import console
from ..errors import BadData, InputMissing, UsageError, not_found
from ..faces import (
    SAVE_FORMATS,
    Photo,
    load_image,
    output_format,
    paste_faces,
    save_image,
    suffix_format,
    unused_quality,
)
from ..files import ensure_folder
from ..method.edits import apply_edits
from ..method.render import render_edit, stored_feature_mask, to_uint8
from ..packs.pack import Pack, apply_cpu_threads, load_pack
from ..packs.settings import PACK_NAMES, is_pack_folder
from ..project import (
    SUFFIX,
    Project,
    locked,
    project_path_for,
    read_metadata,
)
from .directions import DirectionLibrary, rows_in
from .naming import (
    edit_tag,
    output_collisions,
    recon_extension,
    refuse_overwriting,
)
from .projects import face_projects, find_photo, latest_project
from .request import EditRequest

__all__ = ["EditSession", "latest_project", "strip_image"]

STRIP_MAX_HEIGHT = 512  # strip frames are reduced to at most this height


def strip_image(frames: Sequence[np.ndarray], max_height: int = STRIP_MAX_HEIGHT) -> np.ndarray:
    """Frames side by side (each reduced to at most `max_height` rows, Lanczos)."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        if h > max_height:
            size = (max(1, round(w * max_height / h)), max_height)
            f = np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS))
        out.append(f)
    return np.concatenate(out, axis=1)


@dataclass
class _Face:
    path: Path
    project: Project
    identity: bool
    crop_size: int


@dataclass
class EditSession:
    """One `dhr edit` call: the request, output and paste options, and the packs and
    direction libraries loaded so far (models are loaded once for all inputs)."""

    request: EditRequest
    output: str | None = None  # -o as typed: a trailing '/' marks a folder
    many: bool = False
    pack_name: str | None = None  # --pack: the projects must have been made with it
    device: str = "cpu"
    models_dir: Path | None = None
    offline: bool | None = None
    frames: bool = False
    save: bool = False
    skip_existing: bool = False
    paste: bool = True
    keep_out_of_domain: bool = True
    blend_radius: float = 32.0
    format: str | None = None
    quality: int | None = None
    packs: dict[str, Pack] = field(default_factory=dict)
    libraries: dict[str, DirectionLibrary] = field(default_factory=dict)
    _ready: set[str] = field(default_factory=set)

    # ------------------------------------------------------------ models

    def pack(self, name: str, *, render: bool = False) -> Pack:
        """The pack `name` (loaded once); `render`: check its generator file is at hand."""
        if name not in PACK_NAMES and not is_pack_folder(name):
            raise BadData(f"the project names an unknown pack {name!r}")
        if name not in self.packs:
            self.packs[name] = load_pack(
                name, device=self.device, models_dir=self.models_dir, offline=self.offline
            )
        p = self.packs[name]
        if render and name not in self._ready:
            p.require(["generator"], lpips=())
            apply_cpu_threads(p)
            self._ready.add(name)
        return p

    def library(self, name: str) -> DirectionLibrary:
        if name not in self.libraries:
            self.libraries[name] = DirectionLibrary(self.pack(name))
        return self.libraries[name]

    def prepare(self, inputs: Sequence[Path]) -> None:
        """Fail fast, once for the whole batch: load the packs of the inputs' projects and
        resolve the request against each (unknown names, wrong shapes, missing direction files
        are errors of the command, not of one input). Unreadable inputs are left to
        `edit_input`, which reports them per input."""
        names: list[str] = []
        for arg in inputs:
            try:
                name = read_metadata(project_path_for(arg)).get("pack") or self.pack_name
            except (BadData, InputMissing):
                continue
            if name and name not in names:
                names.append(name)
        sweep = self.request.sweep
        overrides = {sweep.name: sweep.values[0]} if sweep is not None else {}
        for name in names:
            if self.pack_name is not None and name != self.pack_name:
                continue  # reported per input
            self.pack(name, render=True)
            self.library(name).resolve(self.request, overrides)

    # ------------------------------------------------------------ inputs

    def _faces_for(self, arg: Path) -> tuple[list[Path], Path | None]:
        """Project files and the photo (when given) for one command-line input."""
        # exists(), not is_file(): a FIFO or device in a project's place is refused by
        # Project.load with its own message (not a regular file), not taken for a missing one
        if arg.suffix == SUFFIX:
            if not arg.exists():
                raise InputMissing(
                    f"project file not found: {arg}", hint="run `dhr invert PHOTO` first"
                )
            return [arg], None
        projects = face_projects(arg)
        if not arg.exists():
            if projects[0].exists():  # the photo moved after invert: its projects tell the rest
                return projects, None
            raise not_found(arg)
        if not projects[0].exists():
            raise InputMissing(
                f"{arg} has no project file ({projects[0].name})",
                hint=f"run `dhr invert {arg}` first (or give the .dhr file)",
            )
        return projects, arg

    def _load(self, path: Path) -> _Face:
        p = Project.load(path)
        if self.pack_name is not None and p.pack and p.pack != self.pack_name:
            raise BadData(
                f"{path} was made with the {p.pack} pack, not {self.pack_name}",
                hint=f"drop --pack or use --pack {p.pack}",
            )
        name = p.pack or self.pack_name or "ffhq"
        p.pack = name
        pack = self.pack(name, render=True)
        pack.check_unchanged(p.models)
        g = pack.generator
        if tuple(p.wplus.shape[1:]) != (g.n_latent, g.style_dim):
            raise BadData(
                f"{path}: its W+ code is {list(p.wplus.shape)}, but the {name} pack's generator "
                f"takes [1, {g.n_latent}, {g.style_dim}] (a project of another pack?)"
            )
        if not p.refined:
            console.log.warn(f"{path} was not refined by `dhr invert`: editing its encoder code")
        recipe = p.recipe
        size = pack.settings.generator_size
        c2p = p.crop_to_photo
        identity = recipe.identity_alignment
        if identity is None:
            identity = pack.settings.aligned_input or (
                c2p is not None and bool((c2p.numpy() == np.eye(3)).all())
            )
        if c2p is None and not identity and self.paste:
            raise BadData(f"{path} holds no alignment (align.crop_to_photo) to paste back with")
        return _Face(path, p, bool(identity), recipe.crop_size or size)

    # ------------------------------------------------------------ outputs

    def _target(self, folder: Path, name: str) -> Path:
        """`-o FILE` (one input), `-o DIR/` (or an existing folder, or several inputs), else
        `name` in `folder` (beside the project)."""
        out = self.output
        if out is None:
            return folder / name
        if self._output_file() is None or self.many:
            return Path(out) / name
        return Path(out)

    def _output_file(self) -> str | None:
        """-o as typed when it names a file (not a folder), else None."""
        out = self.output
        if out is None or out.endswith(("/", os.sep)) or Path(out).is_dir():
            return None
        return out

    def check_output(self) -> None:
        """UsageError (before any work) for -o FILE with several inputs, or with a suffix that
        names another format than --format (`-o x.jpg --format png` wrote PNG into x.jpg)."""
        out = self._output_file()
        if out is None:
            return
        if self.many:
            raise UsageError("-o FILE works with one input; give a folder (-o DIR/) for several")
        own = suffix_format(out)
        if self.format and own is not None and own != output_format("x", self.format):
            raise UsageError(
                f"-o {out} names another format than --format {self.format}",
                hint="drop --format, or give the file the format's suffix",
            )

    def output_warnings(self, inputs: Sequence[Path]) -> list[str]:
        """What the user may not expect: -o FILE with a suffix that is no image format (a typo
        such as .jgp) gets the source photo's format under that name; --quality does nothing
        when every image written is lossless."""
        warnings = []
        out = self._output_file()
        suffix = Path(out).suffix if out is not None else ""
        if suffix and not self.format and suffix_format(out) is None:
            warnings.append(
                f"-o {out}: {suffix!r} is not an image suffix; the file gets the photo's own "
                "format (choose one with --format or a suffix such as .png)"
            )
        # outputs take the photo's suffix; a project is named after its photo (x.png.dhr)
        written = (
            [out]
            if out is not None
            else [p.with_suffix("") if p.suffix == SUFFIX else p for p in inputs]
        )
        if quality := unused_quality(self.quality, written, self.format):
            warnings.append(quality)
        return warnings

    def clashes(self, inputs: Sequence[Path]) -> dict[Path, Path]:
        """Inputs of a batch whose edited images would replace those of an earlier input (same
        stem and suffix, same folder), each mapped to that input."""
        if len(inputs) < 2:
            return {}
        forced = SAVE_FORMATS[output_format("x", self.format)] if self.format else None
        return output_collisions(inputs, self.output, per_suffix=True, forced_suffix=forced)

    # ------------------------------------------------------------ one input

    def edit_input(self, arg: Path) -> dict[str, Any]:
        """Edit one input (photo or project); returns a JSON-able record of what was written."""
        if self.request.empty:
            raise UsageError("nothing to edit", hint="e.g. --smile 1.5 (see `dhr edit --list`)")
        self.check_output()
        arg = Path(arg)
        paths, photo_path = self._faces_for(arg)
        faces = [self._load(p) for p in paths]
        main = faces[0]
        if photo_path is None:
            photo_path = find_photo(main.project, main.path)
            if photo_path is None and self.paste:
                raise InputMissing(
                    f"the photo of {main.path} is missing: {main.project.source_path}",
                    hint="put the photo back beside the project, or use --no-paste",
                )
        photo = None
        if photo_path is not None:
            for f in faces:
                f.project.check_source(photo_path)
            photo = load_image(photo_path)
            # beside the project: where `dhr invert [-o DIR]` wrote the reconstruction too
            stem, folder = photo_path.stem, main.path.parent
            ext = recon_extension(photo, self.format)
        else:
            source = main.project.source_path
            stem = Path(source).stem if source else main.path.name.split(".")[0]
            folder = main.path.parent
            ext = SAVE_FORMATS[output_format("x", self.format)]
        pack_name = main.project.pack or "ffhq"
        lib = self.library(pack_name)
        rows = rows_in(self.request.layers, lib.n_latent)

        sweep = self.request.sweep
        overrides = [{}] if sweep is None else [{sweep.name: v} for v in sweep.values]
        edit_sets = [lib.resolve(self.request, ov) for ov in overrides]
        tags = [edit_tag(es, rows) for es in edit_sets]
        if sweep is None:
            shown = edit_sets[0]
            tag = tags[0]
            frame_paths = [self._target(folder, f"{stem}.{tag}{ext}")]
            strip_path = None
        else:
            shown = [e for e in edit_sets[0] if e.name != sweep.name]
            tag = sweep.tag + ("_" + edit_tag(shown, rows) if shown else "")
            strip_path = self._target(folder, f"{stem}.{tag}{ext}")
            frame_paths = (
                [strip_path.parent / f"{stem}.{t}{ext}" for t in tags] if self.frames else []
            )
        wanted = ([strip_path] if strip_path is not None else []) + frame_paths
        refuse_overwriting(wanted, [p for p in (photo_path, *paths) if p is not None])
        record: dict[str, Any] = {
            "input": str(arg),
            "project": str(main.path),
            "pack": pack_name,
            "method": main.project.recipe.method,
            "edits": [e.describe() for e in shown],
            "tag": tag,
        }
        if len(faces) > 1:
            record["projects"] = [str(f.path) for f in faces]
        if self.skip_existing and all(p.exists() for p in wanted):
            return {**record, "skipped": True, "outputs": [str(p) for p in wanted]}

        generator = self.pack(pack_name, render=True).generator
        # the unedited reconstruction of each face whose out-of-domain pixels are held,
        # rendered once for every frame
        references = [
            render_edit(generator, f.project, f.project.wplus, keep_out_of_domain=False)
            if self.keep_out_of_domain and stored_feature_mask(f.project) is not None
            else None
            for f in faces
        ]
        images = []
        for edits in edit_sets:
            crops = []
            for f, reference in zip(faces, references, strict=True):
                w = f.project.wplus.to(torch.float32)
                img = render_edit(
                    generator,
                    f.project,
                    apply_edits(w, edits),
                    keep_out_of_domain=self.keep_out_of_domain,
                    reference=reference,
                )
                crops.append(to_uint8(img))
            images.append(self._compose(photo, faces, crops))

        like = photo if self.paste else None
        for path in wanted:
            ensure_folder(path)
        written: list[str] = []
        if strip_path is not None:
            save_image(
                strip_path, strip_image(images), like=like, format=self.format, quality=self.quality
            )
            written.append(str(strip_path))
            record["strip"] = str(strip_path)
            record["sweep"] = {"name": sweep.name, "values": sweep.values}
            record["frames"] = [str(p) for p in frame_paths]
        else:
            record["output"] = str(frame_paths[0])
        for path, img in zip(frame_paths, images, strict=False):
            save_image(path, img, like=like, format=self.format, quality=self.quality)
            written.append(str(path))
        record["outputs"] = written
        if self.save:
            params: dict[str, Any] = {"edits": record["edits"], "tag": tag, "outputs": written}
            if sweep is not None:
                params["sweep"] = record["sweep"]
            if rows is not None:
                params["layers"] = list(rows)
            with locked(main.path):  # another writer of the photo's projects waits, and v.v.
                for f in faces:
                    fresh = Project.load(f.path)  # what is on disk, plus one history entry
                    fresh.record_step("edit", params)
                    fresh.save(f.path)
            record["saved"] = True
        return record

    def _compose(
        self, photo: Photo | None, faces: list[_Face], crops: list[np.ndarray]
    ) -> np.ndarray:
        """Paste the crops into the photo exactly as `dhr invert` pastes its reconstruction."""
        if not self.paste or photo is None:
            return crops[0]
        placed = [
            (crop, None if f.identity else f.project.crop_to_photo.numpy(), f.crop_size)
            for f, crop in zip(faces, crops, strict=True)
        ]
        return paste_faces(photo, placed, blend_radius=self.blend_radius)

    def listing(self, pack_name: str) -> dict[str, Any]:
        """`dhr edit --list` for one pack (nothing is downloaded: FFHQ files show as cached
        or not)."""
        return self.library(pack_name).listing()

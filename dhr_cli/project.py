"""The project file: everything dhr computed for one photo, in one safetensors file.

`dhr invert photo.jpg` writes ``photo.jpg.dhr`` beside the photo (or ``-o``); `dhr mask` and
`dhr edit` read it and add to it. The file is plain safetensors (no pickle, no code):

Tensors (names shared with the engine; more named tensors are allowed and kept):

=========================  ==================  =======================================
name                       shape / dtype       meaning
=========================  ==================  =======================================
``latent.wplus``           [1, n_latent, 512]  W+ code of the photo (required), float
``mask.in_domain``         [1, 1, H, W]        1 = in-domain (editable), 0 = out-of-domain
``feature.f``              [1, C, h, w]        refined intermediate feature map
``delta.<param name>``     shape of the param  tuned generator weight minus the original
                                               (float16 allowed)
``align.quad``             [4, 2] float64      face quad in photo pixels (FFHQ alignment)
``align.crop_to_photo``    [3, 3] float64      homography: aligned crop -> photo pixels
=========================  ==================  =======================================

Compact storage (format 2.0; in memory, and to every reader, the tensors above are floats):
the ``invert`` step's params choose it. ``delta_dtype`` "int4"/"int8": each ``delta.<name>`` is
written as ``deltaq.<name>`` (signed integers, 4-bit ones two to a byte; with "int4", the layers
from ``delta_int8_from`` px up in 8 bits) and ``deltae.<name>`` (one int8 exponent e per
``delta_group`` values, the scale 2^(e/4); files from before these quarter-octave scales hold
powers of two, and their ``storage`` entry has no ``scale_steps``; `nets.weight_delta.quantize`).
``feature_storage`` "float16"/"int8" (+ "-masked"): ``feature.f`` is written as
``featureq.values``, the values [C, P] at the P positions where the in-domain mask
average-pooled to the feature's size is below 1 (the only ones Eq. 4 reads; all positions
unmasked), with ``featureq.where`` [h, w] uint8, in float16 or as int8 codes with
``featureq.exp`` (the same scales, per ``delta_group`` values of a channel's row). A binary
mask is written as ``maskq.bits`` (`numpy.packbits` along the rows). The shapes and bits are in
the ``storage`` metadata entry. The refinement hands out values already on this grid, so a file
renders exactly like the result it was saved from. Files
without compact storage are written as format 1.0 (float tensors only; what dhr 0.1.0 reads);
1.x files, including the development builds' compact 1.1, are read as before.

``__metadata__`` (all values are strings; structured ones are JSON):
``format`` = "dhr-project", ``format_version`` = "MAJOR.MINOR", ``dhr_version``, ``pack``,
``models`` ({registry name: sha256}), ``source`` ({"path", "sha256"}), ``params``
({step: parameters of its latest run}), ``history`` ([{"step", "time", "params"}]).
Readers accept any minor version of their major and refuse a newer major.

Python API::

    from dhr_cli.project import Project, default_path
    p = Project.for_photo("photo.jpg", wplus=w, pack="ffhq", models={...})
    p.record_step("invert", {"encoder": "e4e-ffhq"})
    p.save(default_path("photo.jpg"))        # atomic
    q = Project.load("photo.jpg.dhr")          # validated; BadData / InputMissing on problems
    q.wplus, q.mask, q.deltas, q.quad, q.history

Writes are atomic: a temporary file in the same folder, fsync, `os.replace`; an interrupted
save (Ctrl-C, full disk) leaves the previous file untouched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import BadData, InputMissing, OutputError, not_found
from .files import atomic_write, exclusive_lock, open_regular, sha256_file
from .method.recipe import RenderRecipe
from .storage import (
    CROP_TO_PHOTO,
    DELTA_PREFIX,
    FEATURE,
    MASK,
    QUAD,
    WPLUS,
    pack_tensors,
    unpack_tensors,
)

if TYPE_CHECKING:
    import torch

FORMAT = "dhr-project"
FORMAT_VERSION = "2.0"  # the newest format this dhr reads and writes
# files without compact storage are written as 1.0, which dhr 0.1.0 reads too; compact ones
# as 2.0, which it refuses ("upgrade dhr") instead of rendering without the deltas it can't see
PLAIN_FORMAT_VERSION = "1.0"
SUFFIX = ".dhr"


_JSON_KEYS = ("models", "source", "params", "history")
_KNOWN_KEYS = {"format", "format_version", "dhr_version", "pack", "storage", *_JSON_KEYS}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def default_path(photo: Path | str) -> Path:
    """The project file of a photo: ``<photo file name>.dhr`` beside it."""
    photo = Path(photo)
    return photo.with_name(photo.name + SUFFIX)


def photo_name_of(project: Path | str) -> str:
    """The file name of the photo a project file is named after (the inverse of `default_path`,
    also for the ``<photo>.face<k>.dhr`` of further faces)."""
    name = Path(project).name.removesuffix(SUFFIX)
    return re.sub(r"\.face\d+$", "", name)


def project_path_for(arg: Path | str) -> Path:
    """A command-line argument that is either a photo or its project file -> the project path."""
    arg = Path(arg)
    return arg if arg.suffix == SUFFIX else default_path(arg)


LOCK_TIMEOUT_S = 900.0  # how long a writer waits for another one (DHR_LOCK_TIMEOUT overrides)


def lock_path(project: Path | str) -> Path:
    """The lock file every project of one photo shares: ``.<photo>.dhr.lock`` beside them."""
    project = Path(project)
    return project.with_name(f".{photo_name_of(project)}{SUFFIX}.lock")


@contextmanager
def locked(project: Path | str, timeout: float | None = None) -> Iterator[None]:
    """Hold the photo's project lock for a read-modify-write of its project files, so that two
    processes (`dhr invert` and `dhr edit --save`, two `--save`s) never lose each other's
    update: a second writer waits, up to `timeout` s (OutputError, exit 6, after that)."""
    if timeout is None:
        timeout = float(os.environ.get("DHR_LOCK_TIMEOUT") or LOCK_TIMEOUT_S)
    try:
        with exclusive_lock(lock_path(project), timeout):
            yield
    except TimeoutError:
        raise OutputError(
            f"{project} is being written by another dhr process (waited {timeout:g} s)",
            hint="let it finish and run this again, or raise DHR_LOCK_TIMEOUT (seconds)",
        ) from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_version(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class Step:
    """One entry of a project's history."""

    step: str
    time: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Project:
    """Everything known about one photo: tensors plus provenance and parameters."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    source_path: str | None = None
    source_sha256: str | None = None
    pack: str | None = None
    models: dict[str, str] = field(default_factory=dict)  # registry name -> sha256
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> latest params
    history: list[Step] = field(default_factory=list)
    dhr_version: str = __version__  # of the dhr that last wrote the file
    format_version: str = FORMAT_VERSION
    extra: dict[str, str] = field(default_factory=dict)  # unknown metadata, kept as is

    # --- construction ---

    @classmethod
    def for_photo(
        cls,
        photo: Path | str,
        *,
        wplus: torch.Tensor | None = None,
        pack: str | None = None,
        models: dict[str, str] | None = None,
    ) -> Project:
        """A new project for `photo` (records its path and sha256)."""
        photo = Path(photo)
        try:
            digest = sha256_file(photo)
        except FileNotFoundError as e:
            raise InputMissing(f"{photo}: no such file") from e
        except OSError as e:
            raise InputMissing(f"{photo}: cannot read it: {e}") from e
        p = cls(source_path=str(photo), source_sha256=digest, pack=pack, models=dict(models or {}))
        if wplus is not None:
            p.wplus = wplus
        return p

    # --- accessors for the tensors the engine exchanges ---

    @property
    def wplus(self) -> torch.Tensor:
        """W+ latent [1, n_latent, style_dim]."""
        try:
            return self.tensors[WPLUS]
        except KeyError:
            raise BadData("project has no W+ latent (latent.wplus)") from None

    @wplus.setter
    def wplus(self, value: torch.Tensor) -> None:
        self.tensors[WPLUS] = value

    @property
    def mask(self) -> torch.Tensor | None:
        """In-domain mask [1, 1, H, W] (1 = editable), None before `dhr mask`."""
        return self.tensors.get(MASK)

    @mask.setter
    def mask(self, value: torch.Tensor | None) -> None:
        self._set_optional(MASK, value)

    @property
    def feature(self) -> torch.Tensor | None:
        """Refined intermediate feature map [1, C, h, w], None before refinement."""
        return self.tensors.get(FEATURE)

    @feature.setter
    def feature(self, value: torch.Tensor | None) -> None:
        self._set_optional(FEATURE, value)

    @property
    def deltas(self) -> dict[str, torch.Tensor]:
        """Tuned generator weights as {parameter name: weight - original} (a copy of the map)."""
        n = len(DELTA_PREFIX)
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(DELTA_PREFIX)}

    @deltas.setter
    def deltas(self, value: dict[str, torch.Tensor]) -> None:
        for k in [k for k in self.tensors if k.startswith(DELTA_PREFIX)]:
            del self.tensors[k]
        for name, t in value.items():
            self.tensors[DELTA_PREFIX + name] = t

    @property
    def quad(self) -> torch.Tensor | None:
        """Face quad [4, 2] float64 in photo pixels."""
        return self.tensors.get(QUAD)

    @quad.setter
    def quad(self, value: torch.Tensor | None) -> None:
        self._set_optional(QUAD, value)

    @property
    def crop_to_photo(self) -> torch.Tensor | None:
        """Homography [3, 3] float64 from aligned-crop to photo pixels."""
        return self.tensors.get(CROP_TO_PHOTO)

    @crop_to_photo.setter
    def crop_to_photo(self, value: torch.Tensor | None) -> None:
        self._set_optional(CROP_TO_PHOTO, value)

    @property
    def recipe(self) -> RenderRecipe:
        """How the stored result renders (the ``invert`` step's recipe keys; the encoder's code
        when the project was never refined)."""
        return RenderRecipe.from_params(self.params.get("invert"))

    @property
    def refined(self) -> bool:
        """`dhr invert` has refined this project (an ``invert`` step is recorded)."""
        return "invert" in self.params

    def _set_optional(self, key: str, value: torch.Tensor | None) -> None:
        if value is None:
            self.tensors.pop(key, None)
        else:
            self.tensors[key] = value

    def record_step(self, step: str, params: dict[str, Any]) -> None:
        """Remember a step's parameters (latest per step) and append it to the history."""
        params = json.loads(json.dumps(params))  # a JSON-safe copy, checked now, not at save
        self.params[step] = params
        self.history.append(Step(step, _now(), params))

    def check_source(self, photo: Path | str) -> None:
        """BadData if `photo` is not the photo this project was made from."""
        if self.source_sha256 is None:
            return
        digest = sha256_file(photo)
        if digest != self.source_sha256:
            raise BadData(
                f"{photo} is not the photo this project was made from "
                f"(sha256 {digest[:12]}..., project says {self.source_sha256[:12]}...)",
                hint="re-run `dhr invert` on this photo",
            )

    # --- validation ---

    def validate(self) -> None:
        """BadData unless every known tensor has the shape and dtype the engine expects."""
        import torch

        floating = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

        def need(name: str, ok: bool, what: str) -> None:
            if not ok:
                t = self.tensors[name]
                raise BadData(
                    f"project tensor {name} must be {what}, got shape "
                    f"{list(t.shape)} {str(t.dtype).replace('torch.', '')}"
                )

        if WPLUS not in self.tensors:
            raise BadData(f"project has no {WPLUS} tensor (the W+ latent is required)")
        for name, t in self.tensors.items():
            if not isinstance(t, torch.Tensor):
                raise BadData(f"project entry {name} is not a tensor")
        w = self.tensors[WPLUS]
        need(WPLUS, w.ndim == 3 and w.shape[0] == 1 and w.dtype in floating, "[1, n, d] float")
        need(WPLUS, bool(torch.isfinite(w).all()), "finite")
        if MASK in self.tensors:
            m = self.tensors[MASK]
            need(MASK, m.ndim == 4 and tuple(m.shape[:2]) == (1, 1), "[1, 1, H, W]")
            need(MASK, m.dtype in floating, "floating point")
            need(MASK, bool(((m >= 0) & (m <= 1)).all()), "within [0, 1]")
        if FEATURE in self.tensors:
            f = self.tensors[FEATURE]
            need(
                FEATURE,
                f.ndim == 4 and f.shape[0] == 1 and f.dtype in floating,
                "[1, C, h, w] float",
            )
            need(FEATURE, bool(torch.isfinite(f).all()), "finite")
        for name, shape in ((QUAD, (4, 2)), (CROP_TO_PHOTO, (3, 3))):
            if name in self.tensors:
                t = self.tensors[name]
                need(
                    name,
                    tuple(t.shape) == shape and t.dtype == torch.float64,
                    f"{list(shape)} float64",
                )
                need(name, bool(torch.isfinite(t).all()), "finite")
        if CROP_TO_PHOTO in self.tensors:
            # pasting back inverts it (a singular one was an internal error there)
            det = float(torch.linalg.det(self.tensors[CROP_TO_PHOTO]))
            need(CROP_TO_PHOTO, abs(det) > 1e-9, "invertible")
        for name, t in self.tensors.items():
            if name.startswith(DELTA_PREFIX):
                need(name, t.dtype in floating[:3], "float16, bfloat16 or float32")
                need(name, bool(torch.isfinite(t).all()), "finite")

    # --- reading and writing ---

    def metadata(self) -> dict[str, str]:
        """The ``__metadata__`` strings this project is saved with."""
        md = dict(self.extra)
        md.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "dhr_version": __version__,
                "pack": self.pack or "",
                "models": json.dumps(self.models, sort_keys=True),
                "source": json.dumps({"path": self.source_path, "sha256": self.source_sha256}),
                "params": json.dumps(self.params, sort_keys=True),
                "history": json.dumps(
                    [{"step": s.step, "time": s.time, "params": s.params} for s in self.history]
                ),
            }
        )
        return md

    def save(self, path: Path | str | None = None) -> Path:
        """Write atomically to `path` (default: beside the source photo). Returns the path."""
        from safetensors.torch import save

        if path is None:
            if self.source_path is None:
                raise ValueError("Project.save needs a path when the project has no source photo")
            path = default_path(self.source_path)
        path = Path(path)
        self.validate()
        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        packed, storage = pack_tensors(self.tensors, self.params.get("invert") or {})
        for name, t in packed.items():
            t = t.detach().to("cpu").contiguous()
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen and t.numel():  # safetensors refuses tensors sharing memory
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            tensors[name] = t
        meta = self.metadata()
        if storage:
            meta["storage"] = json.dumps(storage, sort_keys=True)
        else:
            meta["format_version"] = PLAIN_FORMAT_VERSION
        data = save(tensors, metadata=meta)
        with atomic_write(path) as f:
            _write_all(f, data)
        self.dhr_version = __version__
        self.format_version = meta["format_version"]
        return path

    @classmethod
    def load(cls, path: Path | str) -> Project:
        """Read and validate a project file (InputMissing, or BadData saying what is wrong)."""
        from safetensors.torch import load

        path = Path(path)
        data, size = _read(path)
        meta = _check_header(data, path, size)
        if len(data) != size:
            raise BadData(f"{path}: truncated project file (it changed while being read)")
        try:
            tensors = load(data)
        except Exception as e:  # noqa: BLE001 - any parser failure means a corrupt file
            raise BadData(f"{path}: corrupt project file ({e})") from e
        try:
            tensors = unpack_tensors(tensors, json.loads(meta.get("storage") or "{}"))
        except (TypeError, KeyError, ValueError, RuntimeError) as e:
            raise BadData(f"{path}: corrupt compact storage ({e})") from e
        fields: dict[str, Any] = {}
        for key in _JSON_KEYS:
            try:
                fields[key] = json.loads(meta.get(key) or ("[]" if key == "history" else "{}"))
            except ValueError as e:
                raise BadData(f"{path}: metadata field {key!r} is not valid JSON") from e
        source = fields["source"] if isinstance(fields["source"], dict) else {}
        try:
            history = [
                Step(str(h["step"]), str(h["time"]), dict(h.get("params") or {}))
                for h in fields["history"]
            ]
        except (TypeError, KeyError, ValueError) as e:
            raise BadData(f"{path}: metadata field 'history' is malformed") from e
        if not isinstance(fields["models"], dict) or not isinstance(fields["params"], dict):
            raise BadData(f"{path}: metadata fields 'models' and 'params' must be JSON objects")
        for step, step_params in fields["params"].items():  # as record_step writes them
            if not isinstance(step_params, dict):
                raise BadData(f"{path}: metadata params of step {step!r} must be a JSON object")
        project = cls(
            tensors=tensors,
            source_path=source.get("path"),
            source_sha256=source.get("sha256"),
            pack=meta.get("pack") or None,
            models={str(k): str(v) for k, v in fields["models"].items()},
            params=fields["params"],
            history=history,
            dhr_version=meta.get("dhr_version", ""),
            format_version=meta["format_version"],
            extra={k: v for k, v in meta.items() if k not in _KNOWN_KEYS},
        )
        try:
            project.validate()
        except BadData as e:
            raise BadData(f"{path}: {e.message}", hint=e.hint) from None
        return project


def _read(path: Path, *, body: bool = True) -> tuple[bytes, int]:
    """(bytes, size) of a project file: all of it, or its 8-byte length and JSON header only.

    Only a regular file is read (a FIFO or /dev/zero as a project is refused, exit 3), and the
    header length is checked against the file's size (and safetensors' cap) before anything
    more is read: a bogus length stops the read at 8 bytes, for `_check_header` to name.
    """
    try:
        with open_regular(path, "project file") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(8)
            n = struct.unpack("<Q", data)[0] if len(data) == 8 else 0
            if len(data) == 8 and n <= _MAX_HEADER and 8 + n <= size:
                data += f.read(size - 8 if body else n)
            return data, size
    except FileNotFoundError:
        raise InputMissing(
            f"{path}: no such project file", hint="run `dhr invert PHOTO` first"
        ) from None
    except IsADirectoryError:
        raise InputMissing(f"{path} is a folder, not a project file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise not_found(path, "project file") from None
        raise InputMissing(f"{path}: cannot read it: {e}") from e


def read_metadata(path: Path | str) -> dict[str, str]:
    """The checked ``__metadata__`` of a project file, without loading tensors (nor torch)."""
    path = Path(path)
    data, size = _read(path, body=False)
    return _check_header(data, path, size)


def _check_header(data: bytes, path: Path, size: int) -> dict[str, str]:
    """Validate the safetensors framing and dhr metadata of a file of `size` bytes, from its
    first bytes `data` (at least the header); returns the metadata."""
    not_project = f"{path} is not a dhr project file"
    if len(data) < 8:
        raise BadData(f"{not_project} (only {size} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise BadData(f"{not_project} (not a safetensors file)")
    if 8 + n > min(size, len(data)):
        raise BadData(f"{path}: truncated project file (header cut off)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadData(f"{not_project} (not a safetensors file)") from None
    if not isinstance(header, dict):
        raise BadData(f"{not_project} (not a safetensors file)")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise BadData(
            f"{not_project} (safetensors without the {FORMAT!r} marker"
            + (f"; format is {found!r})" if found else ")")
        )
    if not all(isinstance(v, str) for v in meta.values()):
        raise BadData(f"{path}: corrupt project metadata (non-string values)")
    version = _parse_version(meta.get("format_version", ""))
    ours = _parse_version(FORMAT_VERSION)
    assert ours is not None
    if version is None:
        raise BadData(f"{path}: unreadable project format version {meta.get('format_version')!r}")
    if version[0] > ours[0]:
        raise BadData(
            f"{path} was written by a newer dhr (project format {version[0]}.{version[1]}, "
            f"dhr {meta.get('dhr_version', '?')}); this dhr {__version__} reads format "
            f"{ours[0]}.x",
            hint="upgrade dhr: pip install -U dhr",
        )
    if version[0] < 1:
        raise BadData(f"{path}: unsupported project format version {meta['format_version']}")
    # data section: every tensor inside it, and nothing missing at the end (truncation)
    body = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in info["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise BadData(f"{path}: corrupt project file (bad entry for {name})") from None
        end = max(end, stop)
        if not 0 <= start <= stop:
            raise BadData(f"{path}: corrupt project file (bad offsets for {name})")
    if end > body:
        raise BadData(
            f"{path}: truncated project file ({body} of {end} data bytes present)",
            hint="the file was cut short (disk full or an interrupted copy); re-run the step",
        )
    if end < body:
        raise BadData(f"{path}: corrupt project file ({body - end} unexpected trailing bytes)")
    return meta


def _write_all(f: Any, data: bytes, chunk: int = 16 << 20) -> None:
    view = memoryview(data)
    for i in range(0, len(view), chunk):
        f.write(view[i : i + chunk])


__all__ = [
    "CROP_TO_PHOTO",
    "DELTA_PREFIX",
    "FEATURE",
    "FORMAT",
    "FORMAT_VERSION",
    "PLAIN_FORMAT_VERSION",
    "MASK",
    "Project",
    "QUAD",
    "Step",
    "WPLUS",
    "default_path",
    "project_path_for",
    "read_metadata",
]

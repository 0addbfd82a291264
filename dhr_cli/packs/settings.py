"""What a pack is, as data: the files of its networks, the settings DHR uses with them, its edit
directions. Read from a pack description (``pack.json``, format "dhr-pack") without torch, so
that the command line checks a pack before any model loads.

A description::

    {"format": "dhr-pack", "version": 1, "name": "metfaces",
     "files": {"generator": "generator.pt", "encoder": "e4e.pt"},
     "settings": {"generator_size": 1024, "feature_layer": 11},
     "directions": {"smile": {"file": "smile.npy", "unit": "distance in W"}}}

- ``files``: role -> a file in the pack's folder (a string, or {"path": ..., "format": ...}) or
  a model of dhr's registry ({"model": "stylegan2-ffhq-1024"}). Roles: generator, encoder,
  parser (default: the ffhq pack's BiSeNet), and any name directions refer to. ``format`` names
  the loader: "checkpoint" (generator and encoder: rosinality, e4e/pSp, StyleGAN2-ADA and dhr
  files, `nets.checkpoints`), "bisenet" (facexlib's parser), and for the synthetic pack's own
  files "dhr-synthetic" and "small-parser".
- ``settings``: `PackSettings` fields; a user pack's missing settings are the ffhq pack's.
- ``directions``: name -> {"file": a file reference or a role, "key": the tensor's name in a
  file holding several, "shape", "unit", "source", "detail", ...} (`DirectionInfo`).
- ``ganspace``: {"file", "presets": {name: [component, start, end, strength]}} (optional).
- ``calibration``: {"file", "section"}: a JSON file whose section overrides the settings (the
  synthetic pack's calibrated segmentation), with the ``provenance`` it then gets.

The two built-in packs are such descriptions, ``ffhq.json`` and ``synthetic.json`` beside this
module; a user's pack is a folder holding a ``pack.json``.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import BadData, InputMissing, UsageError

BUILTIN_DIR = Path(__file__).parent
BUILTIN: dict[str, Path] = {
    "ffhq": BUILTIN_DIR / "ffhq.json",
    "synthetic": BUILTIN_DIR / "synthetic.json",
}
PACK_NAMES: tuple[str, ...] = tuple(BUILTIN)
DEFAULT_PACK = "ffhq"
MANIFEST = "pack.json"
FORMAT = "dhr-pack"
LOADERS = {
    "generator": ("checkpoint", "dhr-synthetic"),
    "encoder": ("checkpoint", "dhr-synthetic"),
    "parser": ("bisenet", "small-parser"),
}


@dataclass(frozen=True)
class FileRef:
    """One file of a pack: a registry model (`model`) or a path in the pack's folder."""

    model: str | None = None
    path: Path | None = None
    format: str = "checkpoint"

    @property
    def label(self) -> str:
        return self.model or str(self.path)


@dataclass(frozen=True)
class DirectionInfo:
    """A named edit direction of a pack, known without reading its file.

    unit: the strength's unit as listed; meaning: what strength 1 is (default: unit);
    source / detail: where it comes from (listing); origin: the direction's source as an edit
    records it (default: detail); key: the tensor's name in a file that holds several.
    """

    name: str
    file: FileRef
    key: str | None = None
    shape: tuple[int, ...] | None = None
    unit: str = "as stored in the file"
    meaning: str | None = None
    source: str = ""
    detail: str = ""
    origin: str | None = None


@dataclass(frozen=True)
class GanspaceInfo:
    """A GANSpace PCA file (mean, comp, std) and its named presets (component, start, end,
    strength)."""

    file: FileRef
    presets: dict[str, tuple[int, int, int, float]] = field(default_factory=dict)
    source: str = "GANSpace PCA"  # as an edit records it
    source_short: str = ""  # as `dhr edit --list` shows it
    detail: str = ""
    components: int | None = None


@dataclass(frozen=True)
class SlicSettings:
    """scikit-image SLIC parameters of Domain-Specific Segmentation (labels start at 1)."""

    n_segments: int = 200
    compactness: float = 30.0
    sigma: float = 1.0


@dataclass(frozen=True)
class PackSettings:
    """A pack: its files and directions, and what DHR needs to know besides its networks.

    generator_size: output size of the generator (and of the aligned crop).
    n_latent: W+ rows.  style_dim: width of W.  encoder_size: encoder input size.
    class_names: the parser's output channels.  ood_classes: parsing classes that make m_p
      out-of-domain (summed probability >= 0.5).
    tau: superpixel threshold per parsing class name; tau_default for the others.
    feature_layer: DHR's feature layer (stylegan2 numbering).
    coarse_res: working resolution of the coarse inversion (generator early exit) and of its
      LPIPS-VGG loss maps.  refine_res: working resolution of refinement (None = full size).
    lpips_res: resolution LPIPS-Alex sees during refinement (None = the working resolution).
    aligned_input: inputs are already aligned square crops (no face detection);
      input_size_exact: and they must be exactly generator_size px (the synthetic domain).
    identities: its faces have identities (`dhr bench` measures ArcFace similarity).
    slic: superpixel parameters.
    segment_maps: the loss maps of segmentation: "full" (the coarse latent rendered at the
      generator's full size, LPIPS-VGG against the full-size crop: the released setting) or
      "coarse" (the projection's own maps at coarse_res: cheaper).
    mse_weighting: refinement's MSE: "released" (squared error summed over the channels / the
      region's pixel count) or "mean" (per-element mean; the synthetic pack's calibration).
    delta_dtype / delta_group / delta_int8_top / feature_storage: how a project stores the
      weight delta ("int4", "int8" in groups of delta_group values with quarter-octave scales,
      with "int4" the layers of the delta_int8_top highest resolutions in int8; or
      "float16"/"float32"; None = float16 from 256 px up, else float32) and the refined feature
      ("float32", "float16", "int8", and "-masked": only where Eq. 4 reads it).
    cpu_threads: torch intra-op threads on CPU. The synthetic pack's 64-px convolutions are too
      small to gain from a second thread: a DHR invert took 7.3 s with 1 thread, 10.6 s with 2
      (OMP_WAIT_POLICY=passive) and 97 s with 2 (default spin-waiting) while another process
      kept one of the 2 cores busy (`apply_cpu_threads`).
    files / directions / ganspace: see the module docstring.  folder: a user pack's folder
      (None for the built-in ones).  provenance: where the settings come from.
    """

    name: str
    generator_size: int
    n_latent: int
    style_dim: int
    encoder_size: int
    class_names: tuple[str, ...]
    ood_classes: tuple[str, ...]
    tau: dict[str, float]
    tau_default: float
    feature_layer: int
    coarse_res: int
    refine_res: int | None
    lpips_res: int | None
    aligned_input: bool
    input_size_exact: bool = False
    identities: bool = True
    slic: SlicSettings = field(default_factory=SlicSettings)
    cpu_threads: int | None = None
    segment_maps: str = "coarse"
    mse_weighting: str = "mean"
    delta_dtype: str | None = None
    delta_group: int = 64
    delta_int8_top: int = 0
    feature_storage: str = "float32"
    files: dict[str, FileRef] = field(default_factory=dict)
    directions: dict[str, DirectionInfo] = field(default_factory=dict)
    ganspace: GanspaceInfo | None = None
    folder: Path | None = None
    provenance: str = ""
    description: str = ""
    domain_hint: str = ""

    @property
    def models(self) -> dict[str, str]:
        """role -> registry name of each registry file the pack uses."""
        return {role: f.model for role, f in self.files.items() if f.model}

    @property
    def delta_int8_from(self) -> int | None:
        """The resolution (px) from which int4 deltas keep 8 bits (None: all 4 bits)."""
        if self.delta_int8_top <= 0:
            return None
        return max(4, self.generator_size >> (self.delta_int8_top - 1))

    @property
    def label(self) -> str:
        """How a project records the pack: the built-in name, or the pack's folder."""
        return self.name if self.folder is None else str(self.folder)


_SCALARS = {
    "generator_size": int,
    "n_latent": int,
    "style_dim": int,
    "encoder_size": int,
    "tau_default": float,
    "feature_layer": int,
    "coarse_res": int,
    "refine_res": int,
    "lpips_res": int,
    "aligned_input": bool,
    "input_size_exact": bool,
    "identities": bool,
    "cpu_threads": int,
    "delta_group": int,
    "delta_int8_top": int,
}
_OPTIONAL = {"refine_res", "lpips_res", "cpu_threads", "delta_dtype"}
_CHOICES: dict[str, tuple[str, ...]] = {
    "segment_maps": ("full", "coarse"),
    "mse_weighting": ("released", "mean"),
    "delta_dtype": ("int4", "int8", "float16", "float32", "bfloat16"),
    "feature_storage": ("float32", "float16", "float16-masked", "int8", "int8-masked"),
}


def _bad(where: Path | str, what: str) -> BadData:
    return BadData(f"pack description {where}: {what}", hint="see README, 'Packs of your own'")


def _file_ref(value: Any, folder: Path | None, where: str, src: Path | str) -> FileRef:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or ("model" in value) == ("path" in value):
        raise _bad(src, f'{where} must name a file ("path") or a registry model ("model")')
    fmt = str(value.get("format", "checkpoint"))
    if "model" in value:
        return FileRef(model=str(value["model"]), format=fmt)
    if folder is None:
        raise _bad(src, f"{where}: a built-in pack names registry models only")
    path = (folder / str(value["path"])).resolve()
    if folder.resolve() not in path.parents:
        raise _bad(src, f"{where}: {value['path']} lies outside the pack's folder")
    if not path.is_file():
        raise _bad(src, f"{where}: {value['path']} is missing from {folder}")
    return FileRef(path=path, format=fmt)


def _scalar_settings(raw: dict[str, Any], src: Path | str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _CHOICES:
            if value is None and key in _OPTIONAL:
                out[key] = None
            elif value not in _CHOICES[key]:
                raise _bad(
                    src, f"settings.{key} must be one of {list(_CHOICES[key])}, got {value!r}"
                )
            else:
                out[key] = str(value)
        elif key in _SCALARS:
            if value is None and key in _OPTIONAL:
                out[key] = None
                continue
            kind = _SCALARS[key]
            ok = (
                isinstance(value, bool)
                if kind is bool
                else (isinstance(value, (int, float)) and not isinstance(value, bool))
            )
            if not ok or (kind is int and float(value) != int(value)):
                raise _bad(src, f"settings.{key} must be {kind.__name__}, got {value!r}")
            out[key] = kind(value)
        elif key in ("class_names", "ood_classes"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad(src, f"settings.{key} must be a list of names")
            out[key] = tuple(value)
        elif key == "tau":
            if not isinstance(value, dict) or not all(
                isinstance(v, (int, float)) for v in value.values()
            ):
                raise _bad(src, "settings.tau must map class names to numbers")
            out[key] = {str(k): float(v) for k, v in value.items()}
        elif key == "slic":
            if not isinstance(value, dict):
                raise _bad(src, "settings.slic must be an object")
            try:
                out[key] = SlicSettings(**value)
            except TypeError as e:
                raise _bad(src, f"settings.slic: {e}") from None
        elif key in ("calibrated", "method", "calibration_set", "measurements"):
            continue  # a calibration record's own notes
        else:
            raise _bad(src, f"unknown setting {key!r}")
    return out


def settings_from_description(
    data: dict[str, Any],
    *,
    folder: Path | None,
    base: PackSettings | None = None,
    src: Path | str = "",
    calibration: dict[str, Any] | None = None,
) -> PackSettings:
    """A `PackSettings` from a pack description; settings it leaves out are `base`'s.

    `calibration`: the calibration section to apply (None: read the file the description
    names, if any)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(src, f'not a pack description (want "format": "{FORMAT}")')
    if int(data.get("version", 1)) > 1:
        raise _bad(src, f"version {data.get('version')} is newer than this dhr reads (1)")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(src, 'a pack needs a "name"')
    raw_files = data.get("files") or {}
    if not isinstance(raw_files, dict):
        raise _bad(src, '"files" must be an object (role -> file)')
    files = dict(base.files) if base is not None else {}
    if folder is not None and base is not None:
        # a user pack keeps only the base's files every pack shares (the face parser)
        files = {r: f for r, f in files.items() if r == "parser"}
    for role, value in raw_files.items():
        files[role] = _file_ref(value, folder, f"files.{role}", src)
    for role in ("generator", "encoder"):
        if role not in files:
            raise _bad(src, f"files.{role} is missing")
    for role, choices in LOADERS.items():
        if role in files and files[role].format not in choices:
            raise _bad(src, f"files.{role}: unknown format {files[role].format!r}")
    raw_settings = data.get("settings") or {}
    if not isinstance(raw_settings, dict):
        raise _bad(src, '"settings" must be an object')
    values = _scalar_settings(raw_settings, src)
    provenance = str(data.get("provenance", f"pack description {src}"))
    cal = data.get("calibration")
    if cal is not None and calibration is None:
        calibration = _read_calibration(cal, src)
    if calibration:
        values.update(_scalar_settings(calibration, src))
        provenance = str(cal.get("provenance", provenance)) if isinstance(cal, dict) else provenance
    directions = {
        n: _direction(n, d, files, folder, src) for n, d in (data.get("directions") or {}).items()
    }
    ganspace = _ganspace(data.get("ganspace"), files, folder, src)
    common = {"files": files, "directions": directions, "ganspace": ganspace, "folder": folder}
    text = {
        "provenance": provenance,
        "description": str(data.get("description", "")),
        "domain_hint": str(data.get("domain_hint", "")),
    }
    if base is None:
        required = [
            f.name for f in fields(PackSettings) if f.default is f.default_factory is MISSING
        ]
        missing = [n for n in required if n != "name" and n not in values]
        if missing:
            raise _bad(src, "settings missing: " + ", ".join(missing))
        return PackSettings(name=name, **values, **common, **text)
    return replace(base, name=name, **values, **common, **text)


def _ref_or_role(
    value: Any, files: dict[str, FileRef], folder: Path | None, where: str, src: Path | str
) -> FileRef:
    if isinstance(value, str) and value in files:
        return files[value]
    return _file_ref(value, folder, where, src)


def _direction(
    name: str, d: Any, files: dict[str, FileRef], folder: Path | None, src: Path | str
) -> DirectionInfo:
    if not isinstance(d, dict) or "file" not in d:
        raise _bad(src, f'directions.{name} must be an object with a "file"')
    shape = d.get("shape")
    info = DirectionInfo(
        name=name,
        file=_ref_or_role(d["file"], files, folder, f"directions.{name}.file", src),
        key=d.get("key"),
        shape=None if shape is None else tuple(int(x) for x in shape),
        unit=str(d.get("unit", "as stored in the file")),
        meaning=d.get("meaning"),
        source=str(d.get("source", "")),
        detail=str(d.get("detail", "")),
        origin=d.get("origin"),
    )
    return info


def _ganspace(
    g: Any, files: dict[str, FileRef], folder: Path | None, src: Path | str
) -> GanspaceInfo | None:
    if g is None:
        return None
    if not isinstance(g, dict) or "file" not in g:
        raise _bad(src, 'ganspace must be an object with a "file"')
    presets: dict[str, tuple[int, int, int, float]] = {}
    for n, p in (g.get("presets") or {}).items():
        if not (isinstance(p, list) and len(p) == 4):
            raise _bad(src, f"ganspace.presets.{n} must be [component, start, end, strength]")
        presets[str(n)] = (int(p[0]), int(p[1]), int(p[2]), float(p[3]))
    return GanspaceInfo(
        file=_ref_or_role(g["file"], files, folder, "ganspace.file", src),
        presets=presets,
        source=str(g.get("source", "GANSpace PCA")),
        source_short=str(g.get("source_short", "")),
        detail=str(g.get("detail", "")),
        components=g.get("components"),
    )


def _read_calibration(cal: Any, src: Path | str) -> dict[str, Any]:
    if not isinstance(cal, dict) or "file" not in cal:
        raise _bad(src, 'calibration must be {"file": ..., "section": ...}')
    path = (Path(src).parent / str(cal["file"])).resolve()
    data = read_json(path, missing_ok=True)
    section = data.get(str(cal.get("section", "segmentation"))) if data else None
    return dict(section or {})


def read_json(path: Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON object from `path` ({} when missing and `missing_ok`)."""
    if not path.is_file():
        if missing_ok:
            return {}
        raise InputMissing(f"pack description not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadData(f"pack description {path} is unreadable: {e}") from e
    if not isinstance(data, dict):
        raise _bad(path, "not a JSON object")
    return data


def is_pack_folder(value: str | Path) -> bool:
    """Whether `value` names a folder (a user's pack) rather than a built-in pack."""
    s = str(value)
    return s not in BUILTIN and ("/" in s or s.startswith(".") or Path(s).is_dir())


def check_pack_name(value: str) -> str:
    """A built-in pack's name, or a pack folder (checked for its description), as given."""
    if value in BUILTIN:
        return value
    if is_pack_folder(value):
        folder = Path(value)
        if not (folder / MANIFEST).is_file():
            raise BadData(
                f"{value} is not a pack: it holds no {MANIFEST}",
                hint="see README, 'Packs of your own'",
            )
        return value
    raise UsageError(
        f"unknown pack {value!r}",
        hint="use --pack " + " or --pack ".join(PACK_NAMES) + ", or a pack folder",
    )


_CACHE: dict[str, PackSettings] = {}


def pack_settings(value: str, *, calibration: dict[str, Any] | None = None) -> PackSettings:
    """The settings of a built-in pack (by name) or of a pack folder; built-in ones are read
    once per process."""
    check_pack_name(value)
    if value in BUILTIN:
        if calibration is None and value in _CACHE:
            return _CACHE[value]
        path = BUILTIN[value]
        s = settings_from_description(
            read_json(path), folder=None, src=path, calibration=calibration
        )
        if calibration is None:
            _CACHE[value] = s
        return s
    folder = Path(value).resolve()
    path = folder / MANIFEST
    return settings_from_description(
        read_json(path), folder=folder, base=pack_settings(DEFAULT_PACK), src=path
    )

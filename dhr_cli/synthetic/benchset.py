"""Deterministic synthetic benchmark set with true out-of-domain masks and true edits.

``make_benchset(n, seed)`` draws ``n`` scenes in three strata:

- ``clean``: the face on its gradient background, nothing out-of-domain;
- ``occluded``: one or more occluders whose union covers 5-40% of the image;
- ``textured``: a scikit-image texture replaces the gradient background.

Each sample carries the image, the exact out-of-domain mask (True = out-of-domain), the class
map, the latent ``z`` and attribute values, and **true edited images**: the same scene
re-rendered with ``smile`` / ``age`` moved by each delta (in std-units of z) and the identical
occluder layer and background composited on top.

Sample ``i`` depends only on ``(seed, i)`` and its stratum, so sets of different sizes share
their samples' recipes. On disk (:func:`write_benchset` / :func:`load_benchset`)::

    index.json                      format, generator settings, attribute and class tables,
                                    one record per sample (paths relative to the folder)
    images/00000.png                RGB image
    masks/00000.png                 L, 255 = out-of-domain, 0 = in-domain
    classes/00000.png               L, class ids (see dhr_cli.synthetic.classes)
    edits/00000_smile_+1.png        true edited image
    edits/00000_smile_+1_mask.png   its out-of-domain mask
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadData, InputMissing, OutputError
from . import classes as C
from .attributes import ATTRIBUTE_INDEX, ATTRIBUTES, Z_DIM, params_dict, sample_z
from .occluders import Scene, composite, random_occluders, texture_background
from .render import render

FORMAT = "dhr-synthetic-bench"
VERSION = 1
STRATA: tuple[str, ...] = ("clean", "occluded", "textured")
DEFAULT_DELTAS: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
DEFAULT_EDIT_ATTRIBUTES: tuple[str, ...] = ("smile", "age")
DEFAULT_COVER: tuple[float, float] = (0.05, 0.40)


@dataclass(frozen=True)
class EditTruth:
    """The true result of moving one attribute by ``delta`` std-units."""

    attribute: str
    delta: float
    image: np.ndarray  # (S, S, 3) uint8
    ood_mask: np.ndarray  # (S, S) bool


@dataclass
class BenchSample:
    """One benchmark scene with its ground truth."""

    index: int
    stratum: str
    z: np.ndarray  # (Z_DIM,) float64
    params: dict[str, float]
    image: np.ndarray  # (S, S, 3) uint8
    ood_mask: np.ndarray  # (S, S) bool, True = out-of-domain
    classes: np.ndarray  # (S, S) uint8
    occluders: tuple[str, ...] = ()
    texture: str | None = None
    edits: dict[tuple[str, float], EditTruth] = field(default_factory=dict)
    scene: Scene | None = field(default=None, repr=False)  # in memory only, not saved

    @property
    def id(self) -> str:
        return f"{self.index:05d}"

    @property
    def ood_fraction(self) -> float:
        return float(self.ood_mask.mean())

    def edit(self, attribute: str, delta: float) -> EditTruth:
        return self.edits[(attribute, float(delta))]


@dataclass
class BenchSet:
    """A list of :class:`BenchSample` plus the settings that generated it."""

    seed: int
    size: int
    supersample: int
    deltas: tuple[float, ...]
    edit_attributes: tuple[str, ...]
    cover: tuple[float, float]
    samples: list[BenchSample]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[BenchSample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> BenchSample:
        return self.samples[i]

    def stratum(self, name: str) -> list[BenchSample]:
        """Samples of one stratum, in index order."""
        return [s for s in self.samples if s.stratum == name]

    def counts(self) -> dict[str, int]:
        return {k: len(self.stratum(k)) for k in STRATA}


def strata_for(n: int, seed: int, fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)) -> list[str]:
    """Stratum of each of ``n`` samples: exact counts (largest remainder), seeded order."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (len(STRATA),) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"fractions must be {len(STRATA)} non-negative numbers")
    want = f / f.sum() * n
    counts = np.floor(want).astype(int)
    for i in np.argsort(-(want - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = np.repeat(np.arange(len(STRATA)), counts)
    order = np.random.default_rng([seed, 0x5EED]).permutation(n)
    return [STRATA[labels[j]] for j in order]


def make_sample(
    index: int,
    stratum: str,
    seed: int,
    *,
    size: int = 64,
    supersample: int = 4,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    edit_attributes: Sequence[str] = DEFAULT_EDIT_ATTRIBUTES,
    cover: tuple[float, float] = DEFAULT_COVER,
) -> BenchSample:
    """Build sample ``index`` of stratum ``stratum`` (depends only on seed, index, stratum)."""
    if stratum not in STRATA:
        raise ValueError(f"unknown stratum {stratum!r}")
    rng = np.random.default_rng([seed, index])
    z = sample_z(rng)
    face = render(z, size=size, supersample=supersample)
    layer = background = None
    if stratum == "occluded":
        layer = random_occluders(
            face.geometry,
            rng,
            size=size,
            supersample=supersample,
            skin_tone=face.params["skin_tone"],
            cover=cover,
        )
    elif stratum == "textured":
        background = texture_background(rng, size=size)
    scene = Scene(z, layer, background, size, supersample)

    comp = composite(face, layer, background)
    edits: dict[tuple[str, float], EditTruth] = {}
    for attr in edit_attributes:
        if attr not in ATTRIBUTE_INDEX:
            raise ValueError(f"unknown attribute {attr!r}")
        for d in deltas:
            e = scene.edit(attr, float(d))
            edits[(attr, float(d))] = EditTruth(attr, float(d), e.image, e.ood_mask)
    return BenchSample(
        index=index,
        stratum=stratum,
        z=z,
        params=face.params,
        image=comp.image,
        ood_mask=comp.ood_mask,
        classes=comp.classes,
        occluders=layer.kinds if layer is not None else (),
        texture=background.name if background is not None else None,
        edits=edits,
        scene=scene,
    )


def make_benchset(
    n: int = 300,
    seed: int = 0,
    *,
    size: int = 64,
    supersample: int = 4,
    fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    deltas: Sequence[float] = DEFAULT_DELTAS,
    edit_attributes: Sequence[str] = DEFAULT_EDIT_ATTRIBUTES,
    cover: tuple[float, float] = DEFAULT_COVER,
) -> BenchSet:
    """Generate the benchmark set in memory (deterministic in all arguments)."""
    strata = strata_for(n, seed, fractions)
    samples = [
        make_sample(
            i,
            s,
            seed,
            size=size,
            supersample=supersample,
            deltas=deltas,
            edit_attributes=edit_attributes,
            cover=cover,
        )
        for i, s in enumerate(strata)
    ]
    return BenchSet(
        seed,
        size,
        supersample,
        tuple(float(d) for d in deltas),
        tuple(edit_attributes),
        (float(cover[0]), float(cover[1])),
        samples,
    )


# --------------------------------------------------------------------------------------------
# Folder format
# --------------------------------------------------------------------------------------------


def _edit_name(sid: str, attr: str, delta: float) -> str:
    return f"{sid}_{attr}_{delta:+g}"


def write_benchset(bench: BenchSet, folder: str | Path) -> Path:
    """Write PNGs and ``index.json`` into ``folder`` (created); returns the index path."""
    root = Path(folder)
    records = []
    try:
        for sub in ("images", "masks", "classes", "edits"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for s in bench.samples:
            sid = s.id
            Image.fromarray(s.image).save(root / "images" / f"{sid}.png")
            _save_mask(s.ood_mask, root / "masks" / f"{sid}.png")
            Image.fromarray(s.classes).save(root / "classes" / f"{sid}.png")
            edits = []
            for (attr, d), e in s.edits.items():
                name = _edit_name(sid, attr, d)
                Image.fromarray(e.image).save(root / "edits" / f"{name}.png")
                _save_mask(e.ood_mask, root / "edits" / f"{name}_mask.png")
                edits.append(
                    {
                        "attribute": attr,
                        "delta": d,
                        "image": f"edits/{name}.png",
                        "ood_mask": f"edits/{name}_mask.png",
                    }
                )
            records.append(
                {
                    "id": sid,
                    "index": s.index,
                    "stratum": s.stratum,
                    "z": s.z.tolist(),
                    "params": s.params,
                    "occluders": list(s.occluders),
                    "texture": s.texture,
                    "ood_fraction": s.ood_fraction,
                    "image": f"images/{sid}.png",
                    "ood_mask": f"masks/{sid}.png",
                    "classes": f"classes/{sid}.png",
                    "edits": edits,
                }
            )
        index = {
            "format": FORMAT,
            "version": VERSION,
            "generator": {
                "module": "dhr_cli.synthetic.benchset.make_benchset",
                "n": len(bench),
                "seed": bench.seed,
                "size": bench.size,
                "supersample": bench.supersample,
                "deltas": list(bench.deltas),
                "edit_attributes": list(bench.edit_attributes),
                "cover": list(bench.cover),
            },
            "strata": bench.counts(),
            "mask_convention": "ood_mask PNGs: 255 = out-of-domain, 0 = in-domain",
            "attributes": [
                {"name": a.name, "lo": a.lo, "hi": a.hi, "doc": a.doc} for a in ATTRIBUTES
            ],
            "classes": [
                {"id": c.id, "name": c.name, "true_ood": c.true_ood, "parsing_ood": c.parsing_ood}
                for c in C.CLASS_TABLE
            ],
            "samples": records,
        }
        path = root / "index.json"
        path.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write benchmark set to {root}: {e}") from e
    return path


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def _read_png(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except FileNotFoundError as e:
        raise InputMissing(f"benchmark file missing: {path}") from e
    except OSError as e:
        raise BadData(f"unreadable benchmark image {path}: {e}") from e


def load_benchset(folder: str | Path) -> BenchSet:
    """Read a folder written by :func:`write_benchset` (scenes are not restored)."""
    root = Path(folder)
    path = root / "index.json"
    if not path.is_file():
        raise InputMissing(f"no benchmark index at {path}", hint="create one with write_benchset")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise BadData(f"{path} is not a {FORMAT} v{VERSION} index")
        gen = index["generator"]
        samples = []
        for r in index["samples"]:
            z = np.asarray(r["z"], dtype=np.float64)
            if z.shape != (Z_DIM,):
                raise BadData(f"{path}: sample {r['id']} has z of shape {z.shape}")
            edits = {}
            for e in r["edits"]:
                key = (e["attribute"], float(e["delta"]))
                edits[key] = EditTruth(
                    key[0],
                    key[1],
                    _read_png(root / e["image"], "RGB"),
                    _read_png(root / e["ood_mask"], "L") > 127,
                )
            samples.append(
                BenchSample(
                    index=int(r["index"]),
                    stratum=r["stratum"],
                    z=z,
                    params=params_dict(z),
                    image=_read_png(root / r["image"], "RGB"),
                    ood_mask=_read_png(root / r["ood_mask"], "L") > 127,
                    classes=_read_png(root / r["classes"], "L"),
                    occluders=tuple(r["occluders"]),
                    texture=r["texture"],
                    edits=edits,
                )
            )
        return BenchSet(
            int(gen["seed"]),
            int(gen["size"]),
            int(gen["supersample"]),
            tuple(float(d) for d in gen["deltas"]),
            tuple(gen["edit_attributes"]),
            (float(gen["cover"][0]), float(gen["cover"][1])),
            samples,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BadData(f"malformed benchmark index {path}: {e!r}") from e

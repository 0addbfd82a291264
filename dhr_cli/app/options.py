"""The typed options of `dhr invert` / `dhr mask` (torch-free, so the CLI checks them before any
model loads). None means "the pack's or the method's default": each default lives in the pack
settings (`packs.PackSettings`) or the method's config (`method.refine.RefineConfig`,
`method.projector.ProjectorConfig`), never here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ParameterError

# FFHQ class groups accepted by the tau table (CelebAMask-HQ splits left/right parts)
TAU_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("l_eye", "r_eye"),
    "brows": ("l_brow", "r_brow"),
    "ears": ("l_ear", "r_ear"),
    "lips": ("u_lip", "l_lip"),
}


@dataclass(frozen=True)
class TauSpec:
    """Superpixel thresholds asked for, before they meet a pack's classes: one value for every
    class (`value`), or per class or class group over the pack's table (`per_class`, with
    `default` for the classes the table does not name)."""

    value: float | None = None
    per_class: Mapping[str, float] = field(default_factory=dict)
    default: float | None = None

    def table(
        self, class_names: Sequence[str], base: Mapping[str, float], base_default: float
    ) -> tuple[dict[str, float], float]:
        """(threshold per class name, threshold of the others) for a pack."""
        if self.value is not None:
            return {}, self.value
        table = dict(base)
        for name, v in self.per_class.items():
            names = TAU_GROUPS.get(name, (name,)) if name not in class_names else (name,)
            if any(c not in class_names for c in names):
                raise ParameterError(
                    f"{{tau}}: unknown class {name!r}", hint="classes: " + ", ".join(class_names)
                )
            for c in names:
                table[c] = v
        return table, base_default if self.default is None else self.default


@dataclass
class FaceOptions:
    """How faces are found and put back (the faces module's options)."""

    aligned: bool = False  # the photo is an aligned square crop (FFHQ / CelebA-HQ style)
    face: int | None = None
    all_faces: bool = False
    min_face: float = 48.0
    detector: str = "retinaface"
    fast: bool = False
    blend_radius: float = 32.0
    paste: bool = True
    format: str | None = None
    quality: int | None = None

    def detection_options(self) -> list[str]:
        """The face-finding options set away from their defaults (parameter names)."""
        default = FaceOptions()
        given = [
            ("face", self.face is not None),
            ("all_faces", self.all_faces),
            ("min_face", self.min_face != default.min_face),
            ("detector", self.detector != default.detector),
            ("fast", self.fast),
        ]
        return [name for name, on in given if on]


@dataclass
class EngineOptions:
    """Options of one `dhr invert` / `dhr mask` run (None = the pack's or method's default)."""

    method: str = "dhr"
    steps: int | None = None
    weight_steps: int | None = None
    layer: int | None = None
    lr_weight: float | None = None
    lr_feature: float | None = None
    work_res: int | None = None
    coarse_steps: int | None = None
    tau: TauSpec | None = None
    tau_quantile: float | None = None
    pivot: str = "w"
    pivot_steps: int | None = None
    mask_mode: str = "area"
    seed: int = 0
    faces: FaceOptions = field(default_factory=FaceOptions)

    def __post_init__(self) -> None:
        if self.tau is not None and self.tau_quantile is not None:
            # the quantile replaces every threshold: tau was silently ignored
            raise ParameterError(
                "{tau} and {tau_quantile} both set the thresholds", hint="give one of them"
            )

    @property
    def resegment(self) -> bool:
        """Segmentation options were given: a stored mask must not be reused."""
        return any(v is not None for v in (self.tau, self.tau_quantile, self.coarse_steps))

    def needs(self, *, segment: bool) -> dict[str, list[str]]:
        """The pack files a run needs (for `packs.require_files`): roles and LPIPS nets."""
        roles = ["generator", "encoder"]
        lpips = {"alex"}
        if segment:
            roles.append("parser")
            lpips.add("vgg")
        if self.method == "pti" and self.pivot == "w":
            lpips.add("vgg")
        return {"roles": roles, "lpips": sorted(lpips)}

    def unused_options(self) -> list[str]:
        """The options set away from their defaults that this method never reads (parameter
        names)."""
        m = self.method
        refines = m != "encoder"
        segments = m == "dhr"  # only DHR segments (and `dhr mask`, which runs as dhr)
        given = [
            ("steps", self.steps, refines),
            ("weight_steps", self.weight_steps, m == "dhr"),
            ("layer", self.layer, m in ("dhr", "feature")),
            ("lr_weight", self.lr_weight, m in ("dhr", "pti")),
            ("lr_feature", self.lr_feature, m in ("dhr", "feature")),
            ("work_res", self.work_res, refines),
            ("pivot", None if self.pivot == "w" else self.pivot, m == "pti"),
            ("pivot_steps", self.pivot_steps, m == "pti" and self.pivot == "w"),
            ("tau", self.tau, segments),
            ("tau_quantile", self.tau_quantile, segments),
            ("coarse_steps", self.coarse_steps, segments),
        ]
        return [name for name, value, used in given if value is not None and not used]

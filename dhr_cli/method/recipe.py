"""How a stored inversion is rendered: the typed contract between refinement, the project file
and every render (`render_stored`, edits, `dhr bench`).

A project file stores it as the JSON object of its ``invert`` step (with the step's other
parameters beside it); projects written before the recipe existed hold the same keys, so
`from_params` reads every format 1.x file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FeatureMask = Literal["in_domain", "none"]


@dataclass(frozen=True)
class RenderRecipe:
    """method: which refinement produced the result (encoder, pti, feature, dhr).
    layer: the layer whose feature is stored (None: no feature).
    feature_mask: "in_domain" mixes the stored feature with the generator's own by the stored
      mask (Eq. 4, DHR); "none" replaces it everywhere (feature modulation alone).
    steps_run: refinement steps actually run (PTI may stop early).
    crop_size: size of the aligned crop the result was fitted to (None: the generator's).
    identity_alignment: the input was an aligned crop itself (None: unknown, older projects).
    """

    method: str = "encoder"
    layer: int | None = None
    feature_mask: FeatureMask = "in_domain"
    steps_run: int = 0
    crop_size: int | None = None
    identity_alignment: bool | None = None

    _KEYS = ("method", "layer", "feature_mask", "steps_run", "crop_size", "identity_alignment")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> RenderRecipe:
        """The recipe in a project's ``invert`` parameters ({} or None: the encoder's code)."""
        p = params or {}
        layer = p.get("layer")
        crop = p.get("crop_size")
        identity = p.get("identity_alignment")
        return cls(
            method=str(p.get("method", "encoder")),
            layer=None if layer is None else int(layer),
            feature_mask="none" if p.get("feature_mask", "in_domain") == "none" else "in_domain",
            steps_run=int(p.get("steps_run", 0) or 0),
            crop_size=None if crop is None else int(crop),
            identity_alignment=None if identity is None else bool(identity),
        )

    def to_params(self) -> dict[str, Any]:
        """The keys a project stores (crop size and alignment only once known)."""
        out: dict[str, Any] = {
            "method": self.method,
            "layer": self.layer,
            "feature_mask": self.feature_mask,
            "steps_run": self.steps_run,
        }
        if self.crop_size is not None:
            out["crop_size"] = self.crop_size
        if self.identity_alignment is not None:
            out["identity_alignment"] = self.identity_alignment
        return out

"""Why a linear W direction cannot follow a saturating attribute (issue 4's side-effect bar).

The renderer maps a std-unit coordinate to an attribute through the normal CDF, and the age
cues start only at a third of the age range, so "age - 2" of a face that is already young
changes nothing. The generator's mapping learned that: the W path of the true edit,
``mapping(z with age moved by s)``, stops for young faces. A linear direction moves every
face by the same ``s * d`` and carries young faces past what the generator has seen.

Printed for each bar attribute (smile, age):
  cos             cosine between the shipped direction and the mean W displacement of the true
                  edit (finite differences of the mapping, 4000 faces): 1.0 means the shipped
                  direction already is the true edit's average, so no other linear direction
                  fits the true edits better on average
  path ratio      per face, |mapping(z + s e) - mapping(z)| / |s d| at s = -2 and +2: 1 where
                  the true edit moves W as far as the direction does, near 0 where the mapping
                  has saturated; shown for the youngest, middle and oldest third of the 50
                  held-out faces of the direction bars (by their start value of the attribute)
  shift           per third, the other attribute whose probe reading moves most on average
                  under the shipped direction at that s, and by how much (std-units)

    python benchmarks/direction_linearity.py
"""

from __future__ import annotations

import numpy as np
import torch

from dhr_cli.synthetic import attributes as A
from dhr_cli.synthetic import measure as M


@torch.no_grad()
def true_edit_w(g: torch.nn.Module, z: np.ndarray, attribute: str, s: float) -> torch.Tensor:
    """W of the true edit by ``s`` std-units of faces ``z`` (domain latents)."""
    z = M.true_edit_z(z, attribute, s)
    return g.mapping(torch.as_tensor(z, dtype=torch.float32)).double()


@torch.no_grad()
def read(g: torch.nn.Module, probe: torch.nn.Module, w: torch.Tensor) -> np.ndarray:
    """Probe readings [N, 27] of the generator's images of ``w``."""
    return probe(g(w.float())).numpy()


def main() -> None:
    torch.set_num_threads(2)
    pack = M.load_pack()
    g = pack.generator
    fit = np.random.default_rng(123).standard_normal((4000, g.style_dim))
    held = M.eval_latents(50, M.EVAL_SEED_DIRECTIONS, g.style_dim)
    for attribute in ("smile", "age"):
        d = pack.direction(attribute).double().reshape(1, -1)
        mean_step = (
            true_edit_w(g, fit, attribute, 0.5) - true_edit_w(g, fit, attribute, -0.5)
        ).mean(0)
        cos = float(torch.nn.functional.cosine_similarity(mean_step[None], d).item())
        print(f"{attribute}: cos(shipped direction, mean W step of the true edit) = {cos:.3f}")
        start = M.renderer_z(held)[:, A.ATTRIBUTE_INDEX[attribute]]
        thirds = np.array_split(np.argsort(start), 3)
        w0 = true_edit_w(g, held, attribute, 0.0)
        read0 = read(g, pack.probe, w0)
        others = [j for j in range(A.Z_DIM) if j != A.ATTRIBUTE_INDEX[attribute]]
        for s in (-2.0, 2.0):
            ratio = (
                (true_edit_w(g, held, attribute, s) - w0).norm(dim=1) / (abs(s) * d.norm())
            ).numpy()
            moved = (read(g, pack.probe, w0 + s * d) - read0)[:, others]
            print(f"  s={s:+g}:")
            for label, idx in zip(
                ("lowest third", "middle third", "highest third"), thirds, strict=True
            ):
                shift = moved[idx].mean(0)
                j = int(np.abs(shift).argmax())
                print(
                    f"    {label:<13}  path ratio {ratio[idx].mean():.2f}"
                    f"  shift {A.ATTRIBUTE_NAMES[others[j]]} {shift[j]:+.2f}"
                )


if __name__ == "__main__":
    main()

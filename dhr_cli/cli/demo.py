"""`dhr demo`: the whole chain offline on one synthetic photo."""

from pathlib import Path
from typing import Annotated

import typer

from .. import console
from ..runtime import seed_everything
from .options import device_str, finite, not_stdout, settings


def demo_cmd(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            callback=not_stdout,
            help="Folder for the demo's files (new, or an earlier demo's: its files are replaced).",
        ),
    ] = Path("dhr-demo"),
    smile: Annotated[
        float,
        typer.Option(
            "--smile",
            metavar="S",
            help="Strength of the smile edit (std-units of the renderer).",
            callback=finite,
        ),
    ] = 2.0,
) -> None:
    """Offline demo on the bundled synthetic faces: invert, edit the smile, compare with the truth.

    An occluded synthetic photo is inverted with DHR, its smile edited, and the edit compared with
    the true edit; demo.png shows all of it. The files go into dhr-demo/ in the current folder
    (-o DIR for another).
    """
    from ..demo import run_demo  # loads torch

    s = settings()
    seed_everything(s.seed)
    result = run_demo(
        output,
        smile=smile,
        device=device_str(),
        models_dir=s.models_dir,
        offline=s.offline or None,
        progress=not s.quiet and not s.json,
    )
    if s.json:
        console.print_json(result)
        return

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    console.log.info(
        f"reconstruction MSE {fmt(result['recon_mse'])}; smile edit vs the true edit: "
        f"MSE in-domain {fmt(result['edit_mse_in_domain'])}, out-of-domain "
        f"{fmt(result['edit_mse_out_of_domain'])}; mask IoU {fmt(result['mask_iou'])}"
    )
    for key in ("sheet", "photo", "project", "mask_overlay", "recon", "edit", "true_edit"):
        console.print_data(str(result[key]))
    console.log.info(f"the demo's files are in {output.resolve()}")

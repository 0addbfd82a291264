"""`dhr invert` and `dhr mask`: one engine runner for both (inputs checked, pack loaded, models
required, the batch run and reported)."""

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import console, packs
from ..app.batch import run_batch
from ..app.naming import output_collisions, output_paths
from ..app.options import EngineOptions, FaceOptions
from ..errors import UsageError, not_found
from ..faces.image_io import IMAGE_SUFFIXES, check_image, output_format, unused_quality
from ..files import ensure_folder
from ..project import SUFFIX
from ..runtime import seed_everything
from . import complete
from .args import flag_for, parse_tau
from .checks import check_choice, pack_for, shard_of, without_own_outputs
from .options import (
    ADVANCED,
    ENGINE,
    FACES,
    AlignedOpt,
    AllFacesOpt,
    BlendRadiusOpt,
    CoarseStepsOpt,
    DetectorOpt,
    FaceOpt,
    FastOpt,
    MethodOpt,
    MinFaceOpt,
    OutputOpt,
    PackOpt,
    QualityOpt,
    ShardCountOpt,
    ShardOpt,
    SkipOpt,
    TauOpt,
    TauQuantileOpt,
    device_str,
    format_opt,
    settings,
)


def invert_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos (or their project files) to invert.", show_default=False),
    ] = None,
    method: MethodOpt = "dhr",
    pack: PackOpt = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            min=0,
            metavar="N",
            help="Refinement steps (dhr/feature 100, pti 350).",
            rich_help_panel=ENGINE,
            show_default=False,
        ),
    ] = None,
    tau: TauOpt = None,
    output: OutputOpt = None,
    face: FaceOpt = None,
    aligned: AlignedOpt = False,
    all_faces: AllFacesOpt = False,
    no_paste: Annotated[
        bool,
        typer.Option(
            "--no-paste",
            help="Write the aligned reconstruction instead of pasting it back.",
            rich_help_panel=FACES,
        ),
    ] = False,
    fmt: format_opt("the reconstruction") = None,
    quality: QualityOpt = None,
    skip_existing: SkipOpt = False,
    shard: ShardOpt = None,
    shard_count: ShardCountOpt = None,
    weight_steps: Annotated[
        int | None,
        typer.Option(
            "--weight-steps",
            metavar="N",
            min=0,
            help="DHR: steps that update the generator weights (default 50, or half of --steps).",
            rich_help_panel=ADVANCED,
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            metavar="N",
            min=0,
            help="Feature layer (ffhq 11 = the 128x128 block output).",
            rich_help_panel=ADVANCED,
            show_default=False,
        ),
    ] = None,
    lr_weight: Annotated[
        float | None,
        typer.Option(
            "--lr-weight",
            metavar="LR",
            min=0.0,
            help="Learning rate of the generator weights (dhr 1.5e-3, pti 3e-4).",
            rich_help_panel=ADVANCED,
            show_default=False,
        ),
    ] = None,
    lr_feature: Annotated[
        float | None,
        typer.Option(
            "--lr-feature",
            metavar="LR",
            min=0.0,
            help="Learning rate of the feature (9e-2).",
            rich_help_panel=ADVANCED,
            show_default=False,
        ),
    ] = None,
    work_res: Annotated[
        int | None,
        typer.Option(
            "--work-res",
            metavar="PX",
            help="Refine at this resolution through the generator's early exit (fast CPU mode, e.g. 256).",
            rich_help_panel=ADVANCED,
            show_default=False,
        ),
    ] = None,
    tau_quantile: TauQuantileOpt = None,
    coarse_steps: CoarseStepsOpt = None,
    pivot: Annotated[
        str,
        typer.Option(
            "--pivot",
            metavar="NAME",
            autocompletion=complete.pivots,
            help="PTI pivot: w (450-step projection) or e4e (the encoder's W+).",
            rich_help_panel=ADVANCED,
        ),
    ] = "w",
    pivot_steps: Annotated[
        int | None,
        typer.Option(
            "--pivot-steps",
            metavar="N",
            min=1,
            help="PTI: W-projection steps of the pivot (450).",
            rich_help_panel=ADVANCED,
            show_default=False,
        ),
    ] = None,
    min_face: MinFaceOpt = 48.0,
    detector: DetectorOpt = "retinaface",
    fast: FastOpt = False,
    blend_radius: BlendRadiusOpt = 32.0,
) -> None:
    """Align, embed, segment and refine: write a project file (<photo>.dhr) and the reconstruction.

    The project also records the in-domain mask (stored by `dhr mask`, reused if present),
    the refined feature and generator weight delta; `dhr edit` reads it.
    """
    if not inputs:
        raise UsageError("give at least one photo", hint="dhr invert photo.jpg")
    check_choice("--method", method, ("dhr", "pti", "feature", "encoder"))
    check_choice("--pivot", pivot, ("w", "e4e"))
    check_choice("--detector", detector, ("retinaface", "mtcnn"))
    if all_faces and face is not None:
        raise UsageError("give --face N or --all-faces, not both")
    shard_kn = shard_of(shard, shard_count)
    faces = FaceOptions(
        aligned=aligned,
        face=face,
        all_faces=all_faces,
        min_face=min_face,
        detector=detector,
        fast=fast,
        blend_radius=blend_radius,
        paste=not no_paste,
        format=fmt,
        quality=quality,
    )
    if fmt is not None:
        output_format("x", fmt)  # unknown formats fail before any work
    engine_options = dict(
        method=method,
        steps=steps,
        weight_steps=weight_steps,
        layer=layer,
        lr_weight=lr_weight,
        lr_feature=lr_feature,
        work_res=work_res,
        coarse_steps=coarse_steps,
        tau=parse_tau(tau),
        tau_quantile=tau_quantile,
        pivot=pivot,
        pivot_steps=pivot_steps,
        faces=faces,
    )
    run_engine("invert", inputs, pack, engine_options, output, skip_existing, shard_kn)


def mask_cmd(
    inputs: Annotated[
        list[Path] | None, typer.Argument(help="Photos or project files.", show_default=False)
    ] = None,
    from_mask: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="FILE",
            help="Import a hand-painted mask instead (white = in-domain/editable, black = kept); "
            "square = aligned crop, or the photo's size.",
            rich_help_panel=ENGINE,
            show_default=False,
        ),
    ] = None,
    pack: PackOpt = None,
    tau: TauOpt = None,
    output: OutputOpt = None,
    face: FaceOpt = None,
    skip_existing: SkipOpt = False,
    shard: ShardOpt = None,
    shard_count: ShardCountOpt = None,
    tau_quantile: TauQuantileOpt = None,
    coarse_steps: CoarseStepsOpt = None,
    min_face: MinFaceOpt = 48.0,
    detector: DetectorOpt = "retinaface",
    fast: FastOpt = False,
    aligned: AlignedOpt = False,
) -> None:
    """Domain-Specific Segmentation: store the in-domain mask in the project, write an overlay.

    The overlay is <stem>.mask.png: red = out-of-domain, kept as in the photo.
    """
    if not inputs:
        raise UsageError("give at least one photo or project file", hint="dhr mask photo.jpg")
    check_choice("--detector", detector, ("retinaface", "mtcnn"))
    if from_mask is not None:
        if len(inputs) > 1:
            raise UsageError("--from imports one mask for one photo")
        if not from_mask.is_file():
            raise not_found(from_mask, "mask file")
    shard_kn = shard_of(shard, shard_count)
    faces = FaceOptions(aligned=aligned, face=face, min_face=min_face, detector=detector, fast=fast)
    engine_options = dict(
        method="dhr",
        tau=parse_tau(tau),
        tau_quantile=tau_quantile,
        coarse_steps=coarse_steps,
        faces=faces,
    )
    run_engine("mask", inputs, pack, engine_options, output, skip_existing, shard_kn, from_mask)


def run_engine(
    which: str,
    inputs: list[Path],
    pack: str | None,
    engine_options: dict[str, Any],
    output: Path | None,
    skip_existing: bool,
    shard: tuple[int, int] | None,
    from_mask: Path | None = None,
) -> None:
    """Check the inputs, outputs, pack and options (without torch: a usage error or a missing
    input answers at once), then load the pack, require its files and run the batch."""
    s = settings()
    inputs = without_own_outputs(inputs)
    many = len(inputs) > 1
    check_inputs_and_output(which, inputs, output, many=many)
    pack_name = pack_for(pack, inputs)
    pack_settings = packs.pack_settings(pack_name)  # a pack folder's description is read now
    options = EngineOptions(seed=s.seed, **engine_options)
    if options.tau is not None:  # a class the pack's parser does not have fails now
        options.tau.table(pack_settings.class_names, pack_settings.tau, pack_settings.tau_default)
    warn_unused(which, options, pack_settings, pack_name, inputs)
    segment = (
        which == "mask" and from_mask is None or (which == "invert" and options.method == "dhr")
    )
    need = options.needs(segment=segment)
    f = options.faces
    # every file the run needs, before torch: offline, a missing model answers at once
    packs.require_files(
        pack_settings,
        need["roles"],
        lpips=need["lpips"],
        detector=None if f.aligned else f.detector,
        fast=f.fast,
        models_dir=s.models_dir,
        offline=s.offline or None,
    )

    # the networks from here on (torch)
    from ..app.engine import Engine, console_progress
    from ..app.invert import invert_photo, mask_photo

    seed_everything(s.seed)
    the_pack = packs.load_pack(
        pack_name, device=device_str(), models_dir=s.models_dir, offline=s.offline or None
    )
    packs.apply_cpu_threads(the_pack)
    show = not s.quiet and not s.json
    engine = Engine(the_pack, options, progress=console_progress if show else None)
    detector = None if f.aligned else f.detector
    the_pack.require(need["roles"], lpips=need["lpips"], detector=detector, fast=f.fast)
    if which == "invert":

        def work(path: Path) -> dict[str, Any]:
            return invert_photo(engine, path, output=output, many=many, skip_existing=skip_existing)
    else:

        def work(path: Path) -> dict[str, Any]:
            return mask_photo(
                engine,
                path,
                output=output,
                many=many,
                from_mask=from_mask,
                skip_existing=skip_existing,
            )

    console.log.debug(f"pack {pack_name} on {the_pack.device}: {the_pack.describe()}")
    clashes = output_collisions(inputs, output) if many else {}
    result = run_batch(inputs, work, shard=shard, label=which, clashes=clashes)
    report_batch(result, which)


def check_inputs_and_output(
    which: str, inputs: list[Path], output: Path | None, many: bool
) -> None:
    """A single input that is missing or no image, and an -o that cannot be written or is no
    project file or folder, fail before any model loads or downloads."""
    if len(inputs) == 1 and not inputs[0].exists():
        raise not_found(inputs[0])
    if output is not None and many and output.suffix == SUFFIX:
        raise UsageError("-o FILE.dhr works with one input; give a folder for several")
    if output is not None and not output.is_dir() and output.suffix.lower() in IMAGE_SUFFIXES:
        # -o is a project file or a folder here; a folder named x.png is never what was meant
        raise UsageError(
            f"-o {output}: {which} writes a project file (FILE.dhr) or into a folder",
            hint=f"{which} names its images after the photo; `dhr edit -o FILE` takes an image",
        )
    if len(inputs) == 1 and inputs[0].suffix != SUFFIX:
        check_image(inputs[0])
    if output is not None:  # an unwritable -o fails now, not after the first photo's work
        ensure_folder(output_paths(inputs[0], output, many=many, fmt_ext=".png").project)


def warn_unused(
    which: str, options: EngineOptions, pack_settings: Any, pack_name: str, inputs: list[Path]
) -> None:
    """Options given that this run will not read: say so, but go on (a loop over methods with
    one set of options, `--face 2` with a pack of aligned crops, --quality with PNG outputs)."""
    unused = [flag_for(name) for name in options.unused_options()]
    if unused:
        console.log.warn(f"{', '.join(unused)}: not used by --method {options.method}")
    f = options.faces
    no_detection = pack_settings.aligned_input or f.aligned
    ignored = [flag_for(n) for n in f.detection_options()] if no_detection else []
    if ignored:  # `--face 2` that silently edits the only face would be a surprise
        where = f"with the {pack_name} pack" if pack_settings.aligned_input else "with --aligned"
        console.log.warn(
            f"{', '.join(ignored)}: not used {where} "
            "(the images are aligned crops of one face; none is detected)"
        )
    if which == "invert" and (warning := unused_quality(f.quality, inputs, f.format)):
        console.log.warn(warning)


def report_batch(result: Any, label: str) -> None:
    """What a batch of invert/mask did: files on stdout (or JSON), metrics on stderr."""
    s = settings()
    if s.json:
        console.print_json(result.to_json())
    else:
        for rec in result.done:
            line = [rec.get("project", "")]
            for key in ("recon", "mask_overlay"):
                if rec.get(key):
                    line.append(rec[key])
            faces = rec.get("faces") or []
            if faces and faces[0].get("metrics"):
                m = faces[0]["metrics"]
                t = faces[0]["times"].get("total")
                console.log.info(
                    f"{rec['input']}: {label} mse {m['mse']:.4f}  lpips {m['lpips']:.4f}  {t:.1f} s"
                )
            elif rec.get("in_domain_fraction") is not None:
                console.log.info(
                    f"{rec['input']}: in-domain {100 * rec['in_domain_fraction']:.1f}% "
                    f"({rec.get('mask_source')})"
                )
            console.print_data("  ".join(line))
        for rec in result.skipped:
            console.log.info(f"{rec['input']}: skipped (outputs exist)")
    result.raise_for_failures()

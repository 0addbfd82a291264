"""`dhr edit`: semantic edits of inverted photos, sweeps, and `--list` of a pack's directions."""

import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image
from rich.table import Table

from .. import console, packs
from ..app.batch import run_batch, shard_items
from ..app.catalog import check_direction_name, listing
from ..app.naming import refuse_overwriting
from ..app.projects import latest_project
from ..app.request import EditRequest
from ..errors import DhrError, InputMissing, UsageError, not_found
from ..faces.image_io import output_format, save_image
from ..faces.sheet import labelled_sheet, sheet_path, sweep_labels
from ..project import SUFFIX, photo_name_of, project_path_for, read_metadata
from . import complete
from .args import (
    parse_direction_arg,
    parse_ganspace,
    parse_layers,
    parse_named,
    parse_sweep,
)
from .checks import shard_of, without_own_outputs
from .options import (
    ADVANCED,
    EDITS,
    ENGINE,
    FACES,
    BlendRadiusOpt,
    QualityOpt,
    ShardCountOpt,
    ShardOpt,
    SkipOpt,
    device_str,
    finite,
    format_opt,
    not_stdout,
    settings,
)


def strength_opt(name: str, what: str) -> Any:
    return Annotated[
        float | None,
        typer.Option(
            f"--{name}",
            metavar="S",
            callback=finite,
            help=f"{what} (strength; ffhq: distance in W along the unit InterFaceGAN direction, "
            "synthetic: std-units of the attribute).",
            rich_help_panel=EDITS,
            show_default=False,
        ),
    ]


def edit_cmd(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Photos or project files (default: the project most recently written by "
            "`dhr invert` in this folder).",
            show_default=False,
        ),
    ] = None,
    smile: strength_opt("smile", "Smile") = None,
    age: strength_opt("age", "Age") = None,
    pose: strength_opt("pose", "Head pose (yaw)") = None,
    edit: Annotated[
        list[str] | None,
        typer.Option(
            "--edit",
            "-e",
            metavar="NAME=S",
            autocompletion=complete.direction_edits,
            help="Any direction of the project's pack: NAME=STRENGTH (repeatable; see --list).",
            rich_help_panel=EDITS,
            show_default=False,
        ),
    ] = None,
    ganspace: Annotated[
        list[str] | None,
        typer.Option(
            "--ganspace",
            metavar="SPEC",
            autocompletion=complete.ganspace_presets,
            help="GANSpace edit (ffhq): IDX:START:END:STRENGTH, or a preset eyes, beard, lip "
            "[:STRENGTH] (repeatable).",
            rich_help_panel=EDITS,
            show_default=False,
        ),
    ] = None,
    direction: Annotated[
        list[str] | None,
        typer.Option(
            "--direction",
            metavar="FILE[:S]",
            help="Your own direction FILE[:STRENGTH] (.pt, .npy or .safetensors holding D, 1 x D "
            "or n_latent x D values; strength 1 by default; repeatable).",
            rich_help_panel=EDITS,
            show_default=False,
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            "--layers",
            metavar="A:B",
            help="Apply the direction edits to W+ rows A..B-1 only (A:B).",
            rich_help_panel=EDITS,
            show_default=False,
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            "--sweep",
            metavar="NAME=A:B:N",
            autocompletion=complete.direction_edits,
            help="Write a strip of N images: NAME=START:STOP:N (e.g. smile=-3:3:7).",
            rich_help_panel=EDITS,
            show_default=False,
        ),
    ] = None,
    frames: Annotated[
        bool,
        typer.Option(
            "--frames", help="With --sweep: also write each frame.", rich_help_panel=EDITS
        ),
    ] = False,
    list_directions: Annotated[
        bool,
        typer.Option(
            "--list",
            help="List the directions the project's pack offers (names, shapes, units, source).",
            rich_help_panel=EDITS,
        ),
    ] = False,
    pack: Annotated[
        str | None,
        typer.Option(
            "--pack",
            metavar="PACK",
            autocompletion=complete.pack_names,
            help="Expect projects of this pack (ffhq, synthetic or a pack folder); with --list: "
            "list its directions.",
            rich_help_panel=ENGINE,
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save",
            help="Record the edit in the project's history (the project is otherwise never changed).",
            rich_help_panel=FACES,
        ),
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            callback=not_stdout,
            help="Output FILE (one input) or folder DIR/ (default: <stem>.<edit>.<ext> beside the project file).",
            rich_help_panel=FACES,
            show_default=False,
        ),
    ] = None,
    no_paste: Annotated[
        bool,
        typer.Option(
            "--no-paste",
            help="Write the aligned edited face instead of pasting it back.",
            rich_help_panel=FACES,
        ),
    ] = False,
    fmt: format_opt("the output") = None,
    quality: QualityOpt = None,
    skip_existing: SkipOpt = False,
    shard: ShardOpt = None,
    shard_count: ShardCountOpt = None,
    keep_ood: Annotated[
        bool,
        typer.Option(
            "--keep-ood/--no-keep-ood",
            help="DHR projects: keep the out-of-domain pixels exactly as reconstructed "
            "(--no-keep-ood: hold only the out-of-domain feature, the paper's Eq. 4).",
            rich_help_panel=ADVANCED,
        ),
    ] = True,
    blend_radius: BlendRadiusOpt = 32.0,
) -> None:
    """Apply semantic edits (smile, age, pose, ...) to an inverted photo and paste the face back.

    The face is rendered through the refined generator with the stored out-of-domain feature,
    so hats, hands, earrings and backgrounds stay as they were.

    Examples: `dhr edit --smile 1.5` (the newest project here), `dhr edit photo.jpg --age -1`,
    `dhr edit photo.jpg --sweep smile=-3:3:7 --frames`, `dhr edit --list`.
    """
    s = settings()
    if pack is not None:
        packs.check_pack_name(pack)
    named = [(n, v) for n, v in (("smile", smile), ("age", age), ("pose", pose)) if v is not None]
    named += [parse_named(e) for e in edit or []]
    request = EditRequest(
        named=named,
        ganspace=[parse_ganspace(g) for g in ganspace or []],
        directions=[parse_direction_arg(d) for d in direction or []],
        layers=parse_layers(layers),
        sweep=parse_sweep(sweep),
    )
    if frames and request.sweep is None:
        raise UsageError("--frames goes with --sweep")
    inputs = without_own_outputs(list(inputs or []))
    if list_directions:
        edit_list(inputs, pack)
        return
    if request.empty:
        raise UsageError(
            "nothing to edit",
            hint="give an edit, e.g. --smile 1.5, --edit NAME=S or --ganspace eyes (see --list)",
        )
    shard_kn = shard_of(shard, shard_count)
    if fmt is not None:
        output_format("x", fmt)  # unknown formats fail before any work
    if len(inputs) == 1:
        check_edit_input(inputs[0], output)
    if not inputs:
        found = latest_project()  # none here: exit 3 at once
        console.log.info(f"editing {found} (the newest `dhr invert` project in this folder)")
        inputs = [found]
    check_names(request, inputs, pack)

    # the networks from here on (torch)
    from ..app.edit import EditSession

    session = EditSession(
        request,
        output=output,
        many=len(inputs) > 1,
        pack_name=pack,
        device=device_str(),
        models_dir=s.models_dir,
        offline=s.offline or None,
        frames=frames,
        save=save,
        skip_existing=skip_existing,
        paste=not no_paste,
        keep_out_of_domain=keep_ood,
        blend_radius=blend_radius,
        format=fmt,
        quality=quality,
    )
    session.check_output()
    for warning in session.output_warnings(inputs):
        console.log.warn(warning)
    session.prepare(shard_items(inputs, shard_kn))
    clashes = session.clashes(inputs)
    result = run_batch(inputs, session.edit_input, shard=shard_kn, label="edit", clashes=clashes)
    for rec in result.done:
        if rec.get("strip"):
            try:
                write_sweep_sheet(rec)
            except (DhrError, OSError) as e:  # the strip itself is written: say so, go on
                console.log.warn(f"{rec['strip']}: no labelled sheet written ({e})")
    if s.json:
        console.print_json(result.to_json())
    else:
        for rec in result.done:
            what = ", ".join(f"{e['name']} {e['strength']:+g}" for e in rec.get("edits", []))
            if rec.get("sweep"):
                sw = rec["sweep"]
                what = f"{sw['name']} sweep {sw['values'][0]:+g}..{sw['values'][-1]:+g}" + (
                    f" with {what}" if what else ""
                )
            console.log.info(f"{rec['input']}: {what or 'no change'} ({rec['method']} project)")
            for path in rec["outputs"]:
                console.print_data(path)
        for rec in result.skipped:
            console.log.info(f"{rec['input']}: skipped (outputs exist)")
    result.raise_for_failures()


def write_sweep_sheet(rec: dict[str, Any]) -> None:
    """Beside a sweep's strip, the same strip with each frame's strength written under it
    (`<strip>.sheet.png`); the record gets it as "sheet" and among its outputs."""
    strip = Path(rec["strip"])
    with Image.open(strip) as im:
        pixels = np.asarray(im.convert("RGB"))
    sweep = rec["sweep"]
    path = sheet_path(strip)
    sheet = labelled_sheet(pixels, sweep_labels(sweep["name"], sweep["values"]))
    save_image(path, sheet, format="PNG")
    rec["sheet"] = str(path)
    outputs = rec["outputs"]
    outputs.insert(outputs.index(str(strip)) + 1, str(path))


def check_edit_input(arg: Path, output: str | None) -> None:
    """One input, checked before any model loads: it (or, for a photo moved away, its project)
    must exist, and -o FILE must not name the photo or its project (it would replace it)."""
    project = project_path_for(arg)
    if not arg.exists() and not project.exists():
        raise not_found(arg, "project file" if arg.suffix == SUFFIX else "")
    if output is not None and not output.endswith(("/", os.sep)) and not Path(output).is_dir():
        photo = project.with_name(photo_name_of(project))
        refuse_overwriting([Path(output)], [arg, project, photo])


def check_names(request: EditRequest, inputs: list[Path], pack: str | None) -> None:
    """Every named edit must be a direction (or GANSpace preset) of each input's pack: checked
    from the packs' descriptions, before any model loads. Unreadable inputs are left to the
    batch, which reports them per input."""
    packs_used: list[str] = []
    for arg in inputs:
        try:
            name = read_metadata(project_path_for(arg)).get("pack") or pack or "ffhq"
        except DhrError:
            continue
        if name not in packs_used and (pack is None or name == pack):
            packs_used.append(name)
    wanted = [n for n, _ in request.named] + ([request.sweep.name] if request.sweep else [])
    for name in packs_used:
        try:
            settings_ = packs.pack_settings(name)
        except DhrError:
            continue  # an unknown or broken pack is the input's own error
        presets = settings_.ganspace.presets if settings_.ganspace is not None else {}
        # a sweep may also name a --direction file by its stem
        own = {Path(f).stem for f, _ in request.directions}
        for n in wanted:
            if n not in presets and n not in own:
                check_direction_name(settings_, n)


def edit_list(inputs: list[Path], pack: str | None) -> None:
    """`dhr edit --list`: the directions of the pack of the given (or newest) project, from
    its description (nothing loads)."""
    s = settings()
    names: list[str] = []
    if inputs:
        meta = read_metadata(project_path_for(inputs[0]))
        names = [meta.get("pack") or pack or "ffhq"]
    elif pack is not None:
        names = [pack]
    else:
        try:
            names = [read_metadata(latest_project()).get("pack") or "ffhq"]
        except InputMissing:
            names = ["ffhq", "synthetic"]
    listings = [listing(packs.pack_settings(n), s.models_dir) for n in names]
    if settings().json:
        console.print_json({"packs": listings})
        return
    for lst in listings:
        table = Table(
            title=f"{lst['pack']} pack ({lst['n_latent']} W+ rows)",
            box=None,
            pad_edge=False,
            header_style="bold",
            title_justify="left",
        )
        for col in ("name", "option", "shape"):
            table.add_column(col, no_wrap=True)
        for col in ("strength unit", "source"):
            table.add_column(col, overflow="fold")
        for d in lst["directions"]:
            table.add_row(
                d["name"],
                d["option"],
                "x".join(map(str, d["shape"])),
                d["unit"],
                d["source"] + ("" if d.get("cached", True) else " (not downloaded yet)"),
            )
        console.print_renderable(table)
        for key in ("ganspace", "user_directions"):
            if lst.get(key):
                console.print_data(f"  {lst[key]}")

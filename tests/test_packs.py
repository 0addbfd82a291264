"""Packs are data: the built-in descriptions, and a pack folder of one's own (`--pack DIR`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dhr_cli.cli import main
from dhr_cli.errors import BadData
from dhr_cli.packs import pack_settings
from dhr_cli.packs.stand_in import write_random_pack
from dhr_cli.project import Project

FAST = ["--steps", "2", "--coarse-steps", "2"]


def test_builtin_descriptions_match_their_networks() -> None:
    from dhr_cli.nets.parsing import CELEBAMASK_HQ_CLASSES, DHR_OUT_OF_DOMAIN_CLASSES
    from dhr_cli.synthetic.classes import CLASS_NAMES

    ffhq, synthetic = pack_settings("ffhq"), pack_settings("synthetic")
    assert ffhq.class_names == tuple(CELEBAMASK_HQ_CLASSES)
    assert ffhq.ood_classes == tuple(DHR_OUT_OF_DOMAIN_CLASSES)
    assert synthetic.class_names == tuple(CLASS_NAMES)
    assert list(ffhq.directions) == ["smile", "age", "pose"] and ffhq.ganspace is not None
    assert synthetic.ganspace is None and {"smile", "age"} <= set(synthetic.directions)
    # the bundled calibration is applied over the description's fallbacks
    assert synthetic.provenance.startswith("calibrated")


def test_reading_a_pack_needs_no_torch() -> None:
    code = (
        "import sys; from dhr_cli.packs import pack_settings, check_pack_name; "
        "pack_settings('ffhq'); pack_settings('synthetic'); check_pack_name('ffhq'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_pack(tmp_path_factory.mktemp("packs") / "tiny-pack", seed=3)


@pytest.fixture
def face(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_own_pack_inverts_and_edits_through_the_cli(tiny: Path, face: Path) -> None:
    assert main(["invert", str(face), "--pack", str(tiny), *FAST]) == 0
    project = Project.load(face.with_name("face.png.dhr"))
    assert project.pack == str(tiny.resolve())
    assert project.wplus.shape == (1, 10, 64) and project.recipe.method == "dhr"
    # the project records the pack's files with their sha256
    assert str(tiny.resolve() / "generator.pt") in project.models
    # edits follow the project's pack: a --direction file, and the pack's own named direction
    assert main(["edit", str(face), "--direction", f"{tiny / 'smile.npy'}:2"]) == 0
    assert main(["edit", str(face), "--smile", "1"]) == 0
    for name in ("face.smile+2.png", "face.smile+1.png"):
        out = np.asarray(Image.open(face.with_name(name)))
        assert out.shape == (64, 64, 3)


def test_a_changed_pack_is_refused(tmp_path: Path, face: Path, capsys) -> None:
    pack = write_random_pack(tmp_path / "pack", seed=4)
    assert main(["invert", str(face), "--pack", str(pack), "--method", "encoder"]) == 0
    state = torch.load(pack / "generator.pt", weights_only=True)
    state["g_ema"]["conv1.conv.weight"] += 0.1
    torch.save(state, pack / "generator.pt")
    capsys.readouterr()
    assert main(["edit", str(face), "--smile", "1"]) == 4
    assert "has changed since the project was made" in capsys.readouterr().err
    assert not face.with_name("face.smile+1.png").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d, f: (f / "pack.json").write_text("{not json"), "unreadable"),
        (lambda d, f: d["files"].update(generator="missing.pt"), "missing.pt is missing"),
        (lambda d, f: d["files"].update(generator="../outside.pt"), "outside the pack"),
        (lambda d, f: d["settings"].update(generator_size="big"), "must be int"),
        (lambda d, f: d["settings"].update(colour=1), "unknown setting 'colour'"),
        (lambda d, f: d.update(format="other"), "not a pack description"),
        (lambda d, f: d["settings"].update(generator_size=128), "generator is 64 px"),
    ],
)
def test_a_broken_pack_is_bad_data_and_nothing_is_written(
    tmp_path: Path, tiny: Path, face: Path, capsys, change, message: str
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    data = json.loads((folder / "pack.json").read_text())
    (folder / "pack.json").write_text(json.dumps(data))  # the change may replace the file
    change(data, folder)
    if not (folder / "pack.json").read_text().startswith("{not"):
        (folder / "pack.json").write_text(json.dumps(data))
    before = sorted(p.name for p in face.parent.iterdir())
    assert main(["invert", str(face), "--pack", str(folder), *FAST]) == 4
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in face.parent.iterdir()) == before


def test_a_folder_without_description_is_not_a_pack(tmp_path: Path) -> None:
    with pytest.raises(BadData, match="holds no pack.json"):
        pack_settings(str(tmp_path))


def test_the_synthetic_pack_refuses_a_real_photo(tmp_path: Path, capsys) -> None:
    """The synthetic pack only means something on 64-px renders of its own domain: a real photo
    (skimage's astronaut, square) is refused with a pointer to the ffhq pack, before any work."""
    from skimage.data import astronaut

    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    assert main(["invert", str(photo), "--pack", "synthetic"]) == 4
    err = capsys.readouterr().err
    assert "takes 64 x 64 renders of its own domain, got 512 x 512" in err
    assert "--pack ffhq" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.png"]


def test_release_drops_only_what_can_be_built_again(tiny: Path) -> None:
    # Pack.release frees an idle network (the engine drops e4e during refinement on CPU):
    # file-backed and builder-made networks come back on next use, ready-made ones stay
    from dhr_cli.packs.pack import Pack

    settings = pack_settings(str(tiny))
    from_files = Pack(settings)
    first = from_files.encoder
    assert from_files.release("encoder")
    again = from_files.encoder
    assert again is not first
    for a, b in zip(first.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not from_files.release("lpips_alex")  # not a pack file: nothing to rebuild from
    assert not from_files.release("nothing")

    built: list[int] = []

    def build() -> torch.nn.Module:
        built.append(1)
        return torch.nn.Linear(1, 1)

    given = torch.nn.Linear(2, 2)
    pack = Pack(settings, modules={"parser": given}, builders={"encoder": build})
    assert isinstance(pack.encoder, torch.nn.Linear)
    assert pack.release("encoder") and not pack.release("encoder")
    assert isinstance(pack.encoder, torch.nn.Linear)
    assert len(built) == 2
    assert not pack.release("parser") and pack.parser is given

"""`dhr edit` as a user runs it: after `dhr invert` (bundled synthetic pack, few steps), in
process through `main` and as a shell loop in a subprocess; outputs, batches and the
documented exit codes for bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr_cli.cli import main
from dhr_cli.project import Project

FAST = ["--pack", "synthetic", "--steps", "2", "--coarse-steps", "2"]


@pytest.fixture(scope="module")
def inverted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two synthetic photos inverted by `dhr invert` (read-only for tests:
    tests that write copy it first)."""
    from dhr_cli.synthetic.benchset import make_sample

    folder = tmp_path_factory.mktemp("inverted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DHR_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("DHR_OFFLINE", "1")
        for i in range(2):
            Image.fromarray(make_sample(i, "occluded", 77).image).save(folder / f"f{i}.png")
        argv = ["invert", str(folder / "f0.png"), str(folder / "f1.png"), *FAST, "--quiet"]
        assert main(argv) == 0
    return folder


@pytest.fixture
def work(inverted: Path, tmp_path: Path) -> Path:
    """A private copy of the inverted folder."""
    dest = tmp_path / "work"
    shutil.copytree(inverted, dest)
    return dest


def test_zero_edit_is_the_reconstruction_and_the_project_is_untouched(work: Path) -> None:
    project = work / "f0.png.dhr"
    before = project.read_bytes()
    assert main(["edit", str(work / "f0.png"), "--smile", "0", "--age", "0", "--quiet"]) == 0
    out = work / "f0.smile+0_age+0.png"
    assert out.read_bytes() == (work / "f0.recon.png").read_bytes()
    assert project.read_bytes() == before
    # a real edit changes the face, and still leaves the project alone
    assert main(["edit", str(project), "--smile", "1.5", "--age", "-1", "--quiet"]) == 0
    edited = np.asarray(Image.open(work / "f0.smile+1.5_age-1.png")).astype(int)
    recon = np.asarray(Image.open(work / "f0.recon.png")).astype(int)
    assert edited.shape == recon.shape and np.abs(edited - recon).mean() > 0.1
    assert project.read_bytes() == before


def test_keep_ood_holds_the_out_of_domain_pixels(work: Path) -> None:
    """Default: pixels the project marks out-of-domain keep the reconstruction exactly;
    --no-keep-ood (the paper's feature hold alone) lets them follow the edit."""
    p = Project.load(work / "f0.png.dhr")
    ood = p.mask[0, 0].numpy() < 0.5
    assert ood.any()
    recon = np.asarray(Image.open(work / "f0.recon.png")).astype(int)
    assert main(["edit", str(work / "f0.png"), "--smile", "2", "-o", str(work / "k.png")]) == 0
    argv = ["edit", str(work / "f0.png"), "--smile", "2", "--no-keep-ood", "-o"]
    assert main([*argv, str(work / "e.png")]) == 0
    kept = np.asarray(Image.open(work / "k.png")).astype(int)
    free = np.asarray(Image.open(work / "e.png")).astype(int)
    assert np.array_equal(kept[ood], recon[ood])
    assert not np.array_equal(free[ood], recon[ood])
    assert np.abs(kept[~ood] - recon[~ood]).mean() > 0.1  # the face is still edited


def test_no_argument_edits_the_newest_inverted_project(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # f0 was inverted later than f1 (its history says so), though f1's file is newer
    p = Project.load(work / "f0.png.dhr")
    p.history[-1].time = "2999-01-01T00:00:00+00:00"
    p.save(work / "f0.png.dhr")
    os.utime(work / "f1.png.dhr")
    monkeypatch.chdir(work)
    assert main(["edit", "--smile", "1.5"]) == 0
    cap = capsys.readouterr()
    assert "editing f0.png.dhr" in cap.err
    assert cap.out.strip() == "f0.smile+1.5.png" and (work / "f0.smile+1.5.png").is_file()


def test_batch_json_output_folder_shard_skip_and_partial_failure(work: Path, capsys) -> None:
    f0, f1 = str(work / "f0.png"), str(work / "f1.png")
    out = work / "edited"
    assert main(["edit", f0, f1, "--age", "-1", "-o", f"{out}/", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [Path(r["output"]) for r in rep["done"]] == [out / "f0.age-1.png", out / "f1.age-1.png"]
    assert rep["done"][0]["method"] == "dhr" and rep["done"][0]["pack"] == "synthetic"
    assert (
        rep["done"][0]["edits"][0]["name"] == "age" and rep["done"][0]["edits"][0]["strength"] == -1
    )
    assert main(["edit", f0, f1, "--smile", "1", "--shard", "2/2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rep["done"]] == [f1]
    assert main(["edit", f0, f1, "--age", "-1", "-o", f"{out}/", "--skip-existing", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["skipped"]) == 2
    missing = str(work / "missing.png")
    assert main(["edit", f0, missing, "--smile", "2", "--json"]) == 7
    cap = capsys.readouterr()
    rep = json.loads(cap.out)
    assert rep["failed"][0]["input"] == missing and rep["failed"][0]["exit_code"] == 3
    assert "1 of 2 inputs failed" in cap.err and "Traceback" not in cap.err
    assert (work / "f0.smile+2.png").is_file()


def test_sweep_strip_frames_output_file_and_save(work: Path, capsys) -> None:
    f0 = str(work / "f0.png")
    assert main(["edit", f0, "--sweep", "smile=-3:3:7", "--frames", "--quiet"]) == 0
    strip = Image.open(work / "f0.sweep-smile-3to+3x7.png")
    assert strip.size == (7 * 64, 64)
    for v in ("-3", "-2", "-1", "+0", "+1", "+2", "+3"):
        assert (work / f"f0.smile{v}.png").is_file()
    assert (work / "f0.smile+0.png").read_bytes() == (work / "f0.recon.png").read_bytes()
    printed = capsys.readouterr().out.split()  # the written files, one per line
    assert printed[0].endswith("f0.sweep-smile-3to+3x7.png") and len(printed) == 9
    # beside the strip, the same strip with each frame's strength written under it
    assert printed[1].endswith("f0.sweep-smile-3to+3x7.sheet.png")
    sheet = np.asarray(Image.open(work / "f0.sweep-smile-3to+3x7.sheet.png").convert("RGB"))
    assert sheet.shape[1] == 7 * 64 and sheet.shape[0] > 64
    assert np.array_equal(sheet[:64], np.asarray(strip.convert("RGB")))
    band = sheet[64:].astype(int)
    for k in range(7):  # ink under every frame
        assert (band[:, k * 64 : (k + 1) * 64] < 128).any(), k
    # -o FILE with --format, and --save records the edit in the history
    target = work / "mine.jpg"
    assert main(["edit", f0, "--smile", "1", "-o", str(target), "--save", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)["done"][0]
    assert rec["output"] == str(target) and rec["saved"]
    assert Image.open(target).format == "JPEG"
    p = Project.load(work / "f0.png.dhr")
    assert p.history[-1].step == "edit" and p.params["edit"]["outputs"] == [str(target)]


def test_list_shows_the_packs_directions(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert main(["edit", "--list", str(work / "f0.png"), "--json"]) == 0
    (lst,) = json.loads(capsys.readouterr().out)["packs"]
    names = {d["name"]: d for d in lst["directions"]}
    assert lst["pack"] == "synthetic" and {"smile", "age"} <= set(names)
    assert names["smile"]["option"] == "--smile" and names["smile"]["shape"][-1] == 64
    assert main(["edit", "--list", "--pack", "ffhq", "--json"]) == 0
    (lst,) = json.loads(capsys.readouterr().out)["packs"]
    assert [d["name"] for d in lst["directions"]] == [
        "smile",
        "age",
        "pose",
        "eyes",
        "beard",
        "lip",
    ]
    assert lst["directions"][2]["shape"] == [1, 18, 512] and not lst["directions"][0]["cached"]
    monkeypatch.chdir(work)
    assert main(["edit", "--list"]) == 0  # the newest project's pack, as a table
    assert "synthetic pack" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["edit", "{f0}", "--edit", "nosuch=1"], 2),  # unknown direction name
        (["edit", "{f0}", "{f1}", "--edit", "nosuch=1"], 2),  # ... for the whole batch
        (["edit", "{f0}", "{f1}", "--direction", "{wide}"], 4),
        (["edit", "{f0}", "--smile", "abc"], 2),  # strength not a number
        (["edit", "{f0}", "--smile", "nan"], 2),  # ... or not finite
        (["edit", "{f0}", "--age", "-inf"], 2),
        (["edit", "{f0}", "--edit", "smile=inf"], 2),
        (["demo", "--smile", "nan"], 2),
        (["edit", "{f0}", "--edit", "smile=abc"], 2),
        (["edit", "{f0}", "--direction", "{wide}"], 4),  # an ffhq-sized direction
        (["edit", "{f0}", "--direction", "{badshape}"], 4),  # wrong shape
        (["edit", "{f0}", "--pose", "1"], 4),  # a direction of another pack
        (["edit", "{f0}", "--smile", "1", "--pack", "ffhq"], 4),  # project of another pack
        (["edit", "{missing}.dhr", "--smile", "1"], 3),  # project file missing
        (["edit", "{lonely}", "--smile", "1"], 3),  # photo never inverted
        (["edit", "--smile", "1"], 3),  # no project in this folder
        (["edit", "{f0}"], 2),  # nothing to edit
        (["edit", "{f0}", "--ganspace", "eyes"], 2),  # GANSpace is ffhq-only
        (["edit", "{f0}", "--smile", "1", "--layers", "7:3"], 2),
        (["edit", "{f0}", "--smile", "1", "--layers", "0:40"], 2),
        (["edit", "{f0}", "{f1}", "--smile", "1", "-o", "{tmp}/x.png"], 2),
        (["edit", "{f0}", "--smile", "1", "--frames"], 2),
        (["edit", "{f0}", "--sweep", "smile=1:2"], 2),
        (["edit", "{f0}", "--smile", "1", "--sweep", "smile=-1:1:3"], 2),  # smile twice
        (["edit", "{f0}", "--smile", "1", "--format", "gif"], 2),
        (["edit", "{f0}", "--smile", "1", "--shard", "0/2"], 2),
    ],
)
def test_bad_inputs_exit_codes(
    inverted: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    argv: list[str],
    code: int,
) -> None:
    np.save(tmp_path / "wide.npy", np.ones((1, 512), np.float32))
    np.save(tmp_path / "badshape.npy", np.ones((3, 64), np.float32))
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "lonely.png")
    paths = {
        "f0": inverted / "f0.png",
        "f1": inverted / "f1.png",
        "wide": tmp_path / "wide.npy",
        "badshape": tmp_path / "badshape.npy",
        "missing": tmp_path / "missing",
        "lonely": tmp_path / "lonely.png",
        "tmp": tmp_path,
    }
    monkeypatch.chdir(tmp_path)  # an empty folder (no project) for the no-argument case
    before = sorted(p.name for p in inverted.iterdir())
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    assert main(args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("error" in err.lower() or "usage" in err.lower())
    assert sorted(p.name for p in inverted.iterdir()) == before  # nothing written


def test_a_glob_after_invert_leaves_out_dhrs_own_images(work: Path, capsys) -> None:
    # the README's `dhr invert photos/*.jpg` then `dhr edit photos/*.jpg --smile 1.5 -o edited/`:
    # the second glob also matches f0.recon.png, f0.mask.png and earlier edits
    assert main(["edit", str(work / "f0.png"), "--smile", "1", "--quiet"]) == 0
    photos = sorted(p for p in work.iterdir() if p.suffix == ".png")
    assert len(photos) > 2
    edited = work / "edited"
    argv = ["edit", *map(str, photos), "--smile", "1.5", "-o", f"{edited}/", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in edited.iterdir()) == ["f0.smile+1.5.png", "f1.smile+1.5.png"]
    assert main(["invert", *map(str, photos), *FAST, "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert "leaving out" in err and err.count("skipped (outputs exist)") == 2
    assert not any(p.name.endswith(".recon.png.dhr") for p in work.iterdir())


def test_same_named_photos_edited_into_one_folder(work: Path, capsys) -> None:
    sub = work / "sub"
    sub.mkdir()
    for name in ("f0.png", "f0.png.dhr"):
        shutil.copy(work / name, sub / name)
    edited = work / "edited"
    argv = ["edit", str(work / "f0.png"), str(sub / "f0.png"), "--smile", "1", "--quiet"]
    assert main([*argv, "-o", f"{edited}/"]) == 7
    assert "would replace those of" in capsys.readouterr().err
    assert [p.name for p in edited.iterdir()] == ["f0.smile+1.png"]
    # beside their photos they do not collide
    assert main(argv) == 0
    assert (sub / "f0.smile+1.png").is_file()


def test_output_onto_an_input_is_refused_and_the_input_kept(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    photo, project = work / "f0.png", work / "f0.png.dhr"
    before = {p: p.read_bytes() for p in (photo, project)}
    monkeypatch.chdir(work)  # a relative -o naming the photo is the photo too
    for target in (photo, project, Path("f0.png")):
        for given in (photo, project):
            assert main(["edit", str(given), "--smile", "1", "-o", str(target)]) == 2
            assert "would be overwritten" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before


def test_output_suffix_and_format_that_disagree(work: Path, capsys) -> None:
    photo = str(work / "f0.png")
    # -o x.jpg --format png wrote PNG bytes into x.jpg
    assert main(["edit", photo, "--smile", "1", "-o", str(work / "x.jpg"), "--format", "png"]) == 2
    assert "names another format than --format png" in capsys.readouterr().err
    assert not (work / "x.jpg").exists()
    # a suffix that is no image format (a typo): written, in the photo's format, with a warning
    assert main(["edit", photo, "--smile", "1", "-o", str(work / "x.jgp")]) == 0
    assert "'.jgp' is not an image suffix" in capsys.readouterr().err
    assert Image.open(work / "x.jgp").format == "PNG"
    # no suffix, or --format given: as asked, no warning
    assert main(["edit", photo, "--smile", "1", "-o", str(work / "plain")]) == 0
    assert main(["edit", photo, "--smile", "1", "-o", str(work / "y.out"), "--format", "jpg"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert Image.open(work / "y.out").format == "JPEG"


def test_quality_with_a_lossless_output_is_said_to_be_unused(work: Path, capsys) -> None:
    photo = str(work / "f0.png")
    assert main(["edit", photo, "--smile", "1", "--quality", "70"]) == 0
    assert "--quality 70: not used, the images written are PNG" in capsys.readouterr().err
    assert main(["edit", photo, "--smile", "1", "-o", str(work / "x.jpg"), "--quality", "70"]) == 0
    assert "--quality" not in capsys.readouterr().err


def test_a_photo_moved_away_is_edited_through_its_project(
    inverted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # `dhr invert a.png`, then a.png is moved (or deleted): its project is still there, so
    # `dhr edit a.png` says what is missing and `--no-paste` edits the aligned face
    monkeypatch.setenv("DHR_OFFLINE", "1")
    photo = tmp_path / "a.png"
    shutil.copy(inverted / "f0.png", photo)
    assert main(["invert", str(photo), *FAST, "--quiet"]) == 0
    photo.rename(tmp_path / "elsewhere.png")
    assert main(["edit", str(photo), "--smile", "1"]) == 3
    err = capsys.readouterr().err
    assert "the photo of" in err and "a.png.dhr is missing" in err and "--no-paste" in err
    assert main(["edit", str(photo), "--smile", "1", "--no-paste", "-q"]) == 0
    assert (tmp_path / "a.smile+1.png").is_file()


@pytest.mark.slow
def test_edits_of_projects_in_another_folder_go_beside_them(work: Path) -> None:
    # `dhr invert photos/*.png -o out/` then `dhr edit out/*.dhr`: the edits join the
    # projects and reconstructions in out/, the photos' folder gets nothing
    out = work.parent / "out"
    out.mkdir()
    for f in ("f0.png.dhr", "f1.png.dhr"):
        shutil.move(work / f, out / f)
    before = sorted(p.name for p in work.iterdir())
    argv = ["edit", str(out / "f0.png.dhr"), str(out / "f1.png.dhr"), "--smile", "1", "-q"]
    assert main(argv) == 0
    assert sorted(p.name for p in work.iterdir()) == before
    assert (out / "f0.smile+1.png").is_file() and (out / "f1.smile+1.png").is_file()


def test_shell_loop_invert_then_edit(tmp_path: Path) -> None:
    """The README's loop, literally, on three synthetic photos (fast invert options)."""
    from dhr_cli.synthetic.benchset import make_sample

    for i in range(3):
        Image.fromarray(make_sample(10 + i, "occluded", 5).image).save(tmp_path / f"p{i}.png")
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    loop = (
        'for f in *.png; do dhr invert "$f" --pack synthetic --steps 4 --coarse-steps 4 '
        '&& dhr edit "$f" --smile 1.5; done'
    )
    r = subprocess.run(
        ["bash", "-c", loop],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for i in range(3):
        edited = tmp_path / f"p{i}.smile+1.5.png"
        assert edited.is_file(), r.stderr
        assert f"p{i}.smile+1.5.png" in r.stdout.split()
        a = np.asarray(Image.open(edited)).astype(int)
        b = np.asarray(Image.open(tmp_path / f"p{i}.recon.png")).astype(int)
        assert a.shape == (64, 64, 3) and 0 < np.abs(a - b).mean() < 60
        assert Project.load(tmp_path / f"p{i}.png.dhr").history[-1].step == "invert"

"""`dhr mask` and `dhr invert` as a user runs them (subprocess, bundled synthetic pack, fast
settings), and their failure modes with the documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr_cli.cli import main
from dhr_cli.project import Project

FAST = ["--pack", "synthetic", "--coarse-steps", "3"]


def run_dhr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dhr_cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


@pytest.fixture
def face(tmp_path: Path) -> Path:
    from dhr_cli.synthetic.benchset import make_sample

    path = tmp_path / "face.png"
    Image.fromarray(make_sample(4, "occluded", 99).image).save(path)
    return path


@pytest.mark.slow
def test_mask_then_invert_end_to_end(face: Path, tmp_path: Path) -> None:
    r = run_dhr("mask", str(face), *FAST, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["done"][0]
    project = tmp_path / "face.png.dhr"
    overlay = tmp_path / "face.mask.png"
    assert out["project"] == str(project) and out["mask_overlay"] == str(overlay)
    assert Image.open(overlay).size == (64, 64)
    p = Project.load(project)
    assert p.mask is not None and p.mask.shape == (1, 1, 64, 64) and p.feature is None
    mask = p.mask.clone()

    # a second, missing input: the batch goes on and ends with the partial-failure code
    missing = tmp_path / "missing.png"
    r = run_dhr("invert", str(face), str(missing), "--pack", "synthetic", "--steps", "4", "--json")
    assert r.returncode == 7, r.stderr
    assert "1 of 2 inputs failed" in r.stderr and "Traceback" not in r.stderr
    rep = json.loads(r.stdout)
    assert rep["failed"][0]["input"] == str(missing) and rep["failed"][0]["exit_code"] == 3
    rec = rep["done"][0]
    assert rec["faces"][0]["mask_source"] == "stored (computed)"
    assert set(rec["faces"][0]["metrics"]) == {"mse", "lpips"}
    p = Project.load(project)
    assert (p.mask == mask).all()  # the stored mask was reused
    assert p.feature is not None and p.deltas and p.params["invert"]["method"] == "dhr"
    assert [h.step for h in p.history] == ["mask", "invert"]
    recon = np.asarray(Image.open(tmp_path / "face.recon.png"))
    assert recon.shape == (64, 64, 3)
    assert np.abs(recon.astype(int) - np.asarray(Image.open(face)).astype(int)).mean() < 60

    # --skip-existing leaves the outputs alone
    before = project.stat().st_mtime_ns
    r = run_dhr("invert", str(face), "--pack", "synthetic", "--skip-existing", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] and project.stat().st_mtime_ns == before

    # without --pack the photo's project decides the pack (offline ffhq would exit 5)
    r = run_dhr("mask", str(face), "--offline", "--skip-existing", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] and project.stat().st_mtime_ns == before


def test_ffhq_offline_fails_fast_naming_the_files(face: Path, capsys) -> None:
    assert main(["invert", str(face), "--pack", "ffhq", "--offline"]) == 5
    err = capsys.readouterr().err
    for name in (
        "stylegan2-ffhq-config-f.pt",
        "e4e_ffhq_r50_wp_official.pt",
        "parsing_bisenet.pth",
    ):
        assert name in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["invert", "{missing}"], 3),
        (["invert", "{notimage}", "--pack", "synthetic"], 4),
        # the image is checked before the (missing) ffhq models are looked for
        (["invert", "{notimage}", "--pack", "ffhq", "--offline"], 4),
        (["mask", "{face}", "--pack", "synthetic", "-o", "{tmp}/overlay.png"], 2),
        (["invert", "{face}", "--shard", "3/2"], 2),
        (["invert", "{face}", "--method", "magic"], 2),
        (["invert", "{face}", "--pivot", "x"], 2),
        (["invert", "{face}", "--tau", "skin=high"], 2),
        (["invert", "{face}", "--pack", "mars"], 2),
        (["invert"], 2),
        (["mask", "{missing}"], 3),
        (["mask", "{face}", "--from", "{missing}"], 3),
        (["mask", "{face}", "--pack", "synthetic", "--from", "{notsquare}"], 4),
        (["invert", "{face}", "--pack", "synthetic", "--layer", "40"], 2),
        (["invert", "{face}", "--pack", "synthetic", "--work-res", "48"], 2),
        (["invert", "{face}", "--pack", "synthetic", "--format", "gif"], 2),
        # an -o that cannot be a folder fails before the (missing) ffhq models are looked for
        (["invert", "{face}", "--pack", "ffhq", "--offline", "-o", "{face}/out/"], 6),
    ],
)
def test_bad_inputs_exit_codes(
    face: Path, tmp_path: Path, capsys, argv: list[str], code: int
) -> None:
    (tmp_path / "notimage.png").write_text("not an image")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(tmp_path / "notsquare.png")
    paths = {
        "missing": tmp_path / "missing.png",
        "notimage": tmp_path / "notimage.png",
        "face": face,
        "notsquare": tmp_path / "notsquare.png",
        "tmp": tmp_path,
    }
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    assert main(args) == code
    assert "Traceback" not in capsys.readouterr().err


def test_same_named_photos_into_one_folder_keep_the_first(
    face: Path, tmp_path: Path, capsys
) -> None:
    # x/face.png and y/face.png with -o out/ would both write out/face.png.dhr
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "face.png").write_bytes(face.read_bytes())
    out = tmp_path / "out"
    argv = ["mask", str(tmp_path / "x/face.png"), str(tmp_path / "y/face.png"), *FAST]
    assert main([*argv, "-o", f"{out}/"]) == 7
    err = capsys.readouterr().err
    assert "would replace those of" in err and "1 of 2 inputs failed" in err
    assert Project.load(out / "face.png.dhr").source_path == str(tmp_path / "x/face.png")


def test_a_photo_named_twice_is_done_once(
    face: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # `dhr invert *.png face.png`, or face.png and ./face.png: the same slow work twice
    monkeypatch.chdir(face.parent)
    argv = ["invert", str(face), face.name, f"./{face.name}", *FAST, "--method", "encoder"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert "leaving out 2 repeated input(s)" in captured.err
    assert len(json.loads(captured.out)["done"]) == 1


def test_options_the_method_does_not_read_are_warned_about(face: Path, capsys) -> None:
    argv = ["invert", str(face), *FAST, "--method", "encoder", "--steps", "3", "--tau", "0.5"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: --steps, --tau, --coarse-steps: not used by --method encoder" in err


def test_quality_with_lossless_outputs_is_said_to_be_unused(face: Path, capsys) -> None:
    # face.png's reconstruction is a PNG: --quality cannot change it
    assert main(["invert", str(face), *FAST, "--method", "encoder", "--quality", "80"]) == 0
    assert "warning: --quality 80: not used, the images written are PNG" in capsys.readouterr().err
    argv = ["invert", str(face), *FAST, "--method", "encoder", "--quality", "80", "--format", "jpg"]
    assert main(argv) == 0
    assert "--quality" not in capsys.readouterr().err


def test_face_finding_options_are_said_to_be_unused_with_aligned_packs(
    face: Path, tmp_path: Path, capsys
) -> None:
    # the synthetic pack takes the image as the aligned crop: `--face 2` cannot pick a face
    argv = ["mask", str(face), *FAST, "--face", "2", "--detector", "mtcnn"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: --face, --detector: not used with the synthetic pack" in err
    assert main(["mask", str(face), *FAST]) == 0
    assert "not used" not in capsys.readouterr().err

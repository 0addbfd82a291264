"""`dhr demo`: the whole chain offline on the bundled synthetic pack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dhr_cli.project import Project


def run_demo(*args: str) -> subprocess.CompletedProcess:
    """`dhr demo ARGS` as a user runs it (a fresh process, no stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "dhr_cli", "demo", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def test_demo_writes_the_chain_and_the_sheet(tmp_path: Path) -> None:
    out = tmp_path / "demo out"
    r = run_demo("-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    for key in ("photo", "project", "recon", "edit", "true_edit", "sheet", "mask_overlay"):
        assert Path(rec[key]).is_file(), key
        assert Path(rec[key]).parent == out
    project = Project.load(Path(rec["project"]))
    assert project.pack == "synthetic"
    assert project.mask is not None and project.feature is not None and project.deltas
    assert "invert" in project.params and "mask" in project.params
    sheet = np.asarray(Image.open(rec["sheet"]))
    assert sheet.shape[1] > 4 * sheet.shape[0]  # five tiles side by side
    # the edit changed the face, and the errors are finite numbers
    edit = np.asarray(Image.open(rec["edit"])).astype(int)
    recon = np.asarray(Image.open(rec["recon"])).astype(int)
    assert np.abs(edit - recon).max() > 0
    for key in ("recon_mse", "edit_mse_in_domain", "mask_iou"):
        assert 0 <= rec[key] < 1, key
    # run again into the same folder: its own face.png may be replaced; without --json it
    # prints where every file is (the issue: "printing where they are"), the same numbers
    again = run_demo("-o", str(out))
    assert again.returncode == 0, again.stderr
    files = ("sheet", "photo", "project", "mask_overlay", "recon", "edit", "true_edit")
    assert again.stdout.splitlines() == [rec[key] for key in files]
    assert f"mask IoU {rec['mask_iou']:.4f}" in again.stderr


def test_demo_does_not_overwrite_someone_elses_face_png(tmp_path: Path, capsys) -> None:
    from dhr_cli.cli import main

    mine = tmp_path / "face.png"
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(mine)
    before = mine.read_bytes()
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "not the demo's photo" in capsys.readouterr().err
    assert mine.read_bytes() == before and sorted(tmp_path.iterdir()) == [mine]


def test_demo_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_demo("-o", str(blocker / "sub"))
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr

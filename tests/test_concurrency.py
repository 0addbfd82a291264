"""Concurrent writers of one photo's project (issue 34): a second writer waits for the photo's
lock instead of losing an update, and gives up clearly (exit 6) after DHR_LOCK_TIMEOUT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr_cli.cli import main
from dhr_cli.project import Project, lock_path, locked, read_metadata


@pytest.fixture
def face(tmp_path: Path) -> Path:
    from dhr_cli.synthetic.benchset import make_sample

    path = tmp_path / "face.png"
    Image.fromarray(make_sample(3, "occluded", 0).image).save(path)
    assert main(["invert", str(path), "--pack", "synthetic", "--method", "encoder"]) == 0
    return path


def _dhr(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dhr_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _steps(project: Path) -> list[str]:
    return [h["step"] for h in json.loads(read_metadata(project)["history"])]


def _wait_while_locked(proc: subprocess.Popen, seconds: float) -> None:
    """Hold on for `seconds` and check the process is still waiting for the lock."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


def test_two_edit_saves_at_once_keep_both_records(face: Path) -> None:
    project = face.with_name("face.png.dhr")
    procs = [_dhr("edit", str(face), "--smile", s, "--save") for s in ("1", "-1")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert _steps(project).count("edit") == 2
    tags = {h["params"]["tag"] for h in json.loads(read_metadata(project)["history"])[-2:]}
    assert tags == {"smile+1", "smile-1"}
    assert not lock_path(project).exists()  # the last holder removes the lock file


def test_an_edit_save_waits_for_the_lock_and_loses_nothing(face: Path) -> None:
    project = face.with_name("face.png.dhr")
    with locked(project):
        proc = _dhr("edit", str(face), "--smile", "2", "--save")
        _wait_while_locked(proc, 8.0)  # it reached the lock (startup takes a few s) and waits
        # meanwhile this process updates the project, as `dhr invert` would
        p = Project.load(project)
        p.record_step("edit", {"tag": "by-the-test"})
        p.save(project)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    tags = [h["params"].get("tag") for h in json.loads(read_metadata(project)["history"])]
    assert tags[-2:] == ["by-the-test", "smile+2"]


def test_invert_and_an_edit_save_at_once_keep_both(face: Path) -> None:
    project = face.with_name("face.png.dhr")
    before = _steps(project).count("invert")
    with locked(project):
        inv = _dhr("invert", str(face), "--pack", "synthetic", "--method", "encoder")
        _wait_while_locked(inv, 5.0)
        edit = _dhr("edit", str(face), "--smile", "1", "--save")
        _wait_while_locked(edit, 5.0)
    for proc in (inv, edit):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    steps = _steps(project)
    assert steps.count("invert") == before + 1 and steps.count("edit") == 1


def test_a_writer_gives_up_after_the_timeout(face: Path) -> None:
    project = face.with_name("face.png.dhr")
    before = project.read_bytes()
    with locked(project):
        proc = _dhr("edit", str(face), "--smile", "1", "--save", DHR_LOCK_TIMEOUT="1")
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 6, err
    assert "being written by another dhr process (waited 1 s)" in err
    assert project.read_bytes() == before
    assert lock_path(project).name == ".face.png.dhr.lock"


def test_faces_of_one_photo_share_its_lock(tmp_path: Path) -> None:
    assert lock_path(tmp_path / "a.jpg.dhr") == lock_path(tmp_path / "a.jpg.face3.dhr")
    assert lock_path(tmp_path / "a.jpg.dhr") != lock_path(tmp_path / "b.jpg.dhr")
    np.testing.assert_equal(lock_path(tmp_path / "a.jpg.dhr").parent, tmp_path)

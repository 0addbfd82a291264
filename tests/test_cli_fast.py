"""The command line answers what needs no model without loading one (issue 31, sections 3, 4 and
6): usage errors and missing inputs without importing torch; help without value types on flags
and with the rare options apart; progress with elapsed time and ETA that ends cleanly when a
method stops early; sweep sheets; model sizes per pack and a summary after `models verify`."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr_cli import console, hub
from dhr_cli.cli import main

REPO = Path(__file__).resolve().parents[1]

# --- section 3: failing fast, without torch ----------------------------------------------------

_PROBE = (
    "import json, sys\n"
    "from dhr_cli.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}), file=sys.stderr)\n"
)


def run_probe(argv: list[str], cwd: Path) -> tuple[int, bool, str]:
    """`dhr ARGV` in a fresh process: (exit code, whether torch was imported, stderr)."""
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    *messages, last = r.stderr.rstrip("\n").split("\n")
    result = json.loads(last)
    return result["rc"], result["torch"], "\n".join(messages)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with a photo, a file that is no image, and a stand-in project file."""
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "face.png")
    (tmp_path / "notimage.png").write_text("not an image")
    (tmp_path / "face.png.dhr").write_bytes(b"never read")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["invert", "missing.png"], 3, "not found: missing.png"),
        (["mask", "missing.png"], 3, "not found: missing.png"),
        (["invert", "notimage.png"], 4, "not an image"),
        (["invert", "face.png", "--pack", "ffhs"], 2, "unknown pack 'ffhs'"),
        (["mask", "face.png", "--pack", "ffhs"], 2, "unknown pack 'ffhs'"),
        (["invert", "face.png", "-o", "face.png"], 2, "writes a project file"),
        (["invert", "face.png", "--method", "magic"], 2, "--method 'magic'"),
        (["invert", "face.png", "--pack", "synthetic", "--tau", "nosuch=0.5"], 2, "nosuch"),
        (["invert", "face.png", "--shard", "auto"], 2, "no scheduler variables"),
        (["edit", "face.png"], 2, "nothing to edit"),
        (["edit", "face.png", "--smile", "1", "--pack", "ffhs"], 2, "unknown pack 'ffhs'"),
        (["edit", "missing.png", "--smile", "1"], 3, "not found: missing.png"),
        (["edit", "missing.png.dhr", "--smile", "1"], 3, "project file not found"),
        (["edit", "face.png", "--smile", "1", "-o", "face.png"], 2, "would be overwritten"),
        (["edit", "face.png.dhr", "--smile", "1", "-o", "face.png"], 2, "would be overwritten"),
        (["edit", "face.png", "--smile", "1", "-o", "face.png.dhr"], 2, "would be overwritten"),
        (["edit", "face.png", "--sweep", "smile=1:2"], 2, "--sweep expects"),
        (["edit", "face.png", "--smile", "1", "--frames"], 2, "--frames goes with --sweep"),
    ],
)
def test_errors_that_need_no_model_do_not_import_torch(
    argv: list[str], code: int, message: str, folder: Path
) -> None:
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rc, torch_loaded, err = run_probe(argv, folder)
    assert (rc, message in err) == (code, True), err
    assert not torch_loaded, f"dhr {' '.join(argv)} imported torch before failing"
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written


def test_offline_without_the_models_fails_without_torch(folder: Path) -> None:
    rc, torch_loaded, err = run_probe(["invert", "face.png", "--pack", "ffhq", "--offline"], folder)
    assert rc == 5 and "stylegan2-ffhq-config-f.pt" in err
    assert not torch_loaded


def test_edit_list_of_a_pack_is_data(folder: Path) -> None:
    rc, torch_loaded, err = run_probe(["edit", "--list", "--pack", "ffhq", "--json"], folder)
    assert rc == 0, err
    assert not torch_loaded


# --- section 4: help, completions, progress, sweep sheets -------------------------------------


def help_of(*path: str, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*path, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "path",
    [(), ("invert",), ("mask",), ("edit",), ("bench", "run"), ("bench", "merge"), ("demo",)]
    + [("models", c) for c in ("list", "download", "verify", "path", "import")],
)
def test_flags_show_no_value_type(path: tuple[str, ...], monkeypatch, capsys) -> None:
    text = help_of(*path, monkeypatch=monkeypatch, capsys=capsys)
    assert "<bool>" not in text
    for flag in ("--quiet", "--help"):  # a flag's row: its names, then straight to its help
        row = next(line for line in text.splitlines() if flag in line)
        assert re.search(rf"{flag}(\s+-\w)?\s+[A-Z][a-z]", row), row


def test_root_help_offers_no_completion_installer(monkeypatch, capsys) -> None:
    # the shipped completions (completions/, installed into share/) answer; typer's own
    # installer would write a second, different script
    text = help_of(monkeypatch=monkeypatch, capsys=capsys)
    assert "--install-completion" not in text and "--show-completion" not in text
    assert main(["--install-completion"]) == 2


def test_tau_help_is_whole_and_rare_options_are_advanced(monkeypatch, capsys) -> None:
    text = help_of("invert", monkeypatch=monkeypatch, capsys=capsys)
    assert "…" not in text
    flat = " ".join(re.sub(r"[│╭╰─╮╯]", " ", text).split())
    assert "skin=0.7,eyes=0.8" in flat and "default=0.6" in flat
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels.index("Advanced") > panels.index("Engine")
    advanced = text[text.index("╭─ Advanced") :]
    advanced = advanced[: advanced.index("╰")]
    rows = {ln.split()[1] for ln in advanced.splitlines() if re.match(r"│ --", ln)}
    assert {"--lr-weight", "--layer", "--work-res", "--pivot-steps", "--blend-radius"} <= rows
    assert not rows & {"--method", "--pack", "--steps", "--output", "--skip-existing"}


def _interactive_console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    from rich.console import Console

    buffer = io.StringIO()
    console.configure()
    monkeypatch.setattr(console._state, "err", Console(file=buffer, force_terminal=True, width=120))
    return buffer


def test_progress_shows_elapsed_time_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = _interactive_console(monkeypatch)
    with console.progress("refine (dhr)", total=4) as task:
        for step in range(4):
            task.update(completed=step + 1, loss=0.5)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "4/4" in out and re.search(r"\d:\d\d:\d\d eta", out)
    assert "stopped early" not in out


def test_an_early_stop_ends_the_bar_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = _interactive_console(monkeypatch)
    with console.progress("refine (pti)", total=800, early_stop="LPIPS below 0.06") as task:
        task.update(completed=489)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "800/800" in out  # finished, not left part-way
    assert "refine (pti): stopped early at 489/800 (LPIPS below 0.06, by design)" in out


def test_an_early_stop_is_noted_in_a_log_too(capsys) -> None:
    console.configure()
    with console.progress("refine (pti)", total=800) as task:
        task.update(completed=489)
    err = capsys.readouterr().err
    assert "refine (pti): stopped early at 489/800" in err
    with console.progress("segment", total=10) as task:
        task.update(completed=10)
    with pytest.raises(KeyError), console.progress("segment", total=10) as task:
        task.update(completed=3)
        raise KeyError("an error is no early stop")
    assert "stopped early" not in capsys.readouterr().err


def test_sweep_sheet_labels_each_frame() -> None:
    from dhr_cli.faces.sheet import labelled_sheet, sheet_path, sweep_labels

    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(5)]
    strip = np.concatenate(frames, axis=1)
    labels = sweep_labels("smile", [-2, -1, 0, 1, 2])
    assert labels == ["smile -2", "smile -1", "smile +0", "smile +1", "smile +2"]
    sheet = labelled_sheet(strip, labels)
    assert sheet.shape[1] == strip.shape[1] and sheet.shape[0] > 64
    assert np.array_equal(sheet[:64], strip)
    band = sheet[64:]
    for i in range(5):  # ink under each frame, inside its column
        assert (band[:, i * 64 + 4 : (i + 1) * 64 - 4] < 128).any(), i
    strip_path = Path("out/f0.sweep-smile-2to+2x5.jpg")
    assert sheet_path(strip_path) == Path("out/f0.sweep-smile-2to+2x5.sheet.png")


def test_a_sweep_sheet_is_taken_for_dhrs_own_output(tmp_path: Path) -> None:
    from dhr_cli.app.naming import drop_own_outputs

    for name in ("f0.png", "f0.png.dhr", "f0.sweep-smile-3to+3x7.png"):
        (tmp_path / name).write_bytes(b"")
    sheet = tmp_path / "f0.sweep-smile-3to+3x7.sheet.png"
    sheet.write_bytes(b"")
    kept, dropped = drop_own_outputs(sorted(tmp_path.glob("*.png")))
    assert kept == [tmp_path / "f0.png"] and sheet in dropped


# --- section 6: models list, download, verify; the demo's folder ------------------------------


def test_models_list_totals_each_pack(capsys) -> None:
    assert main(["models", "list"]) == 0
    err = capsys.readouterr().err
    for pack in hub.PACKS:
        files = hub.download_targets([pack])
        line = next(ln for ln in err.splitlines() if ln.startswith(f"{pack} pack: "))
        assert f"{len(files)} files, " in line and re.search(r"\d(\.\d)? [kMG]?B", line)
        unknown = [n for n in files if hub.get(n).size is None]
        assert (f"{len(unknown)} of unknown size" in line) == bool(unknown)
        assert "not here yet" in line or "all here" in line
    assert main(["models", "list", "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["packs"]
    for pack in hub.PACKS:
        assert totals[pack]["bytes"] == hub.pack_download_size(pack)[0]
        assert totals[pack]["files"] == len(hub.download_targets([pack]))
    assert main(["models", "list", "--pack", "synthetic", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["packs"]) == ["synthetic"]


def test_models_download_names_each_failure_once(capsys) -> None:
    names = ["e4e-ffhq", "stylegan2-ffhq-1024"]
    assert main(["models", "download", *names]) == 5
    err = capsys.readouterr().err
    for n in names:  # one line per file (its name and URL), not a message per file as well
        e = hub.get(n)
        assert sum(e.filename in line for line in err.splitlines()) == 1, err
        assert err.count(e.url) == 1
    assert "2 of 2 model files could not be fetched" in err


def test_models_verify_ends_with_a_summary(capsys) -> None:
    assert main(["models", "verify"]) == 0  # missing files are listed, not failures
    err = capsys.readouterr().err
    assert main(["models", "verify", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    summary = data["summary"]
    results = data["results"]
    assert summary["files"] == len(results)
    assert summary["present"] == sum(r["status"] != "missing" for r in results)
    assert summary["verified"] == sum(r["status"] == "ok" for r in results)
    assert summary["missing"] == sum(r["status"] == "missing" for r in results) > 0
    assert sum(summary["missing_by_pack"].values()) == summary["missing"]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"{summary['present']} of {summary['files']} files present")
    assert f"{summary['missing']} missing (" in line
    for pack, n in summary["missing_by_pack"].items():
        assert f"{pack}: {n}" in line


def test_the_demo_folder_is_ignored_and_told(monkeypatch, capsys) -> None:
    ignore = (REPO / ".gitignore").read_text().splitlines()
    assert "/dhr-demo/" in ignore
    git = shutil.which("git")
    if git is not None and (REPO / ".git").exists():
        r = subprocess.run([git, "check-ignore", "-q", "dhr-demo/demo.png"], cwd=REPO)
        assert r.returncode == 0
    text = help_of("demo", monkeypatch=monkeypatch, capsys=capsys)
    assert "dhr-demo/ in the current folder" in " ".join(text.replace("│", " ").split())


def test_misspelt_direction_and_no_project_fail_without_torch(folder: Path) -> None:
    # a real project header of the synthetic pack: the names are checked against its description
    from dhr_cli.project import Project

    (folder / "face.png.dhr").unlink()
    p = Project.for_photo(folder / "face.png", pack="synthetic")
    import torch

    p.wplus = torch.zeros(1, 10, 64)
    p.save(folder / "face.png.dhr")
    rc, torch_loaded, err = run_probe(["edit", "face.png", "--edit", "grin=1"], folder)
    assert rc == 2 and "unknown direction 'grin' for the synthetic pack" in err, err
    assert not torch_loaded
    rc, torch_loaded, err = run_probe(["edit", "face.png", "--pose", "1"], folder)
    assert rc == 4 and "'pose' is a direction of the ffhq pack" in err, err
    assert not torch_loaded
    empty = folder / "empty"
    empty.mkdir()
    rc, torch_loaded, err = run_probe(["edit", "--smile", "1"], empty)
    assert rc == 3 and "no project file" in err and not torch_loaded, err


def test_aligned_inputs_need_no_detector_files(folder: Path) -> None:
    """--aligned photos are not detected: offline, the missing files named are the pack's and
    LPIPS's, not RetinaFace's."""
    rc, torch_loaded, err = run_probe(
        ["invert", "face.png", "--pack", "ffhq", "--offline", "--aligned"], folder
    )
    assert rc == 5 and "stylegan2-ffhq-config-f.pt" in err and not torch_loaded
    assert "needs 3 model files" in err and "detection_Resnet50_Final.pth" not in err
    rc, _, err = run_probe(["invert", "face.png", "--pack", "ffhq", "--offline"], folder)
    assert rc == 5 and "needs 4 model files" in err and "detection_Resnet50_Final.pth" in err

"""The CLI frame: start-up cost, global options, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dhr_cli.cli import main


def run_dhr(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dhr_cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        **kw,
    )


def test_help_does_not_import_torch() -> None:
    code = "import sys; from dhr_cli.cli import main; rc = main(['--help']); assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "invert" in r.stdout and "Exit codes" in r.stdout


def _commands(group, path=()):
    for name, cmd in getattr(group, "commands", {}).items():
        yield (*path, name), cmd
        yield from _commands(cmd, (*path, name))


def test_help_paragraphs_are_left_to_the_terminal_to_wrap() -> None:
    # typer keeps the line breaks inside help paragraphs (and the command lists show the first
    # paragraph as it is), so a docstring's own wrapping came out broken mid-sentence.
    import typer.main

    from dhr_cli.cli import app

    group = typer.main.get_command(app)
    for path, cmd in _commands(group):
        paragraphs = (cmd.help or "").strip().split("\n\n")
        for p in paragraphs:
            assert "\n" not in p or p.startswith("\b"), f"dhr {' '.join(path)}: {p!r}"
        # the summary is short enough to read in a command list
        assert len(paragraphs[0]) <= 100, f"dhr {' '.join(path)}: {paragraphs[0]!r}"


def test_version() -> None:
    r = run_dhr("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("dhr ")


@pytest.mark.parametrize(
    "argv", [["nope"], ["invert", "--no-such-option"], ["--device", "tpu", "models", "list"]]
)
def test_usage_errors_exit_2_without_traceback(argv: list[str]) -> None:
    r = run_dhr(*argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr


def test_global_options_work_after_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--device", "bogus"]) == 2
    assert "invalid --device" in capsys.readouterr().err


def _invert_when_loading_the_pack(tmp_path, monkeypatch: pytest.MonkeyPatch, fake) -> int:
    """`dhr invert face.png --pack synthetic` with `fake` in place of packs.load_pack."""
    import numpy as np
    from PIL import Image

    from dhr_cli import packs

    monkeypatch.setattr(packs, "load_pack", fake)
    photo = tmp_path / "face.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
    return main(["invert", str(photo), "--pack", "synthetic"])


def test_ctrl_c_exits_130_and_says_so(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    assert _invert_when_loading_the_pack(tmp_path, monkeypatch, interrupted) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]


def test_sigterm_is_handled_like_ctrl_c_and_exits_143(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import signal

    def terminated(*args, **kwargs):
        # what `timeout`, `kill` or a batch scheduler's time limit sends
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    assert _invert_when_loading_the_pack(tmp_path, monkeypatch, terminated) == 143
    err = capsys.readouterr().err
    assert "terminated" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]
    assert signal.getsignal(signal.SIGTERM) == before  # main() leaves the handler as it was


def test_an_eof_error_is_not_reported_as_ctrl_c(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def cut_short(*args, **kwargs):
        raise EOFError("No data left in file")

    # click turns an EOFError into Abort (it means "stdin closed" at a prompt); dhr never
    # prompts, so one from a cut-short file is a failure to report, not an interruption
    assert _invert_when_loading_the_pack(tmp_path, monkeypatch, cut_short) == 1
    err = capsys.readouterr().err
    assert "internal error: EOFError: No data left in file" in err
    assert "interrupted" not in err


def test_messages_into_a_pipe_are_one_line_each(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a log file or `2>&1 | grep`: rich would cut at 80 columns, a path or URL in two halves
    monkeypatch.setenv("COLUMNS", "80")
    deep = tmp_path / ("a-long-folder-name-" * 5) / "photo.jpg"
    assert main(["invert", str(deep)]) == 3
    err = capsys.readouterr().err
    assert f"error: not found: {deep}\n" in err


@pytest.mark.parametrize(
    "args",
    [
        ["invert", "*.JPG"],
        ["mask", "*.JPG"],
        ["edit", "*.JPG", "--smile", "1"],
        ["invert", "*.JPG", "other*.png"],
        ["mask", "face.png", "--from", "mask*.png"],
    ],
)
def test_a_pattern_that_matched_nothing_is_told_as_such(
    args: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # bash hands `*.JPG` on unchanged when no file matches; "not found: *.JPG" alone puzzles
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "face.png")
    assert main([*args, "--pack", "synthetic"]) in (3, 7)
    err = capsys.readouterr().err
    assert "not found:" in err and "no file matches this pattern" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["invert"], ["mask"], ["edit", "--smile", "1"]])
def test_stdin_as_dash_is_told_to_give_a_file(
    command: list[str],
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([command[0], "-", *command[1:], "--pack", "synthetic"]) == 3
    err = capsys.readouterr().err
    assert "not found: -" in err and "not stdin" in err


@pytest.mark.parametrize(
    "args",
    [
        ["invert", "face.png", "-o", "-"],
        ["mask", "face.png", "-o", "-"],
        ["edit", "face.png", "--smile", "1", "-o", "-"],
        ["bench", "--synthetic", "1", "-o", "-"],
        ["bench", "--synthetic", "1", "--report", "-"],
        ["bench", "merge", "a.json", "-o", "-"],
        ["demo", "-o", "-"],
    ],
)
def test_output_to_stdout_as_dash_is_a_usage_error(
    args: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `-o -` made a file named '-' in the current folder
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert "not stdout" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()

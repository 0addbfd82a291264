"""`dhr bench` and `dhr bench merge` as a user runs them (bundled synthetic pack, a few
steps): outputs, shards merged into the whole run, photos, and the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr_cli.bench import comparable, load_results
from dhr_cli.cli import main

FAST = ["--steps", "2", "--coarse-steps", "2", "--pivot-steps", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give photos to benchmark on, or --synthetic N"),
        (["--synthetic", "2", "x.png"], 2, "not both"),
        (["--synthetic", "0"], 2, "--synthetic"),
        (["--synthetic", "2", "--methods", "dhr,hfgi"], 2, "unknown method(s): hfgi"),
        (["--synthetic", "2", "--methods", ","], 2, "--methods names no method"),
        (["--synthetic", "2", "--shard", "3/2"], 2, "--shard"),
        (["--synthetic", "2", "--grid-edit", "smile"], 2, "--grid-edit expects NAME=STRENGTH"),
        (["--synthetic", "2", "--grid-edit", "smile=x"], 2, "--grid-edit smile: 'x' is not"),
        (["--synthetic", "2", "--grid-edit", "smiel=2"], 2, "did you mean smile"),
        (["--synthetic", "2", "--report", "r", "--no-report"], 2, "contradict"),
        (["--pack", "nope", "--synthetic", "2"], 2, "unknown pack"),
        (["missing.png"], 3, "not found: missing.png"),
        (["*.JPG"], 3, "no file matches this pattern"),
        (["adir"], 3, "expected an image file, got a directory: adir"),
        (["merge"], 2, "give the results files"),
        (["merge", "missing.json", "-o", "all.json"], 3, "results file not found"),
        (["merge", "a.json"], 2, "-o FILE, --report DIR or --json"),
    ],
)
def test_usage_errors(args, code, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "adir").mkdir()
    assert main(["bench", *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--report", "afile/r"], "afile is a file, not a folder"),
        (["-o", "afile/x.json", "--no-report"], "afile is a file, not a folder"),
        (["-o", "adir", "--no-report"], "adir is a folder; give the results file a name"),
    ],
)
def test_blocked_outputs_fail_before_measuring(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    monkeypatch.setattr("dhr_cli.bench.run_bench", lambda *a, **k: pytest.fail("measured"))
    assert main(["bench", "--synthetic", "2", *args]) == 6
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_merge_refuses_other_json(tmp_path: Path, capsys) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "dhr-synthetic-bench"}))
    assert main(["bench", "merge", str(other), "-o", str(tmp_path / "all.json")]) == 4
    assert "not a dhr bench results file" in capsys.readouterr().err


def test_ffhq_offline_fails_fast(tmp_path: Path, capsys) -> None:
    photo = tmp_path / "face.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photo)
    assert main(["bench", str(photo), "--offline", "--no-report", "-j", "1"]) == 5
    err = capsys.readouterr().err
    assert "not available" in err and "Traceback" not in err


@pytest.mark.slow
def test_shards_then_merge_equal_the_whole_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = [
        "bench",
        "--synthetic",
        "3",
        "--methods",
        "encoder,dhr",
        *FAST,
        "-j",
        "1",
        "--grid",
        "2",
    ]
    # a whole run: the default report folder, the table on stdout
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "all images: fidelity" in out and "Paper ordering on the occluded stratum" in out
    folder = tmp_path / "dhr-bench"
    assert sorted(p.name for p in folder.iterdir()) == [
        "chart.png",
        "grid.png",
        "report.md",
        "results.json",
    ]
    # the recorded command reproduces the run: the pack and the report folder spelled out
    recorded = (folder / "report.md").read_text()
    assert "dhr bench --synthetic 3 --methods encoder,dhr --pack synthetic --steps 2" in recorded
    assert "--report dhr-bench" in recorded
    whole = load_results(folder / "results.json")

    # two shards (no report of their own), then merge
    for k in (1, 2):
        assert main([*base, "--shard", f"{k}/2", "-o", f"part{k}.json"]) == 0
    assert not (tmp_path / "dhr-bench" / "part1.json").exists()
    capsys.readouterr()
    code = main(
        ["bench", "merge", "part1.json", "part2.json", "-o", "all.json", "--report", "merged"]
    )
    assert code == 0
    merged = load_results(tmp_path / "all.json")
    assert merged["complete"] and comparable(merged) == comparable(whole)
    assert (tmp_path / "merged" / "grid.png").is_file()
    assert Image.open(tmp_path / "merged" / "grid.png").size == Image.open(folder / "grid.png").size

    # a missing shard: refused unless --partial
    assert main(["bench", "merge", "part1.json", "-o", "p.json"]) == 4
    assert "cover 2 of 3" in capsys.readouterr().err
    assert main(["bench", "merge", "part1.json", "--partial", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not doc["complete"] and "grid" not in doc


def test_photos_and_partial_failure(tmp_path: Path, capsys) -> None:
    """Photos with the synthetic pack; an unusable photo is reported and the others measured
    (exit code 7 after the outputs are written)."""
    from dhr_cli.synthetic.benchset import make_sample

    good = tmp_path / "good.png"
    Image.fromarray(make_sample(0, "occluded", 7).image).save(good)
    bad = tmp_path / "wide.png"
    Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(bad)
    report = tmp_path / "rep"
    args = ["bench", str(good), str(bad), "--pack", "synthetic", "--methods", "encoder"]
    code = main([*args, "-j", "1", "--report", str(report), "--json"])
    assert code == 7
    captured = capsys.readouterr()
    assert "1 of 2 images failed" in captured.err and "wide.png" in captured.err
    doc = json.loads(captured.out)
    assert [r["id"] for r in doc["records"]] == ["good.png"]
    assert doc["failed"][0]["id"] == "wide.png" and doc["failed"][0]["exit_code"] == 4
    assert "square crop" in doc["failed"][0]["hint"]  # what stderr says, the hint too
    assert (report / "report.md").is_file()
    assert "1 image(s) failed" in (report / "report.md").read_text()


@pytest.mark.slow
def test_subprocess_parallel_workers_match_one_process(tmp_path: Path, capsys) -> None:
    """`dhr bench` as a user runs it, with two worker processes: the same numbers as one
    process, progress on stderr, JSON on stdout."""
    args = ["--synthetic", "2", "--methods", "encoder,dhr", *FAST, "--no-report", "--json"]
    r = subprocess.run(
        [sys.executable, "-m", "dhr_cli", "bench", *args, "-j", "2"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "DHR_OFFLINE": "1"},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "[2/2]" in r.stderr and "ETA" in r.stderr
    parallel = json.loads(r.stdout)
    assert [run["label"] for run in parallel["runs"]] == ["worker 1/2", "worker 2/2"]
    assert not (tmp_path / "dhr-bench").exists()
    capsys.readouterr()
    assert main(["bench", *args, "-j", "1"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert len(single["runs"]) == 1
    assert comparable(parallel) == comparable(single)


def test_ctrl_c_still_writes_what_was_measured(tmp_path: Path, capsys, monkeypatch) -> None:
    """An interrupted run (one process) reports the images it finished, marked incomplete,
    and exits 130."""
    from dhr_cli.bench import Bench

    measure = Bench.run_item

    def interrupted_at_the_second(self, item, progress=None):
        if item.position == 1:
            raise KeyboardInterrupt
        return measure(self, item, progress)

    monkeypatch.setattr(Bench, "run_item", interrupted_at_the_second)
    report, out = tmp_path / "rep", tmp_path / "res.json"
    args = ["bench", "--synthetic", "3", "--methods", "encoder", "-j", "1"]
    assert main([*args, "--report", str(report), "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 of 3 images" in err and "Traceback" not in err
    doc = load_results(out)
    assert [r["id"] for r in doc["records"]] == ["00000"]
    assert doc["interrupted"] and not doc["complete"]
    md = (report / "report.md").read_text()
    assert "**Incomplete:** 1 of 3 images (the run was interrupted)." in md


def _bench_until(
    tmp_path: Path, args: list[str], line_start: str, act: Callable[[subprocess.Popen], None]
) -> tuple[subprocess.Popen, str]:
    """Start `dhr bench ARGS` in a process group of its own (the workers join it), read its
    stderr up to the first line that starts with `line_start`, then `act` on the process.
    Returns the process and the stderr read so far."""
    p = subprocess.Popen(
        [sys.executable, "-m", "dhr_cli", "bench", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "DHR_OFFLINE": "1"},
        start_new_session=True,
    )
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.startswith(line_start):
            act(p)
            break
    return p, "".join(lines)


@pytest.mark.parametrize(
    ("jobs", "group"),
    [
        ("1", False),
        pytest.param("2", False, marks=pytest.mark.slow),
        pytest.param("2", True, marks=pytest.mark.slow),
    ],
)
def test_sigterm_still_writes_what_was_measured(tmp_path: Path, jobs: str, group: bool) -> None:
    """`timeout 1h dhr bench ...` (SIGTERM to the dhr process alone) or a scheduler's time
    limit (SIGTERM to every process of the job, workers too) keeps the images measured so
    far, like Ctrl-C, and exits 143."""
    import signal

    def terminate(p: subprocess.Popen) -> None:
        if group:
            os.killpg(p.pid, signal.SIGTERM)
        else:
            p.send_signal(signal.SIGTERM)

    args = ["--synthetic", "24", "--methods", "encoder", "-j", jobs, "-o", "res.json"]
    p, err = _bench_until(tmp_path, args, "[2/24]", terminate)
    err += p.stderr.read()
    assert p.wait(timeout=120) == 143, err
    assert "terminated" in err and "Traceback" not in err
    doc = load_results(tmp_path / "res.json")
    assert 2 <= len(doc["records"]) < 24 and doc["interrupted"], err
    assert (tmp_path / "dhr-bench" / "report.md").is_file()


@pytest.mark.slow
def test_workers_do_not_outlive_a_killed_bench(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, `kill -9`) gives the parent no chance to stop its workers:
    they notice on their own and exit, instead of waiting forever with their models loaded."""
    import signal
    import time

    args = ["--synthetic", "24", "--methods", "encoder", "-j", "2", "-o", "res.json"]
    p, _ = _bench_until(tmp_path, args, "[1/24]", subprocess.Popen.kill)
    p.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(p.pid, 0)  # is any process of the group left?
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("bench worker processes were still running 30 s after their parent died")


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_collects_every_workers_images(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: each worker hands in what it finished."""
    import signal

    args = ["--synthetic", "6", "--methods", "dhr", "--steps", "40", "-j", "2", "-o", "res.json"]
    # [2/6]: both workers have finished an image
    p, err = _bench_until(tmp_path, args, "[2/6]", lambda p: os.killpg(p.pid, signal.SIGINT))
    err += p.stderr.read()
    assert p.wait(timeout=120) == 130, err
    doc = load_results(tmp_path / "res.json")
    assert 2 <= len(doc["records"]) < 6 and doc["interrupted"], err
    assert len(doc["runs"]) == 2  # a part from each worker
    assert (tmp_path / "dhr-bench" / "report.md").is_file()

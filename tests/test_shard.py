"""`--shard auto` (issue 31, section 7): the shard of a Slurm job-array task or a Kubernetes
Indexed Job's pod, from the scheduler's variables. The shards of every task of an array take
each input exactly once; with no scheduler variables it is a usage error. The README's sbatch
scripts run as each task of their array (bash expands them; `dhr` is this process's `main`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dhr_cli.app.batch import shard_items
from dhr_cli.cli import main
from dhr_cli.cli.args import parse_shard, shard_from_scheduler
from dhr_cli.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SCHEDULER_VARS = (
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
)


@pytest.fixture(autouse=True)
def _no_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set the variables they mean; none leaks in from a CI that runs under Slurm."""
    for name in SCHEDULER_VARS:
        monkeypatch.delenv(name, raising=False)


def slurm_env(ids: list[int], task: int) -> dict[str, str]:
    """What Slurm sets for task `task` of an array of the task IDs `ids`."""
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(min(ids)),
        "SLURM_ARRAY_TASK_MAX": str(max(ids)),
        "SLURM_ARRAY_TASK_COUNT": str(len(ids)),
    }


def array_ids(spec: str) -> list[int]:
    """Task IDs of `sbatch --array=SPEC` (A-B, A-B:S or a list A,B,C)."""
    ids: list[int] = []
    for part in spec.split("%")[0].split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        assert m, spec
        a = int(m.group(1))
        b = int(m.group(2) or a)
        ids += range(a, b + 1, int(m.group(3) or 1))
    return ids


def assert_partition(shards: list[list[int]], items: list[int]) -> None:
    taken = [x for shard in shards for x in shard]
    assert sorted(taken) == sorted(items), "every input exactly once"


@pytest.mark.parametrize("spec", ["0-3", "1-4", "0-15:5", "7", "10-12", "2,4,6"])
@pytest.mark.parametrize("n_items", [1, 5, 13])
def test_slurm_array_tasks_partition_the_inputs(spec: str, n_items: int) -> None:
    ids = array_ids(spec)
    items = list(range(n_items))
    shards = []
    for task in ids:
        k, n = shard_from_scheduler(slurm_env(ids, task))
        assert n == len(ids) and 1 <= k <= n
        shards.append(shard_items(items, (k, n)))
    assert_partition(shards, items)
    assert len({tuple(s) for s in shards if s}) == len([s for s in shards if s])


@pytest.mark.parametrize("completions", [1, 3, 8])
def test_indexed_job_pods_partition_the_inputs(completions: int) -> None:
    items = list(range(20))
    shards = [
        shard_items(items, shard_from_scheduler({"JOB_COMPLETION_INDEX": str(i)}, completions))
        for i in range(completions)
    ]
    assert_partition(shards, items)


def test_shard_auto_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in slurm_env([0, 1, 2], 2).items():
        monkeypatch.setenv(name, value)
    assert parse_shard("auto") == (3, 3)
    assert parse_shard(" AUTO ") == (3, 3)
    assert parse_shard("2/5") == (2, 5)  # K/N as before, whatever the environment says


@pytest.mark.parametrize(
    ("env", "count", "message"),
    [
        ({}, None, "no scheduler variables are set"),
        ({"JOB_COMPLETION_INDEX": "2"}, None, "needs --shard-count"),
        ({"JOB_COMPLETION_INDEX": "4"}, 4, "is not below --shard-count 4"),
        ({"JOB_COMPLETION_INDEX": "x"}, 4, "is not a whole number"),
        ({"SLURM_ARRAY_TASK_ID": "3"}, None, "without SLURM_ARRAY_TASK_MIN/MAX"),
        (slurm_env([0, 1, 2, 3], 1), 3, "disagrees with the Slurm array's 4 tasks"),
        (slurm_env([1, 3, 7], 3), None, "not on an evenly spaced range"),
    ],
)
def test_what_shard_auto_cannot_use_is_a_usage_error(
    env: dict[str, str], count: int | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        shard_from_scheduler(env, count)


@pytest.mark.parametrize(
    "argv",
    [
        ["invert", "face.png", "--shard", "auto"],
        ["mask", "face.png", "--shard", "auto"],
        ["edit", "face.png", "--smile", "1", "--shard", "auto"],
        ["bench", "--synthetic", "2", "--shard", "auto"],
        ["invert", "face.png", "--shard-count", "4"],  # N comes with --shard K/N itself
    ],
)
def test_without_a_scheduler_the_commands_exit_2(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "face.png").write_bytes(b"")  # never read: the shard is settled first
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]


# --- the README's sbatch scripts -------------------------------------------------------------


def readme_script(name: str) -> str:
    """The fenced block after `<!-- example:NAME` in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- example:{name}\b[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no example:{name} block"
    return m.group(1)


def expanded_commands(
    script: str, cwd: Path, env: dict[str, str], shim_dir: Path
) -> list[list[str]]:
    """The dhr command lines `script` runs under bash in `cwd` with `env` (globs and variables
    expanded by bash itself), one list per dhr call: a `dhr` first on PATH records them."""
    bash = shutil.which("bash")
    assert bash is not None, "bash runs the README's scripts"
    shim = shim_dir / "dhr"
    shim.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['DHR_ARGV'], 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    shim.chmod(0o755)
    record = shim_dir / "argv.jsonl"
    record.unlink(missing_ok=True)
    full = {
        **os.environ,
        **env,
        "PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DHR_ARGV": str(record),
    }
    r = subprocess.run([bash, "-c", script], cwd=cwd, env=full, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    record.unlink()
    return calls


def sbatch_array(script: str) -> list[int]:
    m = re.search(r"^#SBATCH\s+--array[= ](\S+)", script, re.M)
    assert m, "the script is not a job array"
    return array_ids(m.group(1))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A shared folder with photos/ of seven synthetic faces."""
    from PIL import Image

    from dhr_cli.synthetic.benchset import make_sample

    (tmp_path / "photos").mkdir()
    for i in range(7):
        Image.fromarray(make_sample(i, "occluded", 5).image).save(tmp_path / f"photos/p{i}.jpg")
    return tmp_path


@pytest.mark.slow
def test_readme_sbatch_invert_does_every_photo_once(
    photos: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    script = readme_script("slurm-invert")
    assert "--shard auto" in script and "--skip-existing" in script
    ids = sbatch_array(script)
    assert len(ids) > 1
    shim_dir = tmp_path_factory.mktemp("bin")
    monkeypatch.chdir(photos)
    fast = ["--pack", "synthetic", "--method", "encoder", "--json", "-q"]  # the test's own speed
    done: list[str] = []
    for task in ids:
        env = slurm_env(ids, task)
        (argv,) = expanded_commands(script, photos, env, shim_dir)
        assert argv[0] == "invert"
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main([*argv, *fast]) == 0
        done += [rec["input"] for rec in json.loads(capsys.readouterr().out)["done"]]
    photos_all = sorted(f"photos/p{i}.jpg" for i in range(7))
    assert sorted(done) == photos_all  # each photo by exactly one task
    assert sorted(p.name for p in (photos / "out").glob("*.dhr")) == [
        f"p{i}.jpg.dhr" for i in range(7)
    ]
    # a task that runs again (requeued, or the array submitted twice) skips what is done
    for name, value in slurm_env(ids, ids[0]).items():
        monkeypatch.setenv(name, value)
    (argv,) = expanded_commands(script, photos, slurm_env(ids, ids[0]), shim_dir)
    assert main([*argv, *fast]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["done"] == [] and len(rep["skipped"]) == len(shard_items(photos_all, (1, len(ids))))


@pytest.mark.slow
def test_readme_sbatch_bench_then_merge_measure_every_image_once(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    script = readme_script("slurm-bench")
    ids = sbatch_array(script)
    shim_dir = tmp_path_factory.mktemp("bin")
    monkeypatch.chdir(tmp_path)
    # the test's own size: as many scenes as tasks, the fastest method
    small = ["--synthetic", str(len(ids)), "--methods", "encoder", "--no-identity", "-q"]
    for task in ids:
        env = slurm_env(ids, task)
        (argv,) = expanded_commands(script, tmp_path, env, shim_dir)
        assert argv[:1] == ["bench"] and f"part-{task}.json" in argv
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main([*argv, *small]) == 0, capsys.readouterr().err
    parts = sorted(tmp_path.glob("part-*.json"))
    assert [p.name for p in parts] == sorted(f"part-{t}.json" for t in ids)
    (merge,) = expanded_commands(readme_script("slurm-merge"), tmp_path, {}, shim_dir)
    assert merge[:2] == ["bench", "merge"]
    assert main([*merge, "-q"]) == 0, capsys.readouterr().err
    whole = json.loads((tmp_path / "all.json").read_text())
    assert whole["complete"] and sorted(whole["positions"]) == list(range(len(ids)))
    assert (tmp_path / "dhr-bench" / "report.md").is_file()


def test_expanded_commands_split_calls(tmp_path: Path) -> None:
    # the helper itself: two calls; arguments with spaces, empty ones and variables as bash
    # passes them
    script = 'dhr a "b c" "" $X\ndhr d\n'
    calls = expanded_commands(script, tmp_path, {"X": "x y"}, tmp_path)
    assert calls == [["a", "b c", "", "x", "y"], ["d"]]

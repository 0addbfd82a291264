"""Writing files: folders with errors that name the obstacle, files replaced in one step."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dhr_cli.errors import OutputError
from dhr_cli.files import atomic_write, atomic_write_bytes, atomic_write_json, ensure_folder


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_output_folder_blocked_by_a_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile" / "x.png", tmp_path / "afile" / "sub" / "x.png"):
        with pytest.raises(OutputError, match=r"afile is a file, not a folder"):
            ensure_folder(target)
    ensure_folder(tmp_path / "new" / "sub" / "x.png")
    assert (tmp_path / "new" / "sub").is_dir()


def test_atomic_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []


def test_atomic_write_json_is_indented_with_a_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    atomic_write_json(path, {"b": 1, "a": [2.5]}, sort_keys=True)
    assert path.read_text(encoding="utf-8") == '{\n "a": [\n  2.5\n ],\n "b": 1\n}\n'
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, failure) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")
    with pytest.raises(failure), atomic_write(path) as f:
        f.write(b"half of the n")
        raise failure()
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_a_full_disk_is_an_output_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    with (
        pytest.raises(OutputError, match=r"cannot write .*a\.png: No space left"),
        atomic_write(path),
    ):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not path.exists() and leftovers(tmp_path) == []


def test_unwritable_targets(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        atomic_write_bytes(tmp_path / "no" / "a.json", b"x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match="adir: it is a folder"):
        atomic_write_bytes(tmp_path / "adir", b"x")


def test_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640

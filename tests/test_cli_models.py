"""`dhr models list | download | verify | path | import`: output, exit codes, no torch import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dhr_cli import hub
from dhr_cli.cli import main

REQUIRED = [
    "stylegan2-ffhq-1024",
    "e4e-ffhq",
    "lsap-ffhq",
    "retinaface-resnet50",
    "retinaface-mobilenet",
    "bisenet-parsing",
    "arcface-irse50",
    "lpips-alexnet",
    "lpips-vgg16",
    "lpips-alexnet-jax",
    "lpips-vgg16-jax",
    "mtcnn-pnet",
    "mtcnn-rnet",
    "mtcnn-onet",
    "interfacegan-age",
    "interfacegan-smile",
    "interfacegan-pose",
    "ganspace-ffhq-pca",
]


def direction(fixtures_dir: Path, fname: str) -> Path:
    return fixtures_dir / "directions" / "ffhq" / fname


def test_list_json_lists_every_file_without_importing_torch() -> None:
    code = (
        "import sys; from dhr_cli.cli import main; rc = main(['models', 'list', '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = {m["name"]: m for m in data["models"]}
    for name in REQUIRED:
        assert name in rows, name
    for m in rows.values():
        for key in ("url", "size", "sha256", "licence", "pack", "role", "path", "cache_path"):
            assert key in m, key
        if m["source"] == "bundled":  # shipped inside the package: no URL, but a pinned hash
            assert m["sha256"] and m["path"], m["name"]
        else:
            assert m["url"], m["name"]
    assert rows["interfacegan-age"]["sha256"].startswith("50074516")
    assert rows["mtcnn-pnet"]["cached"] == "installed"
    assert rows["e4e-ffhq"]["path"] is None


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for word in ("name", "licence", "stylegan2-ffhq-1024", "mtcnn-onet", "installed"):
        assert word in out
    assert main(["models", "list", "--pack", "nope"]) == 2


def test_list_table_in_a_pipe_is_not_cut_to_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "stylegan2-ffhq-1024 " in out and "installed" in out


def test_download_offline_fails_with_exit_5(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download", "stylegan2-ffhq-1024"]) == 5
    err = capsys.readouterr().err
    assert "stylegan2-ffhq-config-f.pt" in err
    assert "https://github.com/caopulan/GANInverter/releases/download/v0.1/" in err
    assert str(hub.cache_dir()) in err.replace("\n", "")
    assert "dhr models import" in err
    assert "Traceback" not in err


def test_download_offline_flag_beats_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DHR_OFFLINE")
    assert main(["--offline", "models", "download", "e4e-ffhq"]) == 5
    assert "offline" in capsys.readouterr().err


def test_download_unknown_name_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download", "stylegan3"]) == 2


def test_download_from_mirror_into_models_dir(
    http_server,
    fixtures_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DHR_OFFLINE")
    for fname in ("interfacegan_age.pt", "interfacegan_smile.pt"):
        http_server.add(fname, direction(fixtures_dir, fname).read_bytes())
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    folder = tmp_path / "models"
    argv = ["models", "download", "interfacegan-age", "interfacegan-smile", "--models-dir"]
    assert main([*argv, str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and {m["name"] for m in out["models"]} == {
        "interfacegan-age",
        "interfacegan-smile",
    }
    assert (folder / "interfacegan_age.pt").read_bytes() == direction(
        fixtures_dir, "interfacegan_age.pt"
    ).read_bytes()
    assert not (hub.cache_dir() / "interfacegan_age.pt").exists()  # --models-dir wins


def test_import_verify_and_corruption(
    fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "age.pt"  # upstream's own file name
    shutil.copy(direction(fixtures_dir, "interfacegan_age.pt"), src)
    assert main(["models", "import", str(src)]) == 0
    dest = Path(capsys.readouterr().out.strip())
    assert dest == hub.cache_dir() / "interfacegan_age.pt"

    assert main(["models", "verify", "interfacegan-age", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["results"][0]["status"] == "ok"

    dest.write_bytes(b"\0" * dest.stat().st_size)
    assert main(["models", "verify", "interfacegan-age"]) == 5
    captured = capsys.readouterr()
    assert "corrupt" in captured.out and "verification failed" in captured.err

    assert main(["models", "verify", "e4e-ffhq"]) == 5  # named and missing
    assert main(["models", "verify"]) == 5  # the corrupt file still counts
    capsys.readouterr()


def test_import_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "import", str(tmp_path / "missing.pt")]) == 3
    junk = tmp_path / "x.bin"
    junk.write_bytes(b"not a model")
    assert main(["models", "import", str(junk)]) == 4
    assert main(["models", "import", str(junk), "--name", "interfacegan-age"]) == 5
    assert "Traceback" not in capsys.readouterr().err


def test_import_several_files_at_once(
    fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `dhr models import /media/usb/*`: each file verified on its own, a bad one does not stop
    # the others (exit 7 at the end)
    files = [
        str(shutil.copy(direction(fixtures_dir, f"interfacegan_{a}.pt"), tmp_path / f"{a}.pt"))
        for a in ("age", "smile")
    ]
    junk = tmp_path / "notes.txt"
    junk.write_text("not a model")
    assert main(["models", "import", files[0], str(junk), files[1], "--json"]) == 7
    out = json.loads(capsys.readouterr().out)
    assert out["imported"] == [
        str(hub.cache_dir() / "interfacegan_age.pt"),
        str(hub.cache_dir() / "interfacegan_smile.pt"),
    ]
    assert [f["input"] for f in out["failed"]] == [str(junk)]
    assert (hub.cache_dir() / "interfacegan_smile.pt").is_file()
    assert main(["models", "import", *files, "--name", "interfacegan-age"]) == 2
    assert "--name names one file" in capsys.readouterr().err


def test_a_pack_without_its_files_lists_each_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the first `dhr invert` without network: one line per missing file with its URL, the
    # reason once, not a paragraph per file repeating each URL three times
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64)).save(photo)
    assert main(["invert", str(photo), "--pack", "ffhq"]) == 5
    err = capsys.readouterr().err
    files = [hub.get(n) for n in ("stylegan2-ffhq-1024", "e4e-ffhq", "bisenet-parsing")]
    for e in files:
        assert err.count(e.url) == 1
        assert f"{e.filename}  " in err
    assert err.count("not in the cache, and offline mode is on") == 1
    assert "dhr models import FILE..." in err and str(hub.cache_dir()) in err


def test_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "path", "mtcnn-onet"]) == 0
    assert capsys.readouterr().out.strip().endswith("onet.pt")
    assert main(["models", "path", "e4e-ffhq", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "name": "e4e-ffhq",
        "path": str(hub.cache_dir() / "e4e_ffhq_r50_wp_official.pt"),
        "present": False,
    }


def test_a_models_folder_that_is_a_file(
    http_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # DHR_HOME=~/.dhr where ~/.dhr is a plain file: say so, not "hashes unreadable" per lookup
    # or "File exists"
    afile = tmp_path / "models"
    afile.write_text("not a folder")
    assert main(["--models-dir", str(afile), "models", "list"]) == 0
    err = capsys.readouterr().err
    assert "unreadable" not in err
    assert err.count("is not a folder") == 1, err
    monkeypatch.delenv("DHR_OFFLINE")
    monkeypatch.setenv("DHR_MIRROR", http_server.url)
    assert main(["--models-dir", str(afile), "models", "download", "interfacegan-age"]) == 6
    err = capsys.readouterr().err
    assert f"the models folder {afile} is not a folder" in err.replace("\n", ""), err
    assert "File exists" not in err and "Traceback" not in err
